"""`status --json` reads the real servers' columns: the same document as from objects, and
back to the same snapshot."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.model import RealServer, Snapshot
from lvsprobe.snapshot_json import snapshot_from_json, snapshot_to_json


def _backend_of_object(rs: RealServer) -> dict[str, Any]:
    """The schema's backend, from one object (the reference the columns must give)."""

    def plain(obj: object) -> object:
        return None if obj is None else dataclasses.asdict(obj)  # type: ignore[call-overload]

    return {
        "address": str(rs.address),
        "port": rs.port,
        "forward": rs.forward.label,
        "weight": rs.weight,
        "active_conns": rs.active_conns,
        "inactive_conns": rs.inactive_conns,
        "persistent_conns": rs.persistent_conns,
        "upper_threshold": rs.upper_threshold,
        "lower_threshold": rs.lower_threshold,
        "family": rs.family.name.lower() if rs.family is not None else None,
        "tunnel": plain(rs.tunnel),
        "stats": plain(rs.stats),
        "rates": plain(rs.rates),
    }


def test_backends_from_columns_are_those_of_the_objects() -> None:
    services = IPVSNetlink.connect(SimulatedKernel(generated_services(200, seed=2))).services()
    snap = Snapshot(loaded=True, via="netlink", services=services)
    doc = snapshot_to_json(snap)
    for svc, svc_doc in zip(services, doc["services"], strict=True):
        assert svc_doc["backends"] == [_backend_of_object(rs) for rs in svc.real_servers.objects()]
    assert any(b["tunnel"] for s in doc["services"] for b in s["backends"])
    assert any(b["family"] is None for s in doc["services"] for b in s["backends"])
    back = snapshot_from_json(json.loads(json.dumps(doc)))
    assert back.services == services
