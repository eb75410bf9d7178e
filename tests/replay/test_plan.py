"""make_plan draw for draw: a pinned digest of a plan that uses every random choice (mix
weights, random client pick, payload ranges, Poisson arrivals), so a faster planner is proven
to plan the very same flows."""

from __future__ import annotations

import hashlib

from lvsprobe.replay.plan import make_plan
from lvsprobe.replay.scenario import parse_scenario

SCENARIO = """name: draws
seed: 11
target: {address: 127.0.0.1, port: 80}
clients: {cidr: 127.0.0.0/24, count: 200, pick: random}
flows:
  - {kind: http, weight: 3, payload_bytes: [10, 900]}
  - {kind: tcp, weight: 1, payload_bytes: [5, 50], port: 81}
  - {kind: udp, weight: 1, payload_bytes: 64}
arrival: {model: open, rate: 300, process: poisson}
bounds: {max_flows: 2000, max_duration: 60s}
"""
DIGEST = "d475c99560719eb7dd3ad40efb5f3f8f39d9de894cabc972d205ef1c2dc5c47c"


def test_the_plan_is_the_same_flow_for_flow() -> None:
    plan = make_plan(parse_scenario(SCENARIO, "draws.yaml"))
    assert len(plan) == 2000
    rows = "\n".join(
        f"{p.flow_id} {p.kind} {p.client_address} {p.server_port} {p.at_s!r} "
        f"{p.payload_bytes} {p.stage}"
        for p in plan
    )
    assert hashlib.sha256(rows.encode()).hexdigest() == DIGEST
