"""A run split across Dask workers (`replay run --workers`): which worker drives which flows.

Pure: the same plan and the same workers' reports always give the same shards. A shard is
the set of planned flows whose client address is in its worker's slice of the pool, so the
slices are disjoint, every planned flow is in exactly one shard, and each flow keeps its
place in the global schedule (`at_s`): two shards at R/2 each are one run at R.

Each worker reports the pool addresses it can bind on its host; an address goes to one of
the workers that have it (see `assign_clients`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lvsprobe.errors import ScenarioError
from lvsprobe.replay.plan import PlannedFlow
from lvsprobe.replay.scenario import Scenario


@dataclass(frozen=True, slots=True)
class WorkerClients:
    """What a worker reported: its Dask address and name, and which of the run's client
    addresses it can bind on its host."""

    address: str
    name: str
    clients: frozenset[str]


@dataclass(frozen=True, slots=True)
class Shard:
    """One worker's part of the run: its slice of the pool and the ids of its flows."""

    index: int
    worker_address: str
    worker_name: str
    clients: tuple[str, ...]
    flow_ids: frozenset[int]
    digest: str  # of the flow ids: a worker that rebuilds another plan is caught

    @property
    def flows(self) -> int:
        return len(self.flow_ids)


def _shown(items: Sequence[str], limit: int = 6) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _one_each(pool: Sequence[str], workers: Sequence[WorkerClients]) -> dict[str, str]:
    """Worker address -> an address of its own: a free one in turn, then augmenting paths
    (Kuhn's maximum matching), so every worker gets one whenever the pool allows it."""
    owner: dict[str, str] = {}  # pool address -> worker address

    def claim(worker: WorkerClients, tried: set[str]) -> bool:
        for address in pool:
            if address in worker.clients and address not in tried:
                tried.add(address)
                if address not in owner or claim(by_address[owner[address]], tried):
                    owner[address] = worker.address
                    return True
        return False

    by_address = {w.address: w for w in workers}
    for worker in workers:  # a free address first: workers alike take the pool in turn
        free = next((a for a in pool if a in worker.clients and a not in owner), None)
        if free is not None:
            owner[free] = worker.address
    matched = set(owner.values())
    for worker in workers:
        if worker.address not in matched:
            claim(worker, set())
    return {w: a for a, w in owner.items()}


def assign_clients(pool: Sequence[str], workers: Sequence[WorkerClients]) -> dict[str, list[str]]:
    """Worker address -> its slice of `pool` (disjoint, in pool order): one address each
    first, then each address to the least-loaded worker that has it (so workers on one host
    share the pool interleaved, and workers on separate hosts drive their own addresses).

    ScenarioError names each worker that has none of the pool's addresses (or can get none,
    with more workers than addresses), and the addresses no worker has.
    """
    if not workers:
        raise ScenarioError("--workers: the Dask cluster has no workers")
    ordered = sorted(workers, key=lambda w: (w.name, w.address))
    idle = [w for w in ordered if not w.clients & set(pool)]
    if idle:
        names = _shown([f"{w.name!r} ({w.address})" for w in idle])
        raise ScenarioError(
            f"worker {names} has none of the run's {len(pool)} client addresses configured on "
            "its host: add them there (e.g. `ip addr add ADDR/32 dev lo`), or stop that worker"
        )
    nowhere = [a for a in pool if not any(a in w.clients for w in ordered)]
    if nowhere:
        raise ScenarioError(
            f"{len(nowhere)} of {len(pool)} client addresses are configured on no worker's "
            f"host: {_shown(nowhere)}"
        )
    first = _one_each(pool, ordered)
    empty = [w for w in ordered if w.address not in first]
    if empty:
        names = _shown([f"{w.name!r} ({w.address})" for w in empty])
        raise ScenarioError(
            f"worker {names} gets no client address: the run's {len(pool)} client addresses "
            f"are too few for {len(ordered)} workers (each drives its own addresses)"
        )
    owner = {address: worker for worker, address in first.items()}
    load = dict.fromkeys(first, 1)
    for address in pool:
        if address not in owner:
            holders = [w.address for w in ordered if address in w.clients]
            owner[address] = min(holders, key=lambda w: load[w])  # ties: the first in order
            load[owner[address]] += 1
    slices: dict[str, list[str]] = {w.address: [] for w in ordered}
    for address in pool:
        slices[owner[address]].append(address)
    return slices


def plan_digest(flow_ids: Iterable[int]) -> str:
    """A short digest of a shard's flow ids, in order."""
    digest = hashlib.sha256()
    for flow_id in sorted(flow_ids):
        digest.update(flow_id.to_bytes(8, "little"))
    return digest.hexdigest()[:16]


def shard_flows(plan: Iterable[PlannedFlow], clients: Iterable[str]) -> list[PlannedFlow]:
    """The planned flows of one shard: those from its client addresses, in plan order."""
    mine = frozenset(clients)
    return [p for p in plan if p.client_address in mine]


def split_plan(plan: Sequence[PlannedFlow], workers: Sequence[WorkerClients]) -> list[Shard]:
    """The shards of a run, one per worker (see `assign_clients`)."""
    pool = list(dict.fromkeys(p.client_address for p in plan))
    slices = assign_clients(pool, workers)
    names = {w.address: w.name for w in workers}
    shards = []
    for index, (address, clients) in enumerate(slices.items()):
        ids = frozenset(p.flow_id for p in shard_flows(plan, clients))
        shards.append(Shard(index, address, names[address], tuple(clients), ids, plan_digest(ids)))
    return shards


def shard_scenario(scenario: Scenario, shards: int, index: int) -> Scenario:
    """The scenario shard `index` of `shards` runs: a closed loop's concurrency is split
    among the shards (the open loop's rate already is: each keeps its flows' times)."""
    arrival = scenario.arrival
    if arrival.model != "closed":
        return scenario
    if arrival.concurrency < shards:
        raise ScenarioError(
            f"{scenario.source}: arrival.concurrency {arrival.concurrency} cannot be split "
            f"across {shards} workers: give at least one slot to each"
        )
    share = arrival.concurrency // shards + (1 if index < arrival.concurrency % shards else 0)
    return dataclasses.replace(scenario, arrival=dataclasses.replace(arrival, concurrency=share))
