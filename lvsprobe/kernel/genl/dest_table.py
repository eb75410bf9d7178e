"""GET_DEST dump records straight into the columns of a `RealServerTable`.

A kube-proxy node's dumps carry 10^4–10^5 DEST records. Decoded one by one (an Attrs, a
RealServer, a Stats, a Rates and an address object each) they cost ~100 µs a real server
in Python. But every record one kernel sends has the same attributes in the same order and
sizes (ip_vs_genl_fill_dest): only the values differ. So the records of a dump are kept as
raw message bytes; those of one length are joined into one buffer, the layout of the first
(decoded exactly, so it is a valid record) is learned as byte offsets, every record's
attribute headers are compared with it at once (numpy), and each value is read for all
matching records as one strided column. A record that does not match (another layout) is
decoded exactly, and any error is reported as the exact decoder reports it: all records are
then decoded one by one, in order, and the first bad one raises.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, NamedTuple

from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl import ipvs
from lvsprobe.kernel.genl.attrs import nla_align
from lvsprobe.kernel.genl.columns import (
    RECORD_START,
    address_numbers,
    column,
    matching,
    record_values,
    walk_offsets,
)
from lvsprobe.kernel.genl.tables import (
    DEST_CODECS,
    FWD_MASK,
    STATS32_CODECS,
    CmdAttr,
    DestAttr,
    StatsAttr,
)
from lvsprobe.model import Family, Forward, RealServer, RealServerTable, TableBuilder

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_STATS_ORDER = tuple(StatsAttr)[:10]
_FORWARDS = tuple(Forward)
_FAMILIES = {int(family): family for family in Family}
# Records kept as bytes before they are decoded (~3 MB of 6.1's records).
FLUSH_RECORDS = 1 << 13
# Fewer records than this are decoded the exact way: as fast at that size, and with no numpy
# (the lab guest's agent runs stdlib-only, as `python -S`).
COLUMNAR_MIN_RECORDS = 64


class _Run(NamedTuple):
    """Records of one dump that follow on in one datagram, all of one message length (a
    NamedTuple: one is made per datagram read, a frozen dataclass costs several times as
    much to make)."""

    datagram: bytes
    start: int
    records: int  # how many
    length: int
    dump: int  # which dump (service) they belong to
    first_index: int  # the first one's 1-based place in its dump (for errors)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where one record's attribute headers and values are, as byte offsets in its message."""

    message: bytes  # the record it was learned from
    header_offsets: tuple[int, ...]
    values: dict[int, tuple[int, int]]  # DEST attribute type -> (offset, size)
    stats: tuple[tuple[int, int], ...] | None  # the ten stats values (offset, size)
    stats_wide: bool


class DestTableBuilder:
    """Collects the DEST records of many GET_DEST dumps, then makes one table of them."""

    def __init__(self) -> None:
        self._runs: list[_Run] = []  # records not decoded yet
        self._pending = 0  # how many
        self._decoded = TableBuilder()  # those decoded, in order, each batch added as it is
        self._families: list[Family | None] = []  # each dump's service family
        self._counts: list[int] = []  # records per dump

    def start_dump(self, service_family: Family | None) -> None:
        """A dump begins. The records of those before are decoded once there are enough,
        so that a read holds their bytes a few thousand at a time, not all at once."""
        if self._pending >= FLUSH_RECORDS:
            self._flush()
        self._families.append(service_family)
        self._counts.append(0)

    def add_run(self, datagram: bytes, start: int, count: int, length: int) -> None:
        """`count` records of `length` bytes at `start`, each at the aligned stride, all
        checked by the reader to be whole messages of the current dump."""
        dump = len(self._counts) - 1
        self._runs.append(_Run(datagram, start, count, length, dump, self._counts[dump] + 1))
        self._counts[dump] += count
        self._pending += count

    def dump_records(self) -> int:
        """How many records of the current dump have been added."""
        return self._counts[-1]

    def abandon_dump(self) -> None:
        """Forget the dump being read (it failed: its records are never decoded)."""
        dump = len(self._counts) - 1
        self._runs = [run for run in self._runs if run.dump != dump]
        self._pending = sum(run.records for run in self._runs)
        del self._counts[dump:], self._families[dump:]

    def build(self) -> tuple[RealServerTable, list[tuple[int, int]]]:
        """The table of every record, in order, and each dump's rows in it."""
        bounds, row = [], 0
        for count in self._counts:
            bounds.append((row, row + count))
            row += count
        self._flush()
        return self._decoded.build(), bounds

    def _flush(self) -> None:
        """Decode the pending records (earlier ones are decoded: the first error is theirs).
        The one place the strategy is chosen: columns for many records, else exact."""
        if self._pending < COLUMNAR_MIN_RECORDS:
            table = self._exact()
        else:
            try:
                table = self._columnar()
            except ParseError:
                table = self._exact()  # raises the first bad record's error, as one by one
        self._decoded.add_rows(table, 0, len(table))
        self._runs, self._pending = [], 0

    def _columnar(self) -> RealServerTable:
        """Runs grouped by message length, each group decoded column-wise, then the rows
        put back in arrival order (records of another layout decoded exactly in between)."""
        self._runs = _joined(self._runs)  # the datagrams go: their records are copied
        groups: dict[int, list[_Run]] = {}
        for run in self._runs:
            groups.setdefault(run.length, []).append(run)
        decoded = {length: self._group(length, runs) for length, runs in groups.items()}
        builder = TableBuilder()
        used = dict.fromkeys(groups, 0)  # rows of each group put back so far
        for run in self._runs:
            group = decoded[run.length]
            first = used[run.length]
            used[run.length] += run.records
            before = int(group.bad_before[first])
            if int(group.bad_before[first + run.records]) == before:
                table_row = first - before
                builder.add_rows(group.table, table_row, table_row + run.records)
                continue
            for row in range(first, first + run.records):
                if row in group.exact:
                    builder.add(group.exact[row])
                else:
                    table_row = row - int(group.bad_before[row])
                    builder.add_rows(group.table, table_row, table_row + 1)
        return builder.build()

    def _group(self, length: int, runs: list[_Run]) -> _Group:
        """The records of one message length: a table of those of the first one's layout,
        the others decoded exactly."""
        import numpy as np

        stride = nla_align(length)
        buf = runs[0].datagram  # the group's records, joined
        rows = len(buf) // stride
        first = runs[0]
        self._decode_one(first, first.start)  # a valid record: raises if it is not
        layout = _learn(buf[:length])
        families = [int(self._families[run.dump] or 0) for run in runs]
        service_families = np.repeat(np.array(families, np.int64), [run.records for run in runs])
        good = np.zeros(rows, bool)
        if layout is not None:
            good = _matching(buf, stride, rows, layout)
            good &= _valid(
                buf, stride, layout, _address_families(buf, stride, layout, service_families)
            )
        exact = {}
        bad = np.flatnonzero(~good).tolist()
        if bad:
            firsts = list(accumulate((run.records for run in runs), initial=0))
            for row in bad:
                place = bisect_right(firsts, row) - 1
                run = runs[place]
                exact[row] = self._decode_one(run, run.start + (row - firsts[place]) * stride)
        bad_before = np.concatenate(([0], np.cumsum(~good)))
        table = _EMPTY
        if layout is not None:
            table = _columns(buf, stride, layout, good, service_families)
        return _Group(table, exact, bad_before)

    def _exact(self) -> RealServerTable:
        builder = TableBuilder()
        for run in self._runs:
            stride = nla_align(run.length)
            for k in range(run.records):
                builder.add(self._decode_one(run, run.start + k * stride))
        return builder.build()

    def _decode_one(self, run: _Run, offset: int) -> RealServer:
        """One record the exact way (`ipvs.decode_dest`), with its place in its dump."""
        message = run.datagram[offset : offset + run.length]
        index = run.first_index + (offset - run.start) // nla_align(run.length)
        nest = ipvs.top_level(message[RECORD_START:], CmdAttr.DEST, index=index)
        return ipvs.decode_dest(nest, service_family=self._families[run.dump], index=index)


@dataclass(frozen=True, slots=True)
class _Group:
    table: RealServerTable  # the rows of the learned layout, in order
    exact: dict[int, RealServer]  # the others, by their row in the group
    bad_before: npt.NDArray[np.int64]  # how many of the group's rows before each are exact


def _joined(runs: list[_Run]) -> list[_Run]:
    """The runs, in order, moved into one buffer per message length, each record copied
    once at its stride (a datagram's last message may end without its padding: zeros are
    added). Then only the buffers hold the records, not the datagrams as well."""
    places: dict[int, list[int]] = {}
    for place, run in enumerate(runs):
        places.setdefault(run.length, []).append(place)
    moved = list(runs)
    for length, group in places.items():
        stride = nla_align(length)
        parts: list[bytes | memoryview] = []
        for place in group:
            run = runs[place]
            size = run.records * stride
            chunk = memoryview(run.datagram)[run.start : run.start + size]
            parts += (chunk,) if len(chunk) == size else (chunk, bytes(size - len(chunk)))
        buf, at = b"".join(parts), 0
        for place in group:
            run = runs[place]
            moved[place] = _Run(buf, at, run.records, length, run.dump, run.first_index)
            at += run.records * stride
    return moved


def _learn(message: bytes) -> _Layout | None:
    """The layout of a record message: every attribute header (top level, the DEST nest,
    its stats nests) and where the values `ipvs.decode_dest` reads are. The last of
    duplicate attributes counts, as in a walk. None when it is not a clean run of
    attributes (its records are then decoded exactly)."""
    headers: list[int] = []
    values = record_values(message, CmdAttr.DEST, headers)
    if values is None:
        return None
    nests = {}
    for attr_type in (DestAttr.STATS, DestAttr.STATS64):
        if attr_type in values:
            offset, size = values[attr_type]
            inner = walk_offsets(message, offset, offset + size, headers)
            if inner is None:
                return None
            nests[attr_type] = inner
    stats = None
    wide = DestAttr.STATS64 in nests
    nest = nests.get(DestAttr.STATS64 if wide else DestAttr.STATS)
    if nest is not None:
        if any(attr not in nest for attr in _STATS_ORDER):
            return None
        stats = tuple(nest[attr] for attr in _STATS_ORDER)
    return _Layout(message, tuple(headers), values, stats, wide)


def _matching(buf: bytes, stride: int, rows: int, layout: _Layout) -> npt.NDArray[np.bool_]:
    """Which records have every attribute header the layout has (hence the same walk)."""
    return matching(buf, stride, rows, layout.message, layout.header_offsets)


def _value(
    buf: bytes, stride: int, layout: _Layout, attr: DestAttr
) -> npt.NDArray[np.uint64] | None:
    """A DEST attribute of every record by its codec, or None when the layout has none."""
    place = layout.values.get(attr)
    if place is None:
        return None
    return column(buf, stride, place[0], DEST_CODECS[attr])


def _address_families(
    buf: bytes, stride: int, layout: _Layout, service_families: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """ADDR_FAMILY where sent (~3.18+), else the family of the service dumped."""
    reported = _value(buf, stride, layout, DestAttr.ADDR_FAMILY)
    return service_families if reported is None else reported.astype(service_families.dtype)


def _valid(
    buf: bytes, stride: int, layout: _Layout, families: npt.NDArray[np.int64]
) -> npt.NDArray[np.bool_]:
    """Records whose values the exact decoder takes: a forwarding method and address family
    it knows (the others are left to it, to say what is wrong)."""
    forwards = _value(buf, stride, layout, DestAttr.FWD_METHOD)
    assert forwards is not None  # decode_dest needs it; the layout is of a valid record
    known_family = (families == Family.INET) | (families == Family.INET6)
    return known_family & ((forwards & FWD_MASK) < len(_FORWARDS))


def _columns(
    buf: bytes,
    stride: int,
    layout: _Layout,
    good: npt.NDArray[np.bool_],
    service_families: npt.NDArray[np.int64],
) -> RealServerTable:
    """The table of the good records, each column read for all records at once."""

    def required(attr: DestAttr) -> list[int]:
        values = _value(buf, stride, layout, attr)
        assert values is not None  # decode_dest needs it; the layout is of a valid record
        return values[good].tolist()

    def optional(attr: DestAttr) -> list[int | None] | None:
        values = _value(buf, stride, layout, attr)
        return None if values is None else values[good].tolist()

    families = _address_families(buf, stride, layout, service_families)[good]
    numbers = address_numbers(buf, stride, layout.values[DestAttr.ADDR][0], families, good)
    tunnels = None
    tun_type = optional(DestAttr.TUN_TYPE)
    if tun_type is not None:
        # TUN_PORT and TUN_FLAGS missing read as 0, as decode_dest reads them
        zeros: list[int | None] = [0] * len(tun_type)
        tunnels = (
            tun_type,
            optional(DestAttr.TUN_PORT) or zeros,
            optional(DestAttr.TUN_FLAGS) or zeros,
        )
    stats = None
    if layout.stats is not None:
        stats = tuple(
            column(buf, stride, offset, None if layout.stats_wide else STATS32_CODECS[attr])[
                good
            ].tolist()
            for attr, (offset, _size) in zip(_STATS_ORDER, layout.stats, strict=True)
        )
    address_families = list(map(_FAMILIES.__getitem__, families.tolist()))
    reported = DestAttr.ADDR_FAMILY in layout.values
    forwards = _value(buf, stride, layout, DestAttr.FWD_METHOD)
    assert forwards is not None  # decode_dest needs it; the layout is of a valid record
    return RealServerTable(
        address_families=address_families,
        address_numbers=numbers,
        ports=required(DestAttr.PORT),
        forwards=list(map(_FORWARDS.__getitem__, (forwards[good] & FWD_MASK).tolist())),
        weights=required(DestAttr.WEIGHT),
        active_conns=required(DestAttr.ACTIVE_CONNS),
        inactive_conns=required(DestAttr.INACT_CONNS),
        families=None if reported else [None] * len(address_families),
        persistent_conns=optional(DestAttr.PERSIST_CONNS),
        upper_thresholds=optional(DestAttr.U_THRESH),
        lower_thresholds=optional(DestAttr.L_THRESH),
        stats=stats,
        tunnels=tunnels,
    )


_EMPTY = RealServerTable([], [], [], [], [], [], [])
