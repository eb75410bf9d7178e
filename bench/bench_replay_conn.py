"""New connections per second through the lab's real IPVS director: `lvsprobe replay` from
1000 client source addresses vs `wrk` (one source address, `Connection: close` so every
request is a new connection) on the same VIP, both in the lab's client namespace under TCG.
Prints both rates and the ratio (target >= 0.5).

    python -m bench replay_conn [--seconds S] [--concurrency N]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

CLIENTS = 1000


def _scenario(seconds: float, concurrency: int) -> str:
    return (
        "name: bench-new-conns\n"
        "description: new HTTP connections per second from 1000 client addresses\n"
        "target: {address: 198.18.1.100, port: 80}\n"
        f"clients: {{cidr: 198.18.16.1/20, count: {CLIENTS}}}\n"
        "flows: [{kind: http, path: /}]\n"
        f"arrival: {{model: closed, concurrency: {concurrency}}}\n"
        f"bounds: {{max_flows: 1000000, max_duration: {seconds}s, flow_timeout: 20s}}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    from lvsprobe.lab.lab import Lab
    from lvsprobe.lab.topology import Topology

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        shared = Path(tmp)
        (shared / "bench.yaml").write_text(_scenario(args.seconds, args.concurrency))
        started = time.monotonic()
        with Lab(Topology(clients=CLIENTS, sync=False), shared_dir=shared) as lab:
            print(f"  lab up in {time.monotonic() - started:.0f} s ({lab.accel})", flush=True)
            wrk = lab.run(
                "client",
                [
                    "wrk",
                    "-t2",
                    f"-c{args.concurrency}",
                    f"-d{int(args.seconds)}s",
                    "-H",
                    "Connection: close",
                    "http://198.18.1.100/",
                ],
                timeout=args.seconds + 120,
            ).check()
            match = re.search(r"Requests/sec:\s*([\d.]+)", wrk.stdout)
            wrk_rate = float(match.group(1)) if match else 0.0
            replay = lab.run(
                "client",
                [
                    sys.executable,
                    "-c",
                    "from lvsprobe.cli import main; main()",
                    "replay",
                    "run",
                    str(shared / "bench.yaml"),
                    "--out",
                    str(shared / "run"),
                    "--json",
                    "--no-progress",
                ],
                timeout=args.seconds + 600,
            )
            if replay.returncode != 0:
                print(f"  lvsprobe replay failed (rc {replay.returncode}): {replay.stderr[-2000:]}")
                return
            summary = json.loads(replay.stdout)
        ok, span = summary["ok"], summary["duration_s"] or 1.0
        replay_rate = ok / span
        print(f"  wrk (1 source address):          {wrk_rate:9.1f} new conns/s")
        print(
            f"  lvsprobe replay ({CLIENTS} addresses): {replay_rate:9.1f} new conns/s "
            f"({ok} ok of {summary['flows']}, {summary['errors']} errors)"
        )
        ratio = replay_rate / wrk_rate if wrk_rate else float("nan")
        print(f"  ratio lvsprobe/wrk: {ratio:.2f}x (target >= 0.5)")


if __name__ == "__main__":
    main()
