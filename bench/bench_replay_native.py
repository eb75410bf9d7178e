"""On this machine, over loopback: new connections/s of the epoll engine against `wrk`
(`Connection: close`: each request a new connection) on the same nginx, with as many engine
processes as wrk threads and the same total concurrency; then where the engine's time goes
(cProfile of one engine process). A ratio, not a timed test: both share the host's cores
with nginx, so the figure is relative.

    python -m bench replay_native [--seconds S] [--threads N] [--concurrency C] [--no-profile]

Needs nginx (Debian's nginx-light) and wrk; traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import json
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lvsprobe.dashboards.prometheus import free_port

NGINX_CONF = """daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;
events {{ worker_connections 8192; }}
http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};
  fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port} backlog=4096; location / {{
    add_header X-Backend rs1; return 200 "ok\\n"; }} }} }}
"""
CLI = [sys.executable, "-c", "from lvsprobe.cli import main; main()"]


def _scenario(port: int, seconds: float, concurrency: int, worker: int) -> str:
    """A closed loop from 250 client addresses of its own (127.0.<worker+1>.x)."""
    return (
        f"name: native-{worker}\ntarget: {{address: 127.0.0.1, port: {port}}}\n"
        f"clients: {{cidr: 127.0.{worker + 1}.1/24, count: 250}}\n"
        "flows: [{kind: http, path: /}]\n"
        f"arrival: {{model: closed, concurrency: {concurrency}}}\n"
        f"bounds: {{max_flows: {int(seconds * 40_000)}, max_duration: {seconds}s}}\n"
    )


def _wrk(port: int, seconds: float, threads: int, concurrency: int) -> float:
    argv = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{int(seconds)}s",
            "-H", "Connection: close", f"http://127.0.0.1:{port}/"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Socket errors:[^\n]*", out)
    print(f"  wrk -t{threads} -c{concurrency}: {rate:9.1f} new conns/s"
          f"{'; ' + errors.group(0) if errors else ''}", flush=True)  # fmt: skip
    return rate


def _replay(tmp: Path, port: int, seconds: float, threads: int, concurrency: int,
            profile: bool) -> float:  # fmt: skip
    procs = []
    for worker in range(threads):
        path = tmp / f"s{worker}.yaml"
        path.write_text(_scenario(port, seconds, concurrency // threads, worker))
        prefix = [sys.executable, "-m", "cProfile", "-o", str(tmp / "engine.prof"), "-m",
                  "lvsprobe"] if profile and worker == 0 else CLI  # fmt: skip
        argv = [*prefix, "replay", "run", str(path), "--out", str(tmp / f"run{worker}"),
                "--json", "--no-progress", "--force", "--engine", "epoll"]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    total = 0.0
    for worker, proc in enumerate(procs):
        out, _ = proc.communicate(timeout=seconds + 600)
        summary = json.loads(out)
        rate = summary["ok"] / (summary["duration_s"] or 1.0)
        total += rate
        mark = ", profiled" if profile and not worker else ""
        print(f"    engine {worker}: {rate:9.1f} new conns/s ({summary['ok']} ok, "
              f"{summary['errors']} not ok{mark})")  # fmt: skip
    label = "profiled " if profile else ""
    print(f"  lvsprobe replay, {threads} {label}epoll processes: {total:9.1f} new conns/s",
          flush=True)  # fmt: skip
    return total


def _where(tmp: Path) -> None:
    """The profiled engine process: its run loop's time split into the socket and epoll
    calls (the kernel's work, and what wrk pays too) and Python around them; the rest of
    the process (start-up, plan, summary and flow-log writing) apart."""
    stats = pstats.Stats(str(tmp / "engine.prof"))
    rows = stats.stats  # type: ignore[attr-defined]
    process = max(v[3] for v in rows.values())
    loop = next(v[3] for k, v in rows.items() if k[0].endswith("fastloop.py") and k[2] == "run")
    calls = {
        k[2]: v[2] for k, v in rows.items()
        if k[0] == "~" and ("socket" in k[2] or "epoll" in k[2])
    }  # fmt: skip
    kernel = sum(calls.values())
    print(f"  where the profiled engine's time goes ({process:.1f} s in the process):")
    print(f"    run loop {loop / process:6.1%}: socket/epoll calls {kernel / process:6.1%}, "
          f"Python around them {(loop - kernel) / process:6.1%}")  # fmt: skip
    for name, seconds in sorted(calls.items(), key=lambda kv: -kv[1])[:6]:
        print(f"      {seconds / process:6.1%}  {name}")
    engine = sorted(((v[2], k[2]) for k, v in rows.items() if "replay/" in k[0]), reverse=True)
    print("    Python's own time, top engine functions: " + ", ".join(
        f"{name} {seconds / process:.1%}" for seconds, name in engine[:6]))  # fmt: skip
    print(f"    outside the loop (start-up, plan, flow log, summary): {1 - loop / process:6.1%}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()) or not shutil.which("wrk"):
        print("  nginx or wrk missing (Debian's nginx-light and wrk): skipped")
        return
    with tempfile.TemporaryDirectory(prefix="bench-native-") as name:
        tmp = Path(name)
        port = free_port()
        (tmp / "nginx.conf").write_text(NGINX_CONF.format(tmp=tmp, port=port))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        conf, log = str(tmp / "nginx.conf"), str(tmp / "error.log")
        nginx = subprocess.Popen([binary, "-c", conf, "-e", log])
        try:
            time.sleep(0.5)
            before = _wrk(port, args.seconds, args.threads, args.concurrency)
            ours = _replay(tmp, port, args.seconds, args.threads, args.concurrency, False)
            after = _wrk(port, args.seconds, args.threads, args.concurrency)
            if not args.no_profile:
                _replay(tmp, port, args.seconds, args.threads, args.concurrency, True)
                _where(tmp)
        finally:
            nginx.terminate()
            nginx.wait(timeout=30)
    wrk_rate = (before + after) / 2
    print(f"  ratio lvsprobe/wrk: {ours / wrk_rate:.2f}x ({ours:.0f} vs {wrk_rate:.0f} new "
          f"conns/s; wrk before {before:.0f}, after {after:.0f}; target >= 1.0)")  # fmt: skip


if __name__ == "__main__":
    main()
