"""Collector for virtual services and real servers (netlink dumps or /proc/net/ip_vs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain, compress, islice, repeat
from operator import is_not
from typing import TypeVar, cast

from lvsprobe.exporter.filters import ServiceFilter
from lvsprobe.exporter.metrics import BACKEND_LABELS, SERVICE_LABELS
from lvsprobe.exporter.names import ServiceNames
from lvsprobe.exporter.render import Builder, escape_label_value, label_pairs
from lvsprobe.model import (
    RATE_FIELDS,
    STAT_FIELDS,
    Family,
    Forward,
    Protocol,
    Rates,
    RealServerRows,
    RealServerTable,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    Stats,
    address_texts,
)

T = TypeVar("T")

_FAMILY = {Family.INET: "inet", Family.INET6: "inet6"}
_ZERO_LT = (0).__lt__
# Real servers whose label blocks are made in one go.
_PART = 8192
# Labels by the Forward value (a list index: hashing an enum member runs Python code).
_FORWARD_LABELS = tuple(Forward(value).label for value in range(len(Forward)))
_PROTOCOL = {proto: proto.name.lower() for proto in Protocol}
# The families every real server has a sample in (one shared list of label blocks).
_BACKEND_ROWS = (
    "ipvs_backend_weight",
    "ipvs_backend_active_connections",
    "ipvs_backend_inactive_connections",
)
_STAT_FIELDS = (
    "connections",
    "incoming_packets",
    "outgoing_packets",
    "incoming_bytes",
    "outgoing_bytes",
)
# The families of the columns only a netlink dump fills: each group shares the label blocks
# of the rows that have its columns (the five counters come together, as do the rates).
_Columns = Callable[[RealServerTable], "tuple[list[int | None], ...] | None"]
_NETLINK_ROWS: tuple[tuple[_Columns, tuple[str, ...]], ...] = (
    (
        lambda t: None if t.persistent_conns is None else (t.persistent_conns,),
        ("ipvs_backend_persistent_connections",),
    ),
    (
        lambda t: None if t.upper_thresholds is None else (t.upper_thresholds,),
        ("ipvs_backend_upper_threshold_connections",),
    ),
    (
        lambda t: None if t.lower_thresholds is None else (t.lower_thresholds,),
        ("ipvs_backend_lower_threshold_connections",),
    ),
    (
        lambda t: None if t.stats is None else t.stats[:5],
        tuple(f"ipvs_backend_{name}_total" for name in _STAT_FIELDS),
    ),
)
# The kernel's rate estimates, exported with --collector.backends.rates only.
_RATE_ROWS: tuple[_Columns, tuple[str, ...]] = (
    lambda t: None if t.stats is None else t.stats[5:],
    tuple(f"ipvs_backend_{name}_per_second" for name in _STAT_FIELDS),
)
assert len(STAT_FIELDS) == len(RATE_FIELDS) == len(_STAT_FIELDS)


@dataclass
class Budget:
    """The --collector.backends.max-series cap, shared by every namespace of one scrape."""

    remaining: int | None  # None: no cap
    dropped: int = 0


@dataclass
class ServiceOptions:
    service_filter: ServiceFilter = field(default_factory=ServiceFilter)
    names: ServiceNames | None = None
    # The kernel's per-real-server rate estimates: five series per real server that
    # Prometheus derives from the counters with rate(); off by default (README, "Series").
    backend_rates: bool = False


def service_family(svc: Service) -> str:
    """inet/inet6; an fwmark service read from procfs has none, so its real servers tell."""
    if svc.key.family is not None:
        return _FAMILY[svc.key.family]
    families = set(svc.real_servers.address_families)
    return _FAMILY[families.pop()] if len(families) == 1 else ""


def service_pairs(key: ServiceKey, family: str) -> str:
    """The SERVICE_LABELS pairs of a service (no value here can need escaping: names of
    enums, numbers and addresses)."""
    if key.fwmark:
        return f'protocol="",address="",port="0",fwmark="{key.fwmark}",family="{family}"'
    proto = _PROTOCOL[key.protocol] if key.protocol is not None else ""
    address = "" if key.address is None else str(key.address)
    return f'protocol="{proto}",address="{address}",port="{key.port}",fwmark="0",family="{family}"'


assert SERVICE_LABELS == ("protocol", "address", "port", "fwmark", "family")


def flag_names(svc: Service) -> str:
    """Flags as ipvsadm names them; HASHED (set on every live service) is left out."""
    return _flag_names(svc.flags, svc.scheduler)


@lru_cache(maxsize=256)
def _flag_names(flags: ServiceFlag, scheduler: str) -> str:
    names = []
    if flags & ServiceFlag.PERSISTENT:
        names.append("persistent")
    if flags & ServiceFlag.ONEPACKET:
        names.append("ops")
    sched = scheduler if scheduler in ("sh", "mh") else "sched"
    for flag, suffix in (
        (ServiceFlag.SCHED1, "fallback"),
        (ServiceFlag.SCHED2, "port"),
        (ServiceFlag.SCHED3, "flag3"),
    ):
        if flags & flag:
            names.append(f"{sched}-{suffix}")
    return ",".join(names)


@lru_cache(maxsize=256)
def _info_pairs(scheduler: str, flags: ServiceFlag, persistent: bool, pe_name: str) -> str:
    """The ipvs_service_info labels after the service's (few distinct values: cached)."""
    return label_pairs(
        ("scheduler", "flags", "persistent", "pe_name"),
        (scheduler, _flag_names(flags, scheduler), "true" if persistent else "false", pe_name),
    )


class ServicesCollector:
    """Per-service and per-real-server families from `Snapshot.services`."""

    source = "services"

    def __init__(self, options: ServiceOptions, budget: Budget) -> None:
        self.options = options
        self.budget = budget

    def collect(self, snap: Snapshot, out: Builder) -> None:
        allows = self.options.service_filter.allows_key
        seen: set[str] = set()
        kept: list[tuple[str, RealServerRows]] = []
        for svc in snap.services:
            if not allows(svc.key):
                continue
            pairs = service_pairs(svc.key, service_family(svc))
            # An fwmark service from procfs has no family; should two then look alike, the
            # second would duplicate series, which Prometheus rejects.
            if pairs not in seen:
                seen.add(pairs)
                self._service(svc, pairs, out)
                kept.append((pairs, self._kept(svc)))
        self._backends(kept, out)

    def _service(self, svc: Service, pairs: str, out: Builder) -> None:
        block = out.block(pairs)
        persistence = svc.persistence
        info = _info_pairs(svc.scheduler, svc.flags, persistence is not None, svc.pe_name or "")
        out.add("ipvs_service_info", out.block(f"{pairs},{info}"), 1)
        if self.options.names is not None:
            name = self.options.names.lookup(svc.key)
            if name is not None:
                out.add(
                    "ipvs_service_name_info",
                    out.block(f'{pairs},name="{escape_label_value(name)}"'),
                    1,
                )
        if persistence is not None and persistence.timeout_s is not None:
            out.add("ipvs_service_persistence_timeout_seconds", block, persistence.timeout_s)
        out.add("ipvs_service_backends", block, len(svc.real_servers))
        out.add(
            "ipvs_service_usable_backends",
            block,
            sum(map(_ZERO_LT, svc.real_servers.weights)),  # weight > 0, C-level
        )
        add_stats(out, "ipvs_service_", block, svc.stats, svc.rates)

    def _backends(self, kept: list[tuple[str, RealServerRows]], out: Builder) -> None:
        """The families of the real servers of all services at once.

        The hot part of a kube-proxy node's scrape (10^5 real servers): the real servers'
        columns are read (`RealServerTable.concat`), each step is one C-level map over a
        column (addresses to text by numpy for big tables), and one label block per real
        server is made and shared by its families: its service's labels (a head shared by
        the service's real servers) and its own.
        """
        heads_of_rows, blocks, (weights, actives, inactives) = out.rows(_BACKEND_ROWS)
        lead = "{" + (out.prefix + "," if out.prefix else "")
        heads = [f'{lead}{pairs},backend_address="' for pairs, _ in kept]
        counts = [len(rss) for _, rss in kept]
        table = RealServerTable.concat(rss for _, rss in kept)
        head_of_each = repeated(heads, counts)
        first = len(blocks)
        # In parts: the address texts of a part are all held at once.
        for start in range(0, len(table), _PART):
            stop = start + _PART
            texts = address_texts(
                table.address_families[start:stop], table.address_numbers[start:stop]
            )
            forwards = map(_FORWARD_LABELS.__getitem__, table.forwards[start:stop])
            heads_of_rows.extend(islice(head_of_each, len(texts)))
            rows = zip(texts, table.ports[start:stop], forwards, strict=True)
            blocks.extend(
                [f'{text}",backend_port="{port}",forward="{fwd}"}}' for text, port, fwd in rows]
            )
        weights.extend(table.weights)
        actives.extend(table.active_conns)
        inactives.extend(table.inactive_conns)
        row_heads, row_blocks = heads_of_rows[first:], blocks[first:]
        groups = (*_NETLINK_ROWS, _RATE_ROWS) if self.options.backend_rates else _NETLINK_ROWS
        for columns_of, names in groups:
            columns = columns_of(table)
            if columns is None:
                continue
            group_heads, group_blocks, values = out.rows(names)
            present = columns[0]
            if present.count(None):
                has = list(map(is_not, present, repeat(None)))
                group_heads.extend(compress(row_heads, has))
                group_blocks.extend(compress(row_blocks, has))
                for column, family_values in zip(columns, values, strict=True):
                    family_values.extend(compress(cast(list[int], column), has))
            else:
                group_heads.extend(row_heads)
                group_blocks.extend(row_blocks)
                for column, family_values in zip(columns, values, strict=True):
                    family_values.extend(cast(list[int], column))  # no None: checked

    def _kept(self, svc: Service) -> RealServerRows:
        """The service's real servers within the --collector.backends cap (counting those
        dropped)."""
        rss = svc.real_servers
        budget = self.budget
        if budget.remaining is not None:
            kept = max(0, min(len(rss), budget.remaining))
            budget.dropped += len(rss) - kept
            budget.remaining -= kept
            rss = rss.head(kept)
        return rss


def repeated(values: Iterable[T], counts: Iterable[int]) -> Iterator[T]:
    """Each value as many times as its count: a service's labels for each of its real
    servers (C-level, no loop per real server)."""
    return chain.from_iterable(map(repeat, values, counts))


assert BACKEND_LABELS[len(SERVICE_LABELS) :] == ("backend_address", "backend_port", "forward")


def add_stats(
    out: Builder, prefix: str, block: str, stats: Stats | None, rates: Rates | None
) -> None:
    """The five counters and five rates of a stats block, each when present."""
    if stats is not None:
        values: tuple[int, ...] = (
            stats.conns,
            stats.in_pkts,
            stats.out_pkts,
            stats.in_bytes,
            stats.out_bytes,
        )
        for fld, value in zip(_STAT_FIELDS, values, strict=True):
            out.add(f"{prefix}{fld}_total", block, value)
    if rates is not None:
        values = (
            rates.conns_per_s,
            rates.in_pkts_per_s,
            rates.out_pkts_per_s,
            rates.in_bytes_per_s,
            rates.out_bytes_per_s,
        )
        for fld, value in zip(_STAT_FIELDS, values, strict=True):
            out.add(f"{prefix}{fld}_per_second", block, value)
