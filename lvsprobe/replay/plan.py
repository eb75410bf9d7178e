"""A scenario's run plan: which flow, from which client address, when. Deterministic by seed.

The plan is pure: the same scenario and seed always give the same list (no clock, no I/O).
`check_pool` is the one I/O helper here: it asks the kernel whether each client address
can be bound on this host.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import itertools
import operator
import random
import socket
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from lvsprobe.errors import ScenarioError
from lvsprobe.replay import profile
from lvsprobe.replay.flowmix import FlowMix
from lvsprobe.replay.gcpause import collections_paused
from lvsprobe.replay.profile import Stage
from lvsprobe.replay.scenario import Scenario


class PlannedFlow(NamedTuple):
    """One flow to drive; `at_s` is its start offset (None: closed loop, when a slot of its
    stage frees); `stage` its stage of the rate profile."""

    # A NamedTuple, not a frozen dataclass: as immutable, and built in 0.3 us, not 1 (a frozen
    # dataclass sets each field through object.__setattr__), once per planned flow before a
    # run starts (200k in a 10 s closed run at wrk's rate: 0.2 s of its start-up).

    flow_id: int
    kind: str
    client_address: str
    server_address: str
    server_port: int
    at_s: float | None
    payload_bytes: int
    mix: FlowMix
    stage: int = 0


def stages_of(scenario: Scenario) -> tuple[Stage, ...]:
    """The run's rate profile: the scenario's stages, or the one its model implies (a
    constant rate, or `concurrency` loops, for max_duration); none for a recorded replay."""
    arrival, span_s = scenario.arrival, scenario.bounds.max_duration_s
    if scenario.recorded:
        return ()
    if arrival.stages:
        return arrival.stages
    if arrival.model == "closed":
        return (Stage(span_s, concurrency=arrival.concurrency),)
    if arrival.model == "burst":
        every_s = arrival.burst_every_s
        rate = arrival.burst_size / every_s if every_s > 0 else 0.0
        return (Stage(span_s, rate, rate),)
    return (Stage(span_s, arrival.rate_per_s, arrival.rate_per_s),)


def _offsets(
    scenario: Scenario, rng: random.Random, limit: int
) -> Iterable[tuple[float | None, int]]:
    """(start offset or None for a closed slot, stage) of each flow, in plan order."""
    arrival, bounds = scenario.arrival, scenario.bounds
    if arrival.model == "burst":
        k = 0
        while (at := k * arrival.burst_every_s) < bounds.max_duration_s:
            for _ in range(arrival.burst_size):
                yield at, 0
            k += 1
            if arrival.burst_every_s <= 0:
                return
        return
    stages = stages_of(scenario)
    budgets = profile.closed_budgets(stages, limit, bounds.max_duration_s)
    opened = profile.open_arrivals(stages, arrival.process == "poisson", rng, bounds.max_duration_s)
    pending = next(opened, None)
    for index, stage in enumerate(stages):
        if stage.closed:
            for _ in range(budgets.get(index, 0)):
                yield None, index
            continue
        while pending is not None and pending[1] == index:
            yield pending
            pending = next(opened, None)


def _mixes(scenario: Scenario) -> dict[int | None, tuple[list[FlowMix], list[float]]]:
    """The mix entries and their cumulative weights (what rng.choices sums), by stage (None:
    the scenario's own weights)."""
    out: dict[int | None, tuple[list[FlowMix], list[float]]] = {}
    for index, stage in [(None, None), *enumerate(stages_of(scenario))]:
        if stage is not None and stage.weights is None:
            continue
        weights = [
            _weight(m, scenario.flows, stage.weights if stage else None) for m in scenario.flows
        ]
        mixes = [m for m, w in zip(scenario.flows, weights, strict=True) if w > 0]
        out[index] = (mixes, list(itertools.accumulate(w for w in weights if w > 0)))
    return out


def _weight(mix: FlowMix, flows: tuple[FlowMix, ...], by_kind: Mapping[str, float] | None) -> float:
    """A mix entry's weight; a stage's per-kind weight is shared by the kind's entries in
    proportion to their own weights (equally if those are all 0: off outside the stage)."""
    if by_kind is None:
        return mix.weight
    same = [m.weight for m in flows if m.kind == mix.kind]
    part = mix.weight / sum(same) if sum(same) > 0 else 1 / len(same)
    return by_kind.get(mix.kind, 0.0) * part


def make_plan(scenario: Scenario, max_flows: int | None = None) -> list[PlannedFlow]:
    """The flows of a run, in start order, at most `bounds.max_flows` (or `max_flows`).

    Built with the cyclic collector paused (gcpause.py), in one tight loop (it runs once per
    planned flow before the run starts): the lookups hoisted, the random draws made only
    where a choice exists, in the same order. A plan with no choice at all is built column
    by column (`_fixed_plan`).
    """
    limit = min(scenario.bounds.max_flows, max_flows or scenario.bounds.max_flows)
    with collections_paused():
        if scenario.recorded:
            return _recorded_plan(scenario, limit)
        rng = random.Random(scenario.seed)
        by_stage = _mixes(scenario)
        offsets = itertools.islice(_offsets(scenario, rng, limit), limit)
        if _fixed(scenario, by_stage):
            return _fixed_plan(scenario, by_stage, offsets, limit)
        return _drawn_plan(scenario, by_stage, rng, offsets, limit)


def _drawn_plan(
    scenario: Scenario,
    by_stage: dict[int | None, tuple[list[FlowMix], list[float]]],
    rng: random.Random,
    offsets: Iterable[tuple[float | None, int]],
    limit: int,
) -> list[PlannedFlow]:
    clients = scenario.clients.addresses
    count, pick = len(clients), scenario.clients.pick
    address, default_port = scenario.target.address, scenario.target.port
    plan: list[PlannedFlow] = []
    append, choices, randrange, randint = plan.append, rng.choices, rng.randrange, rng.randint
    for flow_id, (at, stage) in enumerate(offsets):
        mixes, cum_weights = by_stage.get(stage, by_stage[None])
        mix = mixes[0] if len(mixes) == 1 else choices(mixes, cum_weights=cum_weights)[0]
        if pick == "random":
            client = clients[randrange(count)]
        elif pick == "sequential":
            client = clients[flow_id * count // limit]
        else:
            client = clients[flow_id % count]
        low, high = mix.payload_bytes
        payload = low if low == high else randint(low, high)
        port = mix.port or default_port
        append(PlannedFlow(flow_id, mix.kind, client, address, port, at, payload, mix, stage))
    return plan


def _fixed(
    scenario: Scenario, by_stage: dict[int | None, tuple[list[FlowMix], list[float]]]
) -> bool:
    """Whether no flow of the plan draws anything: one mix entry per stage, each with a
    fixed payload, and clients taken in turn or in sequence (not at random)."""
    return scenario.clients.pick != "random" and all(
        len(mixes) == 1 and mixes[0].payload_bytes[0] == mixes[0].payload_bytes[1]
        for mixes, _ in by_stage.values()
    )


# a PlannedFlow from a tuple of its fields, made in C (as its `_make` makes it, without the
# Python call around it): a fixed plan is made of these, one per planned flow
_planned_from_fields = functools.partial(tuple.__new__, PlannedFlow)


def _fixed_plan(
    scenario: Scenario,
    by_stage: dict[int | None, tuple[list[FlowMix], list[float]]],
    offsets: Iterable[tuple[float | None, int]],
    limit: int,
) -> list[PlannedFlow]:
    """`_drawn_plan`'s flows where nothing is drawn: each flow's fields but its id, start
    and client are its stage's, so the plan is zipped from columns, no Python step per flow
    (tests/replay/test_plan.py holds the two equal)."""
    rows = list(offsets)
    ats, stages = (list(map(operator.itemgetter(i), rows)) for i in (0, 1))
    clients = scenario.clients.addresses
    count = len(clients)
    if scenario.clients.pick == "sequential":
        picked: Iterable[str] = (clients[i * count // limit] for i in range(len(rows)))
    else:
        picked = itertools.cycle(clients)
    address, default_port = scenario.target.address, scenario.target.port
    fields = {}  # by stage: kind, port, payload, mix
    for stage in set(stages):
        mix = by_stage.get(stage, by_stage[None])[0][0]
        fields[stage] = (mix.kind, mix.port or default_port, mix.payload_bytes[0], mix)
    per_flow = list(map(fields.__getitem__, stages))
    columns = zip(
        range(len(rows)),
        map(operator.itemgetter(0), per_flow),
        picked,
        itertools.repeat(address),
        map(operator.itemgetter(1), per_flow),
        ats,
        map(operator.itemgetter(2), per_flow),
        map(operator.itemgetter(3), per_flow),
        stages,
    )
    return list(map(_planned_from_fields, columns))


def _recorded_plan(scenario: Scenario, limit: int) -> list[PlannedFlow]:
    speed = scenario.arrival.speed
    clients = scenario.clients.addresses
    plan = []
    for flow_id, rec in enumerate(sorted(scenario.recorded, key=lambda r: r.at_s)):
        at = rec.at_s / speed
        if flow_id >= limit or at >= scenario.bounds.max_duration_s:
            break
        plan.append(
            PlannedFlow(
                flow_id=flow_id,
                kind=rec.mix.kind,
                client_address=clients[rec.client % len(clients)],
                server_address=scenario.target.address,
                server_port=rec.mix.port or scenario.target.port,
                at_s=at,
                payload_bytes=rec.mix.payload_bytes[0],
                mix=rec.mix,
            )
        )
    return plan


def describe_plan(scenario: Scenario, plan: list[PlannedFlow]) -> dict[str, object]:
    """What `replay run --dry-run` prints: the plan in numbers, and its first flows."""
    arrival = scenario.arrival
    last = max((p.at_s for p in plan if p.at_s is not None), default=None)
    return {
        "scenario": scenario.name,
        "description": scenario.description.strip(),
        "seed": scenario.seed,
        "target": f"{scenario.target.protocol}/{scenario.target.address}:{scenario.target.port}",
        "fwmark": scenario.target.fwmark or None,
        "flows": len(plan),
        "kinds": dict(sorted(Counter(p.kind for p in plan).items())),
        "clients_in_pool": len(scenario.clients.addresses),
        "clients_used": len({p.client_address for p in plan}),
        "arrival": arrival.model,
        "rate_per_s": arrival.rate_per_s
        if arrival.model in ("open", "pool") and not arrival.stages
        else None,
        "concurrency": arrival.concurrency if arrival.model == "closed" else None,
        "connections": arrival.connections or None,
        "stages": [_describe_stage(s) for s in arrival.stages] or None,
        "last_start_s": last,
        "max_duration_s": scenario.bounds.max_duration_s,
        "max_flows": scenario.bounds.max_flows,
        "first": [
            f"#{p.flow_id} {p.kind} {p.client_address} -> {p.server_address}:{p.server_port}"
            + (f" at {p.at_s:.3f}s" if p.at_s is not None else "")
            for p in plan[:5]
        ],
    }


def _describe_stage(stage: Stage) -> str:
    if stage.closed:
        text = f"{stage.duration_s:g}s closed x{stage.concurrency}"
    elif stage.start_rate_per_s == stage.end_rate_per_s:
        text = f"{stage.duration_s:g}s at {stage.end_rate_per_s:g}/s"
    else:
        text = f"{stage.duration_s:g}s {stage.start_rate_per_s:g}->{stage.end_rate_per_s:g}/s"
    if stage.weights:
        text += " mix " + ",".join(f"{k}:{w:g}" for k, w in stage.weights.items())
    return text


def check_pool(addresses: Iterable[str]) -> list[str]:
    """The addresses this host cannot bind (not configured here): an empty list is good."""
    missing = []
    for address in addresses:
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((address, 0))
            except OSError as exc:
                if exc.errno != errno.EADDRNOTAVAIL:
                    raise ScenarioError(f"client address {address}: cannot bind: {exc}") from exc
                missing.append(address)
    return missing


def require_pool(addresses: tuple[str, ...]) -> None:
    """ScenarioError naming the client addresses that do not exist on this host."""
    missing = check_pool(addresses)
    if missing:
        shown = ", ".join(missing[:8]) + (
            f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        )
        raise ScenarioError(
            f"{len(missing)} of {len(addresses)} client addresses are not configured on this "
            f"host: {shown} (add them, e.g. `ip addr add ADDR/32 dev lo`, or run in the lab's "
            "client namespace)"
        )
