"""Collector for virtual services and real servers (netlink dumps or /proc/net/ip_vs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from ipaddress import IPv4Address
from itertools import chain, compress, islice, repeat
from operator import attrgetter
from socket import inet_ntoa
from typing import TYPE_CHECKING, TypeVar

from lvsprobe.exporter.filters import ServiceFilter
from lvsprobe.exporter.metrics import BACKEND_LABELS, SERVICE_LABELS
from lvsprobe.exporter.names import ServiceNames
from lvsprobe.exporter.render import Builder, escape_label_value, label_pairs
from lvsprobe.model import (
    Family,
    Forward,
    IPAddress,
    Protocol,
    Rates,
    RealServer,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    Stats,
)
from lvsprobe.realserver_table import RealServerRows, RealServerTable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    U8 = npt.NDArray[np.uint8]

T = TypeVar("T")

_FAMILY = {Family.INET: "inet", Family.INET6: "inet6"}
# The int an IPv4Address or IPv6Address holds, read from its slot: `packed` and int() run
# Python code.
address_number = attrgetter("_ip")
_ADDRESS, _PORT, _FORWARD_OF = attrgetter("address"), attrgetter("port"), attrgetter("forward")
_WEIGHT, _ACTIVE = attrgetter("weight"), attrgetter("active_conns")
_INACTIVE = attrgetter("inactive_conns")
_ZERO_LT = (0).__lt__
_NETLINK_ONLY = attrgetter(
    "persistent_conns", "upper_threshold", "lower_threshold", "stats", "rates"
)
_NO_NETLINK = (None,) * 5
# Below this many real servers, addresses go to text one by one (numpy is not imported).
_NUMPY_MIN_ADDRESSES = 4096
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
    if isinstance(svc.real_servers, RealServerRows) and svc.real_servers:
        return "inet"  # table rows are IPv4 (and made no objects)
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
        kept: list[tuple[str, Sequence[RealServer]]] = []
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
            sum(map(_ZERO_LT, _weights(svc.real_servers))),  # weight > 0, C-level
        )
        add_stats(out, "ipvs_service_", block, svc.stats, svc.rates)

    def _backends(self, kept: list[tuple[str, Sequence[RealServer]]], out: Builder) -> None:
        """The three families every real server has, for all services at once.

        The hot part of a kube-proxy node's scrape (10^5 real servers): the real servers are
        read column by column (`BackendColumns`), each step is one C-level map over a
        column (addresses to text by numpy for big tables), and one label block per real
        server is made and shared by the three families: its service's labels (a head
        shared by the service's real servers) and its own.
        """
        heads_of_rows, blocks, (weights, actives, inactives) = out.rows(_BACKEND_ROWS)
        lead = "{" + (out.prefix + "," if out.prefix else "")
        heads = [f'{lead}{pairs},backend_address="' for pairs, _ in kept]
        counts = [len(rss) for _, rss in kept]
        columns = BackendColumns.of(rss for _, rss in kept)
        head_of_each = repeated(heads, counts)
        first = len(blocks)
        # In parts: the address texts of a part are all held at once.
        for start in range(0, len(columns.ports), _PART):
            stop = start + _PART
            texts = address_texts(columns.addresses[start:stop])
            forwards = map(_FORWARD_LABELS.__getitem__, columns.forwards[start:stop])
            heads_of_rows.extend(islice(head_of_each, len(texts)))
            rows = zip(texts, columns.ports[start:stop], forwards, strict=True)
            blocks.extend(
                [f'{text}",backend_port="{port}",forward="{fwd}"}}' for text, port, fwd in rows]
            )
        weights.extend(columns.weights)
        actives.extend(columns.active_conns)
        inactives.extend(columns.inactive_conns)
        for index, rs in columns.netlink_only():
            _netlink_only(out, heads_of_rows[first + index] + blocks[first + index], rs)

    def _kept(self, svc: Service) -> Sequence[RealServer]:
        """The service's real servers within the --collector.backends cap (counting those
        dropped)."""
        rss = svc.real_servers
        budget = self.budget
        if budget.remaining is not None:
            kept = max(0, min(len(rss), budget.remaining))
            budget.dropped += len(rss) - kept
            budget.remaining -= kept
            rss = rss[:kept]
        return rss


def repeated(values: Iterable[T], counts: Iterable[int]) -> Iterator[T]:
    """Each value as many times as its count: a service's labels for each of its real
    servers (C-level, no loop per real server)."""
    return chain.from_iterable(map(repeat, values, counts))


def _weights(rss: Sequence[RealServer]) -> Iterable[int]:
    """The real servers' weights, from the column when they are table rows (no objects)."""
    if isinstance(rss, RealServerRows):
        return rss.table.weights[rss.start : rss.stop]
    return map(_WEIGHT, rss)


@dataclass
class BackendColumns:
    """The real servers of many services as columns, in order.

    Rows of a `RealServerTable` (/proc/net/ip_vs) are taken as slices of its columns, with
    each address as its int; real servers given as objects (netlink) are read by C-level
    maps, and only they can have the fields only netlink fills.
    """

    addresses: list[int | IPAddress]
    ports: list[int]
    forwards: list[Forward]
    weights: list[int]
    active_conns: list[int]
    inactive_conns: list[int]
    objects: list[tuple[int, list[RealServer]]]  # (first row, the objects) of object runs

    @classmethod
    def of(cls, groups: Iterable[Sequence[RealServer]]) -> BackendColumns:
        """The real servers of the groups (services' `real_servers`), in order."""
        columns = cls([], [], [], [], [], [], [])
        for run in _runs(groups):
            if isinstance(run, tuple):
                table, start, stop = run
                columns.addresses += table.address_numbers[start:stop]
                columns.ports += table.ports[start:stop]
                columns.forwards += table.forwards[start:stop]
                columns.weights += table.weights[start:stop]
                columns.active_conns += table.active_conns[start:stop]
                columns.inactive_conns += table.inactive_conns[start:stop]
            else:
                columns.objects.append((len(columns.ports), run))
                columns.addresses += map(_ADDRESS, run)
                columns.ports += map(_PORT, run)
                columns.forwards += map(_FORWARD_OF, run)
                columns.weights += map(_WEIGHT, run)
                columns.active_conns += map(_ACTIVE, run)
                columns.inactive_conns += map(_INACTIVE, run)
        return columns

    def netlink_only(self) -> Iterator[tuple[int, RealServer]]:
        """(row, real server) of those with a field only a netlink dump fills."""
        for first, run in self.objects:
            for index in compress(
                range(len(run)), map(_NO_NETLINK.__ne__, map(_NETLINK_ONLY, run))
            ):
                yield first + index, run[index]


def _runs(
    groups: Iterable[Sequence[RealServer]],
) -> Iterator[tuple[RealServerTable, int, int] | list[RealServer]]:
    """Consecutive groups merged: table rows that follow on (every service of a /proc
    table, unfiltered, is one run) and objects."""
    table: RealServerTable | None = None
    start = stop = 0
    objects: list[RealServer] = []
    for rss in groups:
        if isinstance(rss, RealServerRows):
            if objects:
                yield objects
                objects = []
            if rss.table is table and rss.start == stop:
                stop = rss.stop
                continue
            if table is not None:
                yield table, start, stop
            table, start, stop = rss.table, rss.start, rss.stop
        else:
            if table is not None:
                yield table, start, stop
                table = None
            objects += rss
    if table is not None:
        yield table, start, stop
    if objects:
        yield objects


def address_texts(addresses: Sequence[int | IPAddress]) -> list[str]:
    """Addresses (an int stands for an IPv4 one) as label text; a big list of IPv4 ones by
    numpy, as dotted quads.

    `str()` of an address runs Python code and socket.inet_ntoa costs ~0.5 µs a call: for
    10^5 real servers that is a tenth of the scrape. numpy writes every quad into one
    buffer, split into strings in C.
    """
    kinds = set(map(type, addresses))
    if len(addresses) < _NUMPY_MIN_ADDRESSES or not (kinds <= {int} or kinds <= {IPv4Address}):
        return list(map(_address_text, addresses))
    import numpy as np

    numbers = np.fromiter(
        addresses if int in kinds else map(address_number, addresses), np.uint32, len(addresses)
    )
    # Per row: four octets of 3 characters (NUL-padded) with "." after the first three and a
    # newline after the last; the NULs then go, and the newlines split the rows.
    chars = np.zeros((len(addresses), 16), np.uint8)
    for index, shift in enumerate((24, 16, 8, 0)):
        chars[:, 4 * index : 4 * index + 3] = _octet_chars()[(numbers >> shift) & 0xFF]
        chars[:, 4 * index + 3] = ord(".") if index < 3 else ord("\n")
    text = chars.tobytes().replace(b"\0", b"").decode("ascii")
    return text.split("\n")[:-1]


def _address_text(address: int | IPAddress) -> str:
    if type(address) is int:
        return inet_ntoa(address.to_bytes(4))
    if type(address) is IPv4Address:
        return inet_ntoa(address_number(address).to_bytes(4))
    return str(address)


@cache
def _octet_chars() -> U8:
    """The decimal digits of 0..255, left-aligned in 3 bytes, NUL-padded."""
    import numpy as np

    table = np.zeros((256, 3), np.uint8)
    for octet in range(256):
        digits = str(octet).encode()
        table[octet, : len(digits)] = np.frombuffer(digits, np.uint8)
    return table


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
