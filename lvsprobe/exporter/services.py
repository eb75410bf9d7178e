"""Collector for virtual services and real servers (netlink dumps or /proc/net/ip_vs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress, repeat
from operator import attrgetter, is_not
from typing import TYPE_CHECKING, cast

from lvsprobe.exporter.backend_labels import BackendLabels, repeated
from lvsprobe.exporter.filters import ServiceFilter
from lvsprobe.exporter.metrics import BACKEND_LABELS, SERVICE_LABELS
from lvsprobe.exporter.render import Builder, escape_label_value, label_pairs
from lvsprobe.model import (
    RATE_FIELDS,
    STAT_FIELDS,
    Family,
    Protocol,
    Rates,
    RealServerRows,
    RealServerTable,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    Stats,
)

if TYPE_CHECKING:  # read by the --names file's reader (YAML), imported only with one
    from lvsprobe.exporter.names import ServiceNames

_FAMILY = {Family.INET: "inet", Family.INET6: "inet6"}
_ZERO_LT = (0).__lt__
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
# of the rows that have its columns (the counters come together, as do the rates). By
# default, what the dashboards and alert rules query (README, "Series per real server").
_Columns = Callable[[RealServerTable], "tuple[Sequence[int | None], ...] | None"]
_QUERIED_STATS = ("connections", "incoming_bytes", "outgoing_bytes")
_PACKET_STATS = ("incoming_packets", "outgoing_packets")


def _stat_columns(
    table: RealServerTable, names: tuple[str, ...]
) -> tuple[Sequence[int | None], ...] | None:
    """The counters `names` (of _STAT_FIELDS) of a table that has stats."""
    if table.stats is None:
        return None
    return tuple(table.stats[_STAT_FIELDS.index(name)] for name in names)


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
        lambda t: _stat_columns(t, _QUERIED_STATS),
        tuple(f"ipvs_backend_{name}_total" for name in _QUERIED_STATS),
    ),
)
# What nothing queries, exported with --collector.backends.extra only.
_EXTRA_ROWS: tuple[tuple[_Columns, tuple[str, ...]], ...] = (
    (
        lambda t: None if t.lower_thresholds is None else (t.lower_thresholds,),
        ("ipvs_backend_lower_threshold_connections",),
    ),
    (
        lambda t: _stat_columns(t, _PACKET_STATS),
        tuple(f"ipvs_backend_{name}_total" for name in _PACKET_STATS),
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
    # The packet counters and the lower connection threshold: three series per real server
    # no dashboard or alert rule reads; off by default.
    backend_extra: bool = False


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
    """Per-service and per-real-server families from `Snapshot.services`.

    Each family gets its samples in bulk (lists extended from columns), not one call per
    sample: a kube-proxy node has 10^4 services and 10^5 real servers.
    """

    source = "services"

    def __init__(self, options: ServiceOptions, budget: Budget, labels: BackendLabels) -> None:
        self.options = options
        self.budget = budget
        # The real servers' label blocks from the last scrape (the Scraper's, per namespace).
        self.labels = labels

    def collect(self, snap: Snapshot, out: Builder) -> None:
        allows = self.options.service_filter.allows_key
        seen: set[str] = set()
        services: list[Service] = []
        pairs_of: list[str] = []
        for svc in snap.services:
            if not allows(svc.key):
                continue
            pairs = service_pairs(svc.key, service_family(svc))
            # An fwmark service from procfs has no family; should two then look alike, the
            # second would duplicate series, which Prometheus rejects.
            if pairs not in seen:
                seen.add(pairs)
                services.append(svc)
                pairs_of.append(pairs)
        self._services(services, pairs_of, out)
        self._backends(pairs_of, [self._kept(svc) for svc in services], out)

    def _services(self, services: list[Service], pairs_of: list[str], out: Builder) -> None:
        blocks = list(map(out.block, pairs_of))
        infos = [
            out.block(
                f"{pairs},"
                + _info_pairs(
                    svc.scheduler, svc.flags, svc.persistence is not None, svc.pe_name or ""
                )
            )
            for svc, pairs in zip(services, pairs_of, strict=True)
        ]
        out.extend("ipvs_service_info", infos, repeat(1, len(infos)))
        if self.options.names is not None:
            lookup = self.options.names.lookup
            names = [
                (pairs, name)
                for svc, pairs in zip(services, pairs_of, strict=True)
                if (name := lookup(svc.key)) is not None
            ]
            out.extend(
                "ipvs_service_name_info",
                [out.block(f'{pairs},name="{escape_label_value(name)}"') for pairs, name in names],
                repeat(1, len(names)),
            )
        timeouts = [
            (block, svc.persistence.timeout_s)
            for svc, block in zip(services, blocks, strict=True)
            if svc.persistence is not None and svc.persistence.timeout_s is not None
        ]
        out.extend(
            "ipvs_service_persistence_timeout_seconds",
            [block for block, _ in timeouts],
            [timeout_s for _, timeout_s in timeouts],
        )
        rows = [svc.real_servers for svc in services]
        out.extend("ipvs_service_backends", blocks, map(len, rows))
        usable = [sum(map(_ZERO_LT, rss.weights)) for rss in rows]  # weight > 0, C-level
        out.extend("ipvs_service_usable_backends", blocks, usable)
        add_stats_of(
            out,
            "ipvs_service_",
            blocks,
            [svc.stats for svc in services],
            [svc.rates for svc in services],
        )

    def _backends(self, pairs_of: list[str], kept: list[RealServerRows], out: Builder) -> None:
        """The families of the real servers of all services at once.

        The hot part of a kube-proxy node's scrape (10^5 real servers): the families' values
        are the real servers' columns themselves (`RealServerTable.concat`, the snapshot's
        own table unless a filter or cap cut it), not copies, and a label block is its
        service's head and its own tail, which `BackendLabels` makes only for real servers
        that changed since the last scrape.
        """
        lead = "{" + (out.prefix + "," if out.prefix else "")
        heads = [f'{lead}{pairs},backend_address="'.encode() for pairs in pairs_of]
        counts = list(map(len, kept))
        table = RealServerTable.concat(kept)
        tails = self.labels.tails(heads, counts, table)
        row_heads = list(repeated(heads, counts))
        out.add_rows(
            _BACKEND_ROWS,
            row_heads,
            tails,
            (table.weights, table.active_conns, table.inactive_conns),
        )
        groups = [*_NETLINK_ROWS]
        if self.options.backend_extra:
            groups += _EXTRA_ROWS
        if self.options.backend_rates:
            groups.append(_RATE_ROWS)
        for columns_of, names in groups:
            columns = columns_of(table)
            if columns is None:
                continue
            present = columns[0]
            if present.count(None):
                has = list(map(is_not, present, repeat(None)))
                out.add_rows(
                    names,
                    list(compress(row_heads, has)),
                    list(compress(tails, has)),
                    [list(compress(cast(list[int], column), has)) for column in columns],
                )
            else:  # no None: checked
                out.add_rows(names, row_heads, tails, cast(tuple[list[int], ...], columns))

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


assert BACKEND_LABELS[len(SERVICE_LABELS) :] == ("backend_address", "backend_port", "forward")

_STAT_VALUES = attrgetter("conns", "in_pkts", "out_pkts", "in_bytes", "out_bytes")
_RATE_VALUES = attrgetter(
    "conns_per_s", "in_pkts_per_s", "out_pkts_per_s", "in_bytes_per_s", "out_bytes_per_s"
)


def add_stats(
    out: Builder, prefix: str, block: str, stats: Stats | None, rates: Rates | None
) -> None:
    """The five counters and five rates of a stats block, each when present."""
    add_stats_of(out, prefix, [block], [stats], [rates])


def add_stats_of(
    out: Builder,
    prefix: str,
    blocks: Sequence[str],
    stats: Sequence[Stats | None],
    rates: Sequence[Rates | None],
) -> None:
    """The counters and rates of many stats blocks (one label block each), column by column;
    a row without its stats or rates has no sample in their families."""
    for records, values_of, suffix in (
        (stats, _STAT_VALUES, "_total"),
        (rates, _RATE_VALUES, "_per_second"),
    ):
        has = list(map(is_not, records, repeat(None)))
        if not any(has):
            continue
        kept_blocks = list(compress(blocks, has))
        columns = zip(*map(values_of, compress(records, has)), strict=True)
        for fld, column in zip(_STAT_FIELDS, columns, strict=True):
            out.extend(f"{prefix}{fld}{suffix}", kept_blocks, column)
