"""Snapshots taken inside the guest, with ipvsadm's views of the same moment.

One call returns everything a test compares: the netlink snapshot, the procfs snapshot and
any number of ipvsadm outputs. The guest agent takes them in a thread moved into the namespace
(the readers stay imported in the agent: no Python start per call, which costs seconds).

Host side:   guest_snapshot(lab, "lvs1") / guest_views(lab, "lvs1", ipvsadm=[...])
Guest side:  python -m lvsprobe.lab.snapshot [--procfs] [--conns MODE] [--ipvsadm=ARGS]...
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lvsprobe.model import Snapshot


class ControlChannel(Protocol):
    """The agent's request channel (`lab.channel.Control`)."""

    def request(self, op: str, timeout_s: float | None, **fields: Any) -> dict[str, Any]: ...


class GuestLab(Protocol):
    """What a snapshot needs of a running lab: its control channel to the guest agent.
    A protocol, so this module need not import `Lab` (which the snapshot does not drive)."""

    @property
    def control(self) -> ControlChannel: ...


@dataclass(frozen=True, slots=True)
class GuestViews:
    """What one guest call saw: snapshots by reader ("netlink", "procfs") and ipvsadm texts."""

    snapshots: dict[str, Snapshot]
    snapshot_json: dict[str, dict[str, Any]]
    ipvsadm: dict[str, str]


def guest_views(
    lab: GuestLab,
    ns: str = "lvs1",
    *,
    procfs: bool = True,
    conns: str = "summary",
    ipvsadm: tuple[str, ...] = (),
    timeout: float = 120.0,
) -> GuestViews:
    """Snapshots and ipvsadm views of guest namespace `ns`, taken by the running agent (its
    Python has the readers imported after the first call: no interpreter start per call)."""
    from lvsprobe.snapshot_json import snapshot_from_json

    reply = lab.control.request(
        "views", timeout, ns=ns, procfs=procfs, conns=conns, ipvsadm=list(ipvsadm)
    )
    doc = reply["views"]
    snapshots = {name: snapshot_from_json(snap) for name, snap in doc["snapshots"].items()}
    return GuestViews(snapshots, doc["snapshots"], doc["ipvsadm"])


def collect(procfs: bool, conns: str, ipvsadm: list[str]) -> dict[str, Any]:
    """Read the current thread's namespace: netlink snapshot, optionally the procfs one, then
    each `ipvsadm ARGS` (a child inherits the calling thread's network namespace)."""
    from lvsprobe.snapshot_json import snapshot_to_json
    from lvsprobe.sources import read_snapshot

    mode: Any = conns
    out: dict[str, Any] = {"snapshots": {}, "ipvsadm": {}}
    out["snapshots"]["netlink"] = snapshot_to_json(read_snapshot(conns=mode))
    if procfs:
        out["snapshots"]["procfs"] = snapshot_to_json(read_snapshot(conns=mode, netlink=False))
    for text in ipvsadm:
        proc = subprocess.run(
            ["ipvsadm", *shlex.split(text)], capture_output=True, text=True, check=False
        )
        out["ipvsadm"][text] = proc.stdout if proc.returncode == 0 else f"ERROR: {proc.stderr}"
    return out


def guest_snapshot(lab: GuestLab, ns: str = "lvs1") -> Snapshot:
    """The Snapshot `lvsprobe status --json` would print inside namespace `ns`."""
    return guest_views(lab, ns, procfs=False).snapshots["netlink"]


def guest_snapshot_json(lab: GuestLab, ns: str = "lvs1") -> str:
    """The raw JSON `lvsprobe status --json` would print inside namespace `ns`."""
    return json.dumps(guest_views(lab, ns, procfs=False).snapshot_json["netlink"])


def main() -> None:
    """Guest command line: read the current namespace and print one JSON document."""
    ap = argparse.ArgumentParser(prog="python -m lvsprobe.lab.snapshot")
    ap.add_argument("--procfs", action="store_true", help="also read with netlink off")
    ap.add_argument("--conns", default="summary", choices=("off", "summary", "per-real-server"))
    ap.add_argument("--ipvsadm", action="append", default=[], help="ipvsadm arguments, quoted")
    args = ap.parse_args()
    json.dump(collect(args.procfs, args.conns, args.ipvsadm), sys.stdout)


if __name__ == "__main__":
    main()
