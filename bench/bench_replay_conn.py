"""New connections per second through the lab's real IPVS director: `lvsprobe replay` from
1000 client source addresses vs `wrk` on the same VIP, both in the lab's client namespace
of ONE VM (same vCPUs, same backends, same concurrency, same duration). wrk sends
`Connection: close`, so each of its requests is a new connection (without it wrk measures
keep-alive requests). As many engine processes as wrk has threads (`--processes`, 2 as
`wrk -t2`), each with its share of the concurrency and of the addresses; their rate is taken
over the steady window (flows ended while every process ran, as `bench replay_native` does).
Prints both rates, the ratio (target >= 1.0, issue #17), the load averages, and the
replay's whole-process rate beside it (start-up, plan and flow-log writing count there;
guest Python imports are ~15x slower than the host's).

The host is shared (other VMs run beside this one under TCG), so figures drift by 2x within
minutes: wrk runs before AND after each replay and the round's ratio is taken against their
mean; `--rounds N` repeats replay-then-wrk N times and gives min/median/max.
`--asyncio` also runs the asyncio driver (the one every flow kind uses) for comparison.

    python -m bench replay_conn [--seconds S] [--concurrency N] [--processes P] [--rounds R]
                                [--asyncio]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.steady import steady_rate

CLIENTS = 1000
FIRST_CLIENT = "198.18.16.1"  # the lab's client addresses, CLIENTS of them from here on
VIP = "198.18.1.100"


def _scenario(seconds: float, concurrency: int, first: int, count: int) -> str:
    """A closed loop from `count` of the lab's client addresses, from the `first`-th on."""
    start = ipaddress.ip_address(FIRST_CLIENT) + first
    return (
        "name: bench-new-conns\n"
        f"description: new HTTP connections per second from {count} client addresses\n"
        f"target: {{address: {VIP}, port: 80}}\n"
        f"clients: {{cidr: {start}/20, count: {count}}}\n"
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


def _replay(
    lab: Any, shared: Path, engine: str, seconds: float, concurrency: int, processes: int
) -> float | None:
    """`processes` replay runs at once, each its share of the concurrency and addresses."""
    loads = _loads(lab)
    runs, commands = [], []
    for index in range(processes):
        share = CLIENTS // processes
        scenario = shared / f"bench-{engine}-{index}.yaml"
        scenario.write_text(_scenario(seconds, concurrency // processes, index * share, share))
        runs.append(shared / f"run-{engine}-{index}")
        argv = [sys.executable, "-c", "'from lvsprobe.cli import main; main()'", "replay",
                "run", str(scenario), "--out", str(runs[-1]), "--json", "--no-progress",
                "--engine", engine, "--force"]  # fmt: skip
        # Each process's own exit status in its .err (the shell's `wait` says nothing of it).
        out, err = f"{runs[-1]}.json", f"{runs[-1]}.err"
        commands.append(f'( {" ".join(argv)} > {out} 2> {err}; echo "exit $?" >> {err} ) &')
    started = time.monotonic()
    done = lab.sh("client", "\n".join([*commands, "wait"]), timeout=seconds + 600)
    wall = time.monotonic() - started
    summaries = []
    for run in runs:
        try:
            summaries.append(json.loads(Path(f"{run}.json").read_text()))
        except (OSError, ValueError):
            err = Path(f"{run}.err").read_text()[-2000:] if Path(f"{run}.err").exists() else ""
            print(f"  lvsprobe replay ({engine}) failed (rc {done.returncode}): {err}")
            return None
    ok = sum(summary["ok"] for summary in summaries)
    flows = sum(summary["flows"] for summary in summaries)
    outcomes: dict[str, int] = {}
    for summary in summaries:
        for outcome, count in summary["outcomes"].items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    rate = steady_rate(runs)
    print(f"  lvsprobe replay --engine {engine:7s} {processes} processes, {CLIENTS} addresses: "
          f"{rate:7.1f} new conns/s over the steady window ({ok} ok of {flows}, "
          f"{outcomes}; {loads})", flush=True)  # fmt: skip
    print(f"    whole process (start-up, plan and flow-log write included): "
          f"{ok / wall:.1f} conns/s over {wall:.1f} s")  # fmt: skip
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2, help="engine processes (wrk -t2)")
    parser.add_argument("--rounds", type=int, default=1, help="replay runs, each between two wrk")
    parser.add_argument("--asyncio", action="store_true", help="also run the asyncio driver")
    args = parser.parse_args()
    from lvsprobe.lab.lab import Lab
    from lvsprobe.lab.topology import Topology

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        shared = Path(tmp)
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
            # wrk, then each round a replay and wrk again: each replay's ratio is against
            # the mean of the wrk runs either side of it (the host drifts within minutes)
            wrk_rates = [_wrk(lab, args.seconds, args.concurrency)]
            ratios = []
            for _ in range(args.rounds):
                rate = _replay(lab, shared, "epoll", args.seconds, args.concurrency, args.processes)
                wrk_rates.append(_wrk(lab, args.seconds, args.concurrency))
                if rate is not None:
                    ratios.append(rate / ((wrk_rates[-2] + wrk_rates[-1]) / 2 or float("nan")))
                    print(f"  ratio lvsprobe/wrk this round: {ratios[-1]:.2f}x", flush=True)
            if args.asyncio:
                _replay(lab, shared, "asyncio", args.seconds, args.concurrency, args.processes)
    if not ratios:
        return
    print(f"  wrk {' / '.join(f'{r:.1f}' for r in wrk_rates)} new conns/s in turn; "
          f"concurrency {args.concurrency} both, {args.seconds:.0f} s each")  # fmt: skip
    print(f"  ratio lvsprobe/wrk over {len(ratios)} rounds: min {min(ratios):.2f}x, median "
          f"{statistics.median(ratios):.2f}x, max {max(ratios):.2f}x (target >= 1.0)")  # fmt: skip


if __name__ == "__main__":
    main()
