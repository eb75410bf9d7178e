"""make_plan draw for draw: a pinned digest of a plan that uses every random choice (mix
weights, random client pick, payload ranges, Poisson arrivals), so a faster planner is proven
to plan the very same flows; and a plan with no choice, built from columns, equal to the
same plan built flow by flow."""

from __future__ import annotations

import gc
import hashlib
import itertools
import random

import pytest

from lvsprobe.replay.plan import PlannedFlow, _drawn_plan, _fixed, _mixes, _offsets, make_plan
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


FIXED = {
    "closed": "clients: {cidr: 127.0.1.1/24, count: 250}\nflows: [{kind: http, path: /}]\n"
    "arrival: {model: closed, concurrency: 16}\nbounds: {max_flows: 5000, max_duration: 10s}\n",
    "open, sequential": "clients: {cidr: 127.0.0.0/24, count: 7, pick: sequential}\n"
    "flows: [{kind: tcp, port: 81, payload_bytes: 64}]\n"
    "arrival: {model: open, rate: 100}\nbounds: {max_flows: 333, max_duration: 60s}\n",
    "poisson": "clients: {cidr: 127.0.0.0/24, count: 3}\nflows: [{kind: udp}]\n"
    "arrival: {model: open, rate: 300, process: poisson}\n"
    "bounds: {max_flows: 900, max_duration: 2s}\n",
    "stages": "clients: {cidr: 127.0.0.0/24, count: 5}\nflows: [{kind: http}]\n"
    "arrival: {model: open, stages: [{duration: 1s, target: 50}, {duration: 1s, "
    "concurrency: 4}, {duration: 2s, rate: 20, mix: {http: 1}}]}\n"
    "bounds: {max_flows: 400, max_duration: 10s}\n",
    "nothing planned": "clients: {cidr: 127.0.0.0/24, count: 5}\nflows: [{kind: http}]\n"
    "arrival: {model: open, rate: 0.1}\nbounds: {max_flows: 10, max_duration: 1s}\n",
}


@pytest.mark.parametrize("name", FIXED)
def test_a_plan_without_draws_is_built_from_columns_as_flow_by_flow(name: str) -> None:
    """A scenario where no flow draws anything (the bench's closed loop, most CI runs) is
    planned column by column: the same flows as the loop that draws."""
    scenario = parse_scenario(f"name: {name}\nseed: 3\ntarget: {{address: 127.0.0.1, port: 80}}\n"
                              + FIXED[name], "fixed.yaml")  # fmt: skip
    plan = make_plan(scenario, 4000)
    limit = min(scenario.bounds.max_flows, 4000)
    rng = random.Random(scenario.seed)
    offsets = itertools.islice(_offsets(scenario, rng, limit), limit)
    assert _fixed(scenario, _mixes(scenario))
    assert plan == _drawn_plan(scenario, _mixes(scenario), rng, offsets, limit)
    assert all(type(p) is PlannedFlow for p in plan)
    assert plan == [PlannedFlow(*p) for p in plan]
    if name != "nothing planned":
        assert plan[-1].flow_id == len(plan) - 1 and plan[-1].mix is scenario.flows[0]


def test_a_plan_with_a_choice_is_not_fixed() -> None:
    scenario = parse_scenario(SCENARIO, "draws.yaml")
    assert not _fixed(scenario, _mixes(scenario))


def test_no_collection_walks_the_plan_while_it_is_built() -> None:
    """Each collection walks the tracked objects of its generations: while a plan of many
    flows grows, they cost more than building it. The collector is paused, then on again
    (the allocations it missed may start one collection as it comes back)."""
    started: list[int] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    scenario = parse_scenario("name: gc\ntarget: {address: 127.0.0.1, port: 80}\n"
                              + FIXED["closed"], "gc.yaml")  # fmt: skip
    assert gc.isenabled()
    gc.callbacks.append(watch)
    try:
        plan = make_plan(scenario)
    finally:
        gc.callbacks.remove(watch)
    assert len(plan) == 5000 and len(started) <= 1
    assert gc.isenabled()
