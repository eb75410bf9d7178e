"""`lvsprobe status --json` against the text view (`--exact --stats`, and the other text
views on request), in process, over a simulated 6.1 kernel (the lab's status step, issue
#14, without the VM).

Each view at each size runs in a fresh process: one netlink read of generated services of
10 real servers (`SimulatedKernel`, as bench_netlink), then the view written to a file the
way the command writes it, `--runs` times. Figures, each the best of the runs: the read
(the same for both views), the render, their sum (what the command spends past its
start-up), the write(2) calls of a render (each a round trip on the lab's 9p share, where
its outputs go), the peak RSS of the process (VmHWM, as the lab measures the command's)
and what the render adds to it, and per view the ratio of the sum and of the render to
the text view's. The collector stays on, as the command runs. `--profile VIEW` shows
where a render's time goes (cProfile). `--views` picks the views: `text` (`--exact
--stats`, the lab's), `json`, and the other text views `list` (`-Ln`), `stats` (`--stats`,
in K/M/G units), `rate`, `thresholds`, `persistent-conn`.

    python -m bench status -- [--sizes 20000,100000] [--runs 5] [--profile json]
        [--views text,json,list,stats]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from bench.bench_netlink import reset_peak, vm_mb
from lvsprobe.cli.status import write_json, write_text
from lvsprobe.ipvsadm_view import View
from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.model import Snapshot

# Each text view's flags: `text` is the lab's `status --exact --stats`.
TEXT_VIEWS = {
    "text": (View.STATS, True),
    "list": (View.LIST, False),
    "stats": (View.STATS, False),
    "rate": (View.RATE, False),
    "thresholds": (View.THRESHOLDS, False),
    "persistent-conn": (View.PERSISTENT_CONN, False),
}
VIEWS = (*TEXT_VIEWS, "json")


def _write_calls() -> int:
    """write(2) calls of this process so far (/proc/self/io syscw)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    return 0


def _read(kernel: SimulatedKernel) -> Snapshot:
    services = IPVSNetlink.connect(kernel).services()
    return Snapshot(loaded=True, via="netlink", version="1.2.1", services=services)


def _writer(view: str) -> Callable[[Snapshot, TextIO], None]:
    """The command's own writer of a view: `status --json` or a text view."""
    if view == "json":
        return write_json
    shown, exact = TEXT_VIEWS[view]
    return lambda snap, out: write_text(snap, shown, exact, (), out)


def child(view: str, size: int, runs: int) -> dict[str, float]:
    """One view at one size, in this (fresh) process."""
    kernel = SimulatedKernel(generated_services(size // 10))
    write = _writer(view)
    read_s = render_s = float("inf")
    render_rise_mb = 0.0
    writes = 0
    with tempfile.TemporaryFile("w+", encoding="utf-8") as sink:
        for _ in range(runs):
            sink.seek(0)
            sink.truncate()
            started = time.perf_counter()
            snap = _read(kernel)
            read_s = min(read_s, time.perf_counter() - started)
            rss_mb = vm_mb("VmRSS")
            reset_peak()
            writes_before = _write_calls()
            started = time.perf_counter()
            write(snap, sink)
            render_s = min(render_s, time.perf_counter() - started)
            writes = _write_calls() - writes_before
            render_rise_mb = max(render_rise_mb, vm_mb("VmHWM") - rss_mb)
            del snap
    return {
        "read_s": read_s,
        "render_s": render_s,
        "writes": writes,
        "render_rise_mb": render_rise_mb,
        # the process's peak: the simulated kernel's replies are held too (a real one's are not)
        "peak_rss_mb": vm_mb("VmHWM"),
    }


def profile(view: str, size: int) -> None:
    """Where one render's time goes."""
    snap = _read(SimulatedKernel(generated_services(size // 10)))
    write = _writer(view)
    with open("/dev/null", "w", encoding="utf-8") as sink:
        write(snap, sink)
        prof = cProfile.Profile()
        prof.enable()
        write(snap, sink)
        prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(16)


def _run_child(view: str, size: int, runs: int) -> dict[str, float]:
    argv = [sys.executable, "-m", "bench.bench_status", "--runs", str(runs)]
    out = subprocess.run(
        [*argv, "--child", view, str(size)], check=True, capture_output=True, text=True
    ).stdout
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="20000,100000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", choices=VIEWS)
    parser.add_argument("--views", default="text,json", help="of " + ",".join(VIEWS))
    parser.add_argument("--child", nargs=2, metavar=("VIEW", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.sizes.split(",")]
    views = ["text", *(view for view in args.views.split(",") if view != "text")]
    unknown = set(views) - set(VIEWS)
    if unknown:
        parser.error(f"--views: no view {', '.join(sorted(unknown))}; have {', '.join(VIEWS)}")
    if args.child:
        view, size = args.child
        print(json.dumps(child(view, int(size), args.runs)))
        return
    if args.profile:
        profile(args.profile, sizes[0])
        return
    heads = (
        "real servers",
        "view",
        "read s",
        "render s",
        "sum s",
        "writes",
        "peak MB",
        "render+ MB",
    )
    print(" ".join(f"{head:>12s}" for head in heads), "  sum ratio  render ratio")
    for size in sizes:
        figures = {view: _run_child(view, size, args.runs) for view in views}
        text = figures["text"]
        for view, fig in figures.items():
            total_s = fig["read_s"] + fig["render_s"]
            text_total_s = text["read_s"] + text["render_s"]
            print(
                f"{size:12d} {view:>12s} {fig['read_s']:12.3f} {fig['render_s']:12.3f} "
                f"{total_s:12.3f} {fig['writes']:12.0f} {fig['peak_rss_mb']:12.1f} "
                f"{fig['render_rise_mb']:12.1f} "
                f"{total_s / text_total_s:10.2f}x {fig['render_s'] / text['render_s']:12.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    main()
