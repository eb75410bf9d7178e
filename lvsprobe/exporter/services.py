"""Collector for virtual services and real servers (netlink dumps or /proc/net/ip_vs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from ipaddress import IPv4Address
from operator import attrgetter
from socket import inet_ntoa

from lvsprobe.exporter.filters import ServiceFilter
from lvsprobe.exporter.metrics import BACKEND_LABELS, SERVICE_LABELS
from lvsprobe.exporter.names import ServiceNames
from lvsprobe.exporter.render import Builder, escape_label_value, label_pairs
from lvsprobe.model import (
    Family,
    Forward,
    Protocol,
    Rates,
    RealServer,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    Stats,
)

_FAMILY = {Family.INET: "inet", Family.INET6: "inet6"}
# The int an IPv4Address holds, read from its slot: `packed` and int() run Python code.
_IPV4_INT = attrgetter("_ip")
_FORWARD = {fwd: fwd.label for fwd in Forward}
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


@dataclass
class Budget:
    """The --collector.backends.max-series cap, shared by every namespace of one scrape."""

    remaining: int | None  # None: no cap
    dropped: int = 0


@dataclass
class ServiceOptions:
    service_filter: ServiceFilter = field(default_factory=ServiceFilter)
    names: ServiceNames | None = None


def service_family(svc: Service) -> str:
    """inet/inet6; an fwmark service read from procfs has none, so its real servers tell."""
    if svc.key.family is not None:
        return _FAMILY[svc.key.family]
    versions = {rs.address.version for rs in svc.real_servers}
    return ("inet" if 4 in versions else "inet6") if len(versions) == 1 else ""


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
        for svc in snap.services:
            if not allows(svc.key):
                continue
            pairs = service_pairs(svc.key, service_family(svc))
            # An fwmark service from procfs has no family; should two then look alike, the
            # second would duplicate series, which Prometheus rejects.
            if pairs not in seen:
                seen.add(pairs)
                self._service(svc, pairs, out)

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
            "ipvs_service_usable_backends", block, sum(rs.weight > 0 for rs in svc.real_servers)
        )
        add_stats(out, "ipvs_service_", block, svc.stats, svc.rates)
        self._backends(svc, pairs, out)

    def _backends(self, svc: Service, pairs: str, out: Builder) -> None:
        # The hot loop of a kube-proxy node (10^5 real servers): one label block per real
        # server, built by hand, appended straight to the three families every backend has.
        blocks, (weights, actives, inactives) = out.rows(_BACKEND_ROWS)
        add_block, weight, active, inactive = (
            blocks.append,
            weights.append,
            actives.append,
            inactives.append,
        )
        rss = svc.real_servers
        budget = self.budget
        if budget.remaining is not None:
            kept = max(0, min(len(rss), budget.remaining))
            budget.dropped += len(rss) - kept
            budget.remaining -= kept
            rss = rss[:kept]
        head = "{" + (out.prefix + "," if out.prefix else "") + pairs + ',backend_address="'
        for rs in rss:
            addr = rs.address
            text = (
                inet_ntoa(_IPV4_INT(addr).to_bytes(4)) if type(addr) is IPv4Address else str(addr)
            )
            block = f'{head}{text}",backend_port="{rs.port}",forward="{_FORWARD[rs.forward]}"}}'
            add_block(block)
            weight(rs.weight)
            active(rs.active_conns)
            inactive(rs.inactive_conns)
            # Fields only a netlink dump gives: all None from /proc.
            if (
                rs.stats is not None
                or rs.rates is not None
                or rs.persistent_conns is not None
                or rs.upper_threshold is not None
                or rs.lower_threshold is not None
            ):
                _netlink_only(out, block, rs)


def _netlink_only(out: Builder, block: str, rs: RealServer) -> None:
    """A real server's families that only a netlink dump fills."""
    if rs.persistent_conns is not None:
        out.add("ipvs_backend_persistent_connections", block, rs.persistent_conns)
    if rs.upper_threshold is not None:
        out.add("ipvs_backend_upper_threshold_connections", block, rs.upper_threshold)
    if rs.lower_threshold is not None:
        out.add("ipvs_backend_lower_threshold_connections", block, rs.lower_threshold)
    if rs.stats is not None or rs.rates is not None:
        add_stats(out, "ipvs_backend_", block, rs.stats, rs.rates)


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
