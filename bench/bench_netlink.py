"""The generic-netlink reader at kube-proxy scale, in process, over a simulated 6.1 kernel.

No ip_vs is loaded on this host, so `SimulatedKernel` frames the replies as 6.1 does (dump
skbs of up to ~32 KiB, NLMSG_DONE on its own) from generated services of 10 real servers
(IPv4, with the thresholds, tunnel, STATS and STATS64 attributes 6.1 sends). Figures per
size, each the best of `--runs`: a full read (`IPVSNetlink.services()`; "kernel s" is the
part of it spent in the simulated kernel, which a real one spends in C) and a scrape of
those services by a warm Scraper, as a running sidecar scrapes (the exporter's default
families, rendered chunk by chunk as the server sends them); the peak RSS each step adds
(VmHWM reset through /proc/self/clear_refs, each step in a fresh process) and its CPU time;
for a read also the peak Python heap it adds (tracemalloc, one more read traced after the
timed ones) and what of it the services kept: the difference is the read's transient
memory (datagrams, decode batches, joins); and "reader s", the best CPU time of a read whose
replies are the datagrams of an earlier one handed back from a list (no kernel at all: our
Python alone, the part a real kernel does not change). `--profile` shows where that time
goes (a replayed read, the garbage collector off as a scrape runs it).

    python -m bench netlink -- [--sizes 20000,100000] [--runs 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.model import Service, Snapshot

_WIDTHS = (12, 7, 8, 8, 9, 9, 7, 9, 10, 9, 9)


def vm_mb(field: str) -> float:
    """A /proc/self/status size field (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux 4.0+)


def _read(kernel: SimulatedKernel) -> tuple[Service, ...]:
    return IPVSNetlink.connect(kernel).services()


class _Replayed:
    """A transport answering with the datagrams a kernel sent for one earlier read (a read
    makes the same requests each time: one connect, one dump per service)."""

    def __init__(self, datagrams: list[bytes]) -> None:
        self.recv = iter(datagrams).__next__

    def send(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _Recorded:
    """The simulated kernel, keeping every datagram it sends."""

    def __init__(self, kernel: SimulatedKernel) -> None:
        self.kernel = kernel
        self.datagrams: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.kernel.send(data)

    def recv(self) -> bytes:
        datagram = self.kernel.recv()
        self.datagrams.append(datagram)
        return datagram

    def close(self) -> None:
        pass


def _reader_seconds(kernel: SimulatedKernel, runs: int) -> float:
    """The best CPU time of a read over replayed datagrams, the collector off (as a scrape)."""
    recorded = _Recorded(kernel)
    IPVSNetlink.connect(recorded).services()
    best = float("inf")
    gc.disable()
    try:
        for _ in range(max(runs, 5)):
            started = time.process_time()
            services = IPVSNetlink.connect(_Replayed(recorded.datagrams)).services()
            best = min(best, time.process_time() - started)
            del services
    finally:
        gc.enable()
    return best


class _Timed(SimulatedKernel):
    """The simulated kernel, adding up the time spent in it."""

    spent_s = 0.0

    def send(self, data: bytes) -> None:
        started = time.perf_counter()
        super().send(data)
        self.spent_s += time.perf_counter() - started

    def recv(self) -> bytes:
        started = time.perf_counter()
        datagram = super().recv()
        self.spent_s += time.perf_counter() - started
        return datagram


def _scraper(services: tuple[Service, ...]) -> Scraper:
    """The sidecar's Scraper over these services, warmed by one scrape: a running exporter's
    scrapes after its first reuse the label blocks it keeps."""
    snap = Snapshot(loaded=True, via="netlink", version="1.2.1", services=services)
    scraper = Scraper(ExportOptions(), read=lambda target, **kw: snap, build=("0", "3"))
    _scrape(scraper)
    return scraper


def _scrape(scraper: Scraper) -> int:
    """A scrape as the server sends it (chunk by chunk); the body's size."""
    return sum(map(len, scraper.stream()))


def child(step: str, size: int, runs: int) -> dict[str, float]:
    """One step at one size, in this (fresh) process: best time and the peak RSS it adds."""
    kernel = _Timed(generated_services(size // 10))
    services = _read(kernel)  # warm: the simulated kernel's skbs cut once, kept out of peak+
    scraper = _scraper(services) if step == "scrape" else None
    services = ()
    kernel.sent = kernel.received = 0
    gc.collect()
    reset_peak()
    base = vm_mb("VmRSS")
    best, cpu_s, kernel_s = float("inf"), 0.0, 0.0
    for _ in range(runs):
        kernel.spent_s = 0.0
        started, cpu_started = time.perf_counter(), time.process_time()
        result = _read(kernel) if scraper is None else _scrape(scraper)
        seconds = time.perf_counter() - started
        if seconds < best:
            best, kernel_s = seconds, kernel.spent_s
            cpu_s = time.process_time() - cpu_started
        del result
    figures = {
        "seconds": best,
        "cpu_seconds": cpu_s,
        "kernel_seconds": kernel_s if step == "read" else 0.0,
        "peak_rise_mb": vm_mb("VmHWM") - base,
        "syscalls": (kernel.sent + kernel.received) / runs if step == "read" else 0,
        "traced_peak_mb": 0.0,
        "traced_kept_mb": 0.0,
        "reader_seconds": 0.0,
    }
    if step == "read":
        figures["traced_peak_mb"], figures["traced_kept_mb"] = _traced_read(kernel)
        figures["reader_seconds"] = _reader_seconds(kernel, runs)
    return figures


def _traced_read(kernel: SimulatedKernel) -> tuple[float, float]:
    """The Python heap a read adds at its peak, and what its services keep of it (MB)."""
    gc.collect()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    services = _read(kernel)
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del services
    return (peak - base) / 2**20, (kept - base) / 2**20


def profile(size: int) -> None:
    """Where a read's time goes, our Python alone: a read over replayed datagrams (the
    simulated kernel's own work, which a real kernel does in C, left out)."""
    recorded = _Recorded(SimulatedKernel(generated_services(size // 10)))
    IPVSNetlink.connect(recorded).services()
    IPVSNetlink.connect(_Replayed(recorded.datagrams)).services()  # as in a warm scrape
    replayed = _Replayed(recorded.datagrams)
    prof = cProfile.Profile()
    gc.disable()  # as a scrape runs (else its pauses are charged to whatever allocates)
    prof.enable()
    IPVSNetlink.connect(replayed).services()
    prof.disable()
    gc.enable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(14)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        step, size = args.child
        print(json.dumps(child(step, int(size), args.runs)))
        return
    sizes = [int(part) for part in args.sizes.split(",")]
    if args.profile:
        profile(sizes[0])
        return
    heads = (
        "real servers",
        "step",
        "best s",
        "cpu s",
        "kernel s",
        "reader s",
        "us/rs",
        "peak+ MB",
        "syscalls",
        "traced MB",
        "kept MB",
    )
    print(" ".join(f"{head:>{width}s}" for head, width in zip(heads, _WIDTHS, strict=True)))
    for size in sizes:
        for step in ("read", "scrape"):
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.bench_netlink",
                    "--runs",
                    str(args.runs),
                    "--child",
                    step,
                    str(size),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            fig = json.loads(out.strip().splitlines()[-1])
            print(
                f"{size:12d} {step:>7s} {fig['seconds']:8.3f} {fig['cpu_seconds']:8.3f} "
                f"{fig['kernel_seconds']:9.3f} {fig['reader_seconds']:9.3f} "
                f"{fig['seconds'] / size * 1e6:7.2f} "
                f"{fig['peak_rise_mb']:9.1f} {fig['syscalls']:10.0f} "
                f"{fig['traced_peak_mb']:9.1f} {fig['traced_kept_mb']:9.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
