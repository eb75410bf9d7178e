"""New connections per second through the lab's real IPVS director: `lvsprobe replay` from
1000 client source addresses vs `wrk` on the same VIP, both in the lab's client namespace
of ONE VM (same vCPUs, same backends, same concurrency, same duration). wrk sends
`Connection: close`, so each of its requests is a new connection (without it wrk measures
keep-alive requests). Prints both rates, the ratio (target >= 1.0, issue #17), the load
averages, and the replay's whole-process rate beside its run's (start-up, plan and flow-log
writing count there; guest Python imports are ~15x slower than the host's).

The host is shared (other VMs run beside this one under TCG), so figures drift by 2x within
minutes: wrk runs before AND after the replay and the ratio is taken against their mean.
`--asyncio` also runs the asyncio driver (the one every flow kind uses) for comparison.

    python -m bench replay_conn [--seconds S] [--concurrency N] [--asyncio]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLIENTS = 1000
VIP = "198.18.1.100"


def _scenario(seconds: float, concurrency: int) -> str:
    return (
        "name: bench-new-conns\n"
        "description: new HTTP connections per second from 1000 client addresses\n"
        f"target: {{address: {VIP}, port: 80}}\n"
        f"clients: {{cidr: 198.18.16.1/20, count: {CLIENTS}}}\n"
        "flows: [{kind: http, path: /}]\n"
        f"arrival: {{model: closed, concurrency: {concurrency}}}\n"
        # a count bound far above any rate reachable here: the duration ends the run
        f"bounds: {{max_flows: {int(seconds * 250)}, max_duration: {seconds}s, "
        "flow_timeout: 20s}\n"
    )


def _loads(lab: Any) -> str:
    guest = lab.run(None, ["cat", "/proc/loadavg"]).stdout.split()[:3]
    host = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load avg host {host} / guest {' '.join(guest)}"


def _wrk(lab: Any, seconds: float, concurrency: int) -> float:
    loads = _loads(lab)
    # --timeout: the replay's flow_timeout (wrk's default 2 s drops slow TCG connections)
    argv = ["wrk", "-t2", f"-c{concurrency}", f"-d{int(seconds)}s", "--timeout", "20s",
            "-H", "Connection: close"]  # fmt: skip
    out = lab.run("client", [*argv, f"http://{VIP}/"], timeout=seconds + 120).check().stdout
    match = re.search(r"Requests/sec:\s*([\d.]+)", out)
    rate = float(match.group(1)) if match else 0.0
    total = re.search(r"(\d+) requests in ([\d.]+)s", out)
    errors = re.search(r"Socket errors:[^\n]*|Non-2xx[^\n]*", out)
    shown = f"{total.group(1)} in {total.group(2)} s" if total else "?"
    print(f"  wrk {' '.join(argv[1:6])}, 1 source address: {rate:7.1f} new conns/s "
          f"({shown}{'; ' + errors.group(0) if errors else ''}; {loads})", flush=True)  # fmt: skip
    return rate


def _replay(lab: Any, shared: Path, engine: str, seconds: float) -> float | None:
    loads = _loads(lab)
    out = shared / f"run-{engine}"
    argv = [sys.executable, "-c", "from lvsprobe.cli import main; main()", "replay", "run",
            str(shared / "bench.yaml"), "--out", str(out), "--json", "--no-progress",
            "--engine", engine]  # fmt: skip
    started = time.monotonic()
    replay = lab.run("client", argv, timeout=seconds + 600)
    wall = time.monotonic() - started
    if replay.returncode != 0:
        print(f"  lvsprobe replay ({engine}) failed (rc {replay.returncode}): "
              f"{replay.stderr[-2000:]}")  # fmt: skip
        return None
    summary = json.loads(replay.stdout)
    ok, span = summary["ok"], summary["duration_s"] or 1.0
    rate: float = ok / span
    print(f"  lvsprobe replay --engine {engine:7s} {CLIENTS} addresses: {rate:7.1f} new conns/s "
          f"({ok} ok of {summary['flows']} in {span:.1f} s, {summary['errors']} not ok: "
          f"{summary['outcomes']}; {loads})", flush=True)  # fmt: skip
    print(f"    start-up + plan + flow-log write, not in the rate: {wall - span:.1f} s "
          f"(whole process: {ok / wall:.1f} conns/s)")  # fmt: skip
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--asyncio", action="store_true", help="also run the asyncio driver")
    args = parser.parse_args()
    from lvsprobe.lab.lab import Lab
    from lvsprobe.lab.topology import Topology

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        shared = Path(tmp)
        (shared / "bench.yaml").write_text(_scenario(args.seconds, args.concurrency))
        started = time.monotonic()
        with Lab(Topology(clients=CLIENTS, sync=False), shared_dir=shared) as lab:
            up = time.monotonic() - started
            print(f"  lab up in {up:.0f} s ({lab.accel}, {lab.cpus} vCPUs for wrk and replay "
                  "alike; the backends run in the same VM)")  # fmt: skip
            for flags in (["-S"], []):
                t = time.monotonic()
                lab.run("client", [sys.executable, *flags, "-c", "pass"]).check()
                print(f"  guest python {' '.join(flags) or '(site)'} start: "
                      f"{time.monotonic() - t:.1f} s")  # fmt: skip
            before = _wrk(lab, args.seconds, args.concurrency)
            rate = _replay(lab, shared, "epoll", args.seconds)
            after = _wrk(lab, args.seconds, args.concurrency)
            if args.asyncio:
                _replay(lab, shared, "asyncio", args.seconds)
    if rate is None:
        return
    wrk_rate = (before + after) / 2
    ratio = rate / wrk_rate if wrk_rate else float("nan")
    print(f"  wrk mean {wrk_rate:.1f} new conns/s (before {before:.1f}, after {after:.1f}); "
          f"concurrency {args.concurrency} both, {args.seconds:.0f} s each")  # fmt: skip
    print(f"  ratio lvsprobe/wrk: {ratio:.2f}x (target >= 1.0)")


if __name__ == "__main__":
    main()
