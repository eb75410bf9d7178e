"""`lvsprobe export` under hostile clients, on loopback: slow readers and slowloris sockets.

Two attacks on one exporter process serving a generated /proc tree (300 services x 100 real
servers, a ~15 MB /metrics body), each while a normal client scrapes once a second:

- slow readers: `--readers` clients send `GET /metrics` (no gzip) and never read the answer;
- slowloris: `--sockets` connections, a third silent, a third with half a request line, a third
  sending one header byte every few seconds.

Figures: the normal client's scrape latencies and failures, the exporter's peak RSS (VmRSS
sampled twice a second) and thread count, and how many attacking sockets the exporter still
holds open at the end. Every loop is bounded in count and time; traffic stays on 127.0.0.1.

    python -m bench http_attack [-- --seconds 40 --readers 40 --sockets 2000 -- EXPORTER FLAGS]
    python -m bench.bench_http_attack --seconds 40 --web.write-timeout 5s
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.bench_export import _free_port, _lvsprobe, write_tree

HOST = "127.0.0.1"


@dataclass
class Watch:
    """The exporter's RSS and threads, and a normal client's scrapes, sampled in the background."""

    pid: int
    url: str
    rss_mb: list[float] = field(default_factory=list)
    threads: list[int] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)  # during the attack
    baseline_s: list[float] = field(default_factory=list)  # before it
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    attacking: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        while not self.stop.wait(0.5):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{self.pid}/status").read_text().splitlines()
                for line in status:
                    if line.startswith("VmRSS:"):
                        self.rss_mb.append(int(line.split()[1]) / 1024)
                    elif line.startswith("Threads:"):
                        self.threads.append(int(line.split()[1]))

    def scrape(self, timeout_s: float) -> None:
        """A well-behaved Prometheus: one scrape a second, gzip, a scrape timeout."""
        while not self.stop.is_set():
            started = time.perf_counter()
            request = urllib.request.Request(self.url, headers={"Accept-Encoding": "gzip"})
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as resp:
                    resp.read()
                elapsed = time.perf_counter() - started
                (self.latencies_s if self.attacking.is_set() else self.baseline_s).append(elapsed)
            except OSError as exc:
                self.failures.append(f"{time.perf_counter() - started:.1f} s: {exc}")
            self.stop.wait(max(0.0, 1.0 - (time.perf_counter() - started)))

    @contextlib.contextmanager
    def running(self, timeout_s: float) -> Iterator[Watch]:
        threads = [
            threading.Thread(target=self.sample, daemon=True),
            threading.Thread(target=self.scrape, args=(timeout_s,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(timeout=timeout_s + 5)

    def report(self, label: str) -> None:
        lat = sorted(self.latencies_s)
        if lat:
            p50, worst = statistics.median(lat), lat[-1]
            scrapes = f"{len(lat)} ok, median {p50:.2f} s, max {worst:.2f} s"
        else:
            scrapes = "none ok"
        base = statistics.median(self.baseline_s) if self.baseline_s else float("nan")
        print(
            f"{label}: normal scrapes before the attack median {base:.2f} s; during it "
            f"{scrapes}, {len(self.failures)} failed; "
            f"exporter RSS peak {max(self.rss_mb, default=0):.0f} MB "
            f"(first {self.rss_mb[0] if self.rss_mb else 0:.0f} MB), "
            f"threads peak {max(self.threads, default=0)}"
        )
        for failure in self.failures[:5]:
            print(f"  failed after {failure}")


def _still_open(socks: list[socket.socket]) -> int:
    """How many of these sockets the exporter has not closed (no EOF or reset pending)."""
    open_count = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            while sock.recv(1 << 16):  # drain what was sent; EOF ends the loop
                pass
        except BlockingIOError:
            open_count += 1  # nothing more to read and no EOF: still open
        except OSError:
            pass  # reset by the exporter
    return open_count


def _connect(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        try:
            sock = socket.create_connection((HOST, port), timeout=5)
        except OSError:
            break
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        socks.append(sock)
    return socks


def slow_readers(port: int, watch: Watch, readers: int, seconds: float) -> None:
    """`readers` clients ask for /metrics and never read; hold them for `seconds`."""
    with watch.running(timeout_s=20):
        time.sleep(5)  # baseline scrapes first
        watch.attacking.set()
        socks = _connect(port, readers)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n")
        time.sleep(seconds)
        still = _still_open(socks)
    for sock in socks:
        sock.close()
    watch.report(f"slow readers ({len(socks)} connected)")
    print(f"  attacking sockets still open after {seconds:.0f} s: {still}")


def slowloris(port: int, watch: Watch, sockets: int, seconds: float) -> None:
    """`sockets` connections that never finish a request; hold them for `seconds`."""
    with watch.running(timeout_s=20):
        time.sleep(5)  # baseline scrapes first
        watch.attacking.set()
        socks = _connect(port, sockets)
        silent, partial, dribble = socks[0::3], socks[1::3], socks[2::3]
        for sock in partial + dribble:
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /metrics HTT")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(3.0, max(0.0, deadline - time.monotonic())))
            for sock in dribble:
                with contextlib.suppress(OSError):
                    sock.send(b"P")
        still = (_still_open(silent), _still_open(partial), _still_open(dribble))
    for sock in socks:
        sock.close()
    watch.report(f"slowloris ({len(socks)} connected)")
    print(
        f"  attacking sockets still open after {seconds:.0f} s: silent {still[0]}, "
        f"partial line {still[1]}, dribbling {still[2]}"
    )


def _start(tree: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        _lvsprobe(tree, port, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=30) as resp:
                size = len(resp.read())
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("the exporter did not start") from None
            time.sleep(0.2)
    print(f"exporter pid {proc.pid} on :{port}, /metrics body {size / 1e6:.1f} MB", flush=True)
    return proc, port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--backends", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=40, help="how long each attack lasts")
    parser.add_argument("--readers", type=int, default=40)
    parser.add_argument("--sockets", type=int, default=2000)
    args, extra = parser.parse_known_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="lvsprobe-bench-http-"))
    try:
        tree = tmp / "proc"
        write_tree(tree, args.services, args.backends, conns=10_000)
        for attack in (slow_readers, slowloris):
            proc, port = _start(tree, extra)
            try:
                watch = Watch(proc.pid, f"http://{HOST}:{port}/metrics")
                count = args.readers if attack is slow_readers else args.sockets
                attack(port, watch, count, args.seconds)
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
