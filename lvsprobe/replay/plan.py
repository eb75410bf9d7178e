"""A scenario's run plan: which flow, from which client address, when. Deterministic by seed.

The plan is pure: the same scenario and seed always give the same list (no clock, no I/O).
`check_pool` is the one I/O helper here: it asks the kernel whether each client address
can be bound on this host.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import random
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from lvsprobe.errors import ScenarioError
from lvsprobe.replay.flowmix import FlowMix
from lvsprobe.replay.scenario import Scenario


@dataclass(frozen=True, slots=True)
class PlannedFlow:
    """One flow to drive; `at_s` is its start offset (None: closed loop, when a slot frees)."""

    flow_id: int
    kind: str
    client_address: str
    server_address: str
    server_port: int
    at_s: float | None
    payload_bytes: int
    mix: FlowMix


def _offsets(scenario: Scenario, rng: random.Random) -> Iterable[float | None]:
    arrival, bounds = scenario.arrival, scenario.bounds
    if arrival.model == "closed":
        while True:
            yield None
    if arrival.model == "burst":
        k = 0
        while (at := k * arrival.burst_every_s) < bounds.max_duration_s:
            for _ in range(arrival.burst_size):
                yield at
            k += 1
            if arrival.burst_every_s <= 0:
                return
        return
    at = 0.0
    while at < bounds.max_duration_s:
        yield at
        if arrival.process == "poisson":
            at += rng.expovariate(arrival.rate_per_s)
        else:
            at += 1.0 / arrival.rate_per_s


def make_plan(scenario: Scenario, max_flows: int | None = None) -> list[PlannedFlow]:
    """The flows of a run, in start order, at most `bounds.max_flows` (or `max_flows`)."""
    limit = min(scenario.bounds.max_flows, max_flows or scenario.bounds.max_flows)
    if scenario.recorded:
        return _recorded_plan(scenario, limit)
    rng = random.Random(scenario.seed)
    mixes = [m for m in scenario.flows if m.weight > 0]
    cum_weights = list(itertools.accumulate(m.weight for m in mixes))  # what choices() sums
    clients = scenario.clients.addresses
    target = scenario.target
    plan: list[PlannedFlow] = []
    for flow_id, at in enumerate(_offsets(scenario, rng)):
        if flow_id >= limit:
            break
        mix = mixes[0] if len(mixes) == 1 else rng.choices(mixes, cum_weights=cum_weights)[0]
        if scenario.clients.pick == "random":
            client = clients[rng.randrange(len(clients))]
        elif scenario.clients.pick == "sequential":
            client = clients[flow_id * len(clients) // limit]
        else:
            client = clients[flow_id % len(clients)]
        low, high = mix.payload_bytes
        plan.append(
            PlannedFlow(
                flow_id=flow_id,
                kind=mix.kind,
                client_address=client,
                server_address=target.address,
                server_port=mix.port or target.port,
                at_s=at,
                payload_bytes=low if low == high else rng.randint(low, high),
                mix=mix,
            )
        )
    return plan


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
        "rate_per_s": arrival.rate_per_s if arrival.model == "open" else None,
        "concurrency": arrival.concurrency if arrival.model == "closed" else None,
        "last_start_s": last,
        "max_duration_s": scenario.bounds.max_duration_s,
        "max_flows": scenario.bounds.max_flows,
        "first": [
            f"#{p.flow_id} {p.kind} {p.client_address} -> {p.server_address}:{p.server_port}"
            + (f" at {p.at_s:.3f}s" if p.at_s is not None else "")
            for p in plan[:5]
        ],
    }


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
