"""Snapshots taken inside the guest, with ipvsadm's views of the same moment.

One guest Python start per call (2-3 s under TCG), so one call returns everything a test
compares: the netlink snapshot, the procfs snapshot and any number of ipvsadm outputs.

Guest side:  python -m lvsprobe.lab.snapshot [--procfs] [--conns MODE] [--ipvsadm "-Ln --stats"]...
Host side:   guest_snapshot(lab, "lvs1") / guest_views(lab, "lvs1", ipvsadm=[...])
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lvsprobe.errors import LabError

if TYPE_CHECKING:
    from lvsprobe.lab.lab import Lab
    from lvsprobe.model import Snapshot


@dataclass(frozen=True, slots=True)
class GuestViews:
    """What one guest call saw: snapshots by reader ("netlink", "procfs") and ipvsadm texts."""

    snapshots: dict[str, Snapshot]
    snapshot_json: dict[str, dict[str, Any]]
    ipvsadm: dict[str, str]


def guest_views(
    lab: Lab,
    ns: str = "lvs1",
    *,
    procfs: bool = True,
    conns: str = "summary",
    ipvsadm: tuple[str, ...] = (),
    timeout: float = 120.0,
) -> GuestViews:
    """Run the probe in guest namespace `ns` and decode what it printed."""
    from lvsprobe.lab.vm import guest_python
    from lvsprobe.snapshot_json import snapshot_from_json

    argv = guest_python("lvsprobe.lab.snapshot", "--conns", conns)
    if procfs:
        argv.append("--procfs")
    for args in ipvsadm:
        argv.append(f"--ipvsadm={args}")
    result = lab.run(ns, argv, timeout=timeout).check()
    try:
        doc = json.loads(result.stdout)
    except ValueError as exc:
        raise LabError(f"lab snapshot probe printed no JSON: {result.stdout[-300:]!r}") from exc
    snapshots = {name: snapshot_from_json(snap) for name, snap in doc["snapshots"].items()}
    return GuestViews(snapshots, doc["snapshots"], doc["ipvsadm"])


def guest_snapshot(lab: Lab, ns: str = "lvs1") -> Snapshot:
    """The Snapshot `lvsprobe status --json` would print inside namespace `ns`."""
    return guest_views(lab, ns, procfs=False).snapshots["netlink"]


def guest_snapshot_json(lab: Lab, ns: str = "lvs1") -> str:
    """The raw JSON `lvsprobe status --json` would print inside namespace `ns`."""
    return json.dumps(guest_views(lab, ns, procfs=False).snapshot_json["netlink"])


def main() -> None:
    """Guest entry: read the current namespace and print one JSON document."""
    from lvsprobe.snapshot_json import snapshot_to_json
    from lvsprobe.sources import read_snapshot

    ap = argparse.ArgumentParser(prog="python -m lvsprobe.lab.snapshot")
    ap.add_argument("--procfs", action="store_true", help="also read with netlink off")
    ap.add_argument("--conns", default="summary", choices=("off", "summary", "per-real-server"))
    ap.add_argument("--ipvsadm", action="append", default=[], help="ipvsadm arguments, quoted")
    args = ap.parse_args()
    out: dict[str, Any] = {"snapshots": {}, "ipvsadm": {}}
    # ipvsadm first and last around the readers would bracket them; the lab tests read a
    # quiescent cluster, so one ipvsadm pass right after the readers is enough.
    out["snapshots"]["netlink"] = snapshot_to_json(read_snapshot(conns=args.conns))
    if args.procfs:
        out["snapshots"]["procfs"] = snapshot_to_json(
            read_snapshot(conns=args.conns, netlink=False)
        )
    for text in args.ipvsadm:
        proc = subprocess.run(
            ["ipvsadm", *shlex.split(text)], capture_output=True, text=True, check=False
        )
        out["ipvsadm"][text] = proc.stdout if proc.returncode == 0 else f"ERROR: {proc.stderr}"
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
