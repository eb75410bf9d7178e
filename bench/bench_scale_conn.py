"""New connections per second on one host with `replay run --workers local:1` and `local:2`
(a Dask LocalCluster of one and two worker processes) against a loopback HTTP server, next to
`wrk -t1` and `wrk -t2` on the same server, same concurrency, same duration. wrk sends
`Connection: close`, so each of its requests is a new connection, as each replay flow is.

The server is a small prefork epoll loop (`--server-procs` processes sharing one listening
socket; it answers every request with a 200 and closes). Everything shares this host's
CPUs: the server, the clients, the kernel's loopback, and whatever else runs here (load
averages are printed with each figure). wrk runs before AND after the replays; the ratios
are taken against the mean of the two. Targets: local:2 >= 1.8x local:1, >= 1.0x wrk -t2.

    python -m bench scale_conn [--seconds S] [--concurrency N] [--server-procs P]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nX-Backend: rs1\r\nContent-Length: 4\r\nConnection: close\r\n\r\nrs1\n"
)
ROOT = Path(__file__).resolve().parents[1]


def _serve_forever(listener: socket.socket) -> None:
    """One server process: accept, read a request head, answer, close."""
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, tuple[socket.socket, bytes]] = {}
    while True:
        for fd, _mask in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conns[conn.fileno()] = (conn, b"")
                    poller.register(conn.fileno(), select.EPOLLIN)
                continue
            conn, head = conns[fd]
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            head += data
            if data and b"\r\n\r\n" not in head:
                conns[fd] = (conn, head)
                continue
            if data:
                with contextlib.suppress(OSError):  # a client gone: nothing to answer
                    conn.send(RESPONSE)
            poller.unregister(fd)
            del conns[fd]
            conn.close()


def serve(procs: int) -> None:
    """Listen on an ephemeral loopback port (printed), fork `procs` server processes."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    children = []
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            _serve_forever(listener)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


def _loads() -> str:
    return "load avg " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _wrk(port: int, threads: int, seconds: float, concurrency: int) -> float:
    loads = _loads()
    argv = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{int(seconds)}s", "--timeout", "5s",
            "-H", "Connection: close", f"http://127.0.0.1:{port}/"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    rate = float(match.group(1)) if match else 0.0
    errors = re.search(r"Socket errors:[^\n]*", out)
    shown = errors.group(0) if errors else "no socket errors"
    print(f"  wrk -t{threads} -c{concurrency}:            {rate:8.0f} new conns/s "
          f"({shown}; {loads})", flush=True)  # fmt: skip
    return rate


def _replay(tmp: Path, scenario: Path, workers: str) -> float:
    loads = _loads()
    out = tmp / f"run-{workers.replace(':', '')}"
    argv = [sys.executable, "-m", "lvsprobe", "replay", "run", str(scenario), "--out", str(out),
            "--json", "--no-progress", "--workers", workers, "--force"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        print(f"  replay --workers {workers} failed ({proc.returncode}): {proc.stderr[-1500:]}")
        return 0.0
    summary = json.loads(proc.stdout)
    span = summary["duration_s"] or 1.0
    rate: float = summary["ok"] / span
    skew = summary["scale"]["start_skew_s"]
    print(f"  replay --workers {workers:8s}   {rate:8.0f} new conns/s ({summary['ok']} ok of "
          f"{summary['flows']} in {span:.1f} s; start skew {skew * 1000:.1f} ms; "
          f"{wall - span:.1f} s of cluster start-up and merge, not in the rate; {loads})",
          flush=True)  # fmt: skip
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server-procs", type=int, default=2)
    args = parser.parse_args()
    code = f"from bench.bench_scale_conn import serve; serve({args.server_procs})"
    server = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            scenario = Path(tmp) / "scale.yaml"
            scenario.write_text(
                "name: bench-scale\n"
                f"target: {{address: 127.0.0.1, port: {port}}}\n"
                "clients: {cidr: 127.1.0.1/16, count: 256}\n"
                "flows: [{kind: http, path: /}]\n"
                f"arrival: {{model: closed, concurrency: {args.concurrency}}}\n"
                f"bounds: {{max_flows: 1000000, max_duration: {args.seconds}s, "
                "flow_timeout: 5s}\n"
            )
            print(f"  {os.cpu_count()} CPUs; server: {args.server_procs} processes on "
                  f"127.0.0.1:{port}; concurrency {args.concurrency}, "
                  f"{args.seconds:g} s each")  # fmt: skip
            wrk = {t: [_wrk(port, t, args.seconds, args.concurrency)] for t in (1, 2)}
            one = _replay(Path(tmp), scenario, "local:1")
            two = _replay(Path(tmp), scenario, "local:2")
            for t in (1, 2):
                wrk[t].append(_wrk(port, t, args.seconds, args.concurrency))
    finally:
        os.killpg(server.pid, 9)
        server.wait()
    mean = {t: sum(rates) / len(rates) for t, rates in wrk.items()}
    print(f"  wrk mean: -t1 {mean[1]:.0f}, -t2 {mean[2]:.0f} new conns/s")
    if one:
        print(f"  local:2 / local:1 = {two / one:.2f}x (target >= 1.8)")
    if mean[2]:
        print(f"  local:2 / wrk -t2 = {two / mean[2]:.2f}x (target >= 1.0)")
    if mean[1]:
        print(f"  local:1 / wrk -t1 = {one / mean[1]:.2f}x")


if __name__ == "__main__":
    main()
