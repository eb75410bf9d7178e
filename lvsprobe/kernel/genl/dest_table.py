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

from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, TypeVar

from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl import ipvs
from lvsprobe.kernel.genl.attrs import nla_align
from lvsprobe.kernel.genl.columns import (
    RECORD_START,
    address_numbers,
    column,
    compact,
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
_STATS32 = tuple(STATS32_CODECS[attr] for attr in _STATS_ORDER)
_FORWARDS = tuple(Forward)
_FAMILIES = {int(family): family for family in Family}
T = TypeVar("T")
# Records kept as bytes before they are decoded (~3 MB of 6.1's records).
FLUSH_RECORDS = 1 << 13
# Fewer records than this are decoded the exact way: as fast at that size, and with no numpy
# (the lab guest's agent runs stdlib-only, as `python -S`).
COLUMNAR_MIN_RECORDS = 64


# Records of one dump that follow on in one datagram (or, once joined, in the buffer of
# their length), all of one message length: (datagram, start, records, length, dump), the
# dump being the service's place in the read. A plain tuple: one is made per datagram read.
_Run = tuple[bytes, int, int, int, int]


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
        self._first_indexes: list[int] | None = None  # of each run: see _first_index
        # The layout of each message length, learned from a record decoded exactly in an
        # earlier batch: a later batch whose first record has its headers uses it as is.
        self._layouts: dict[int, _Layout] = {}

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
        self._runs.append((datagram, start, count, length, dump))
        self._counts[dump] += count
        self._pending += count

    def dump_records(self) -> int:
        """How many records of the current dump have been added."""
        return self._counts[-1]

    def abandon_dump(self) -> None:
        """Forget the dump being read (it failed: its records are never decoded)."""
        dump = len(self._counts) - 1
        self._runs = [run for run in self._runs if run[4] != dump]
        self._pending = sum(run[2] for run in self._runs)
        del self._counts[dump:], self._families[dump:]

    def build(self) -> tuple[RealServerTable, list[int]]:
        """The table of every record, in order, and how many rows each dump has in it."""
        self._flush()
        return self._decoded.build(), self._counts

    def _flush(self) -> None:
        """Decode the pending records (earlier ones are decoded: the first error is theirs).
        The one place the strategy is chosen: columns for many records, else exact."""
        self._first_indexes = None
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
        runs = self._runs
        groups: dict[int, list[int]] = {}  # message length -> places of its runs
        lengths = {run[3] for run in runs}
        if len(lengths) == 1:
            groups[lengths.pop()] = list(range(len(runs)))
        else:
            for place, run in enumerate(runs):
                groups.setdefault(run[3], []).append(place)
        self._runs = _joined(runs, groups)  # the datagrams go: their records are copied
        decoded = {length: self._group(length, places) for length, places in groups.items()}
        if len(decoded) == 1:
            (only,) = decoded.values()
            if not only.exact:  # the usual batch: its one group's rows are in arrival order
                return only.table
        builder = TableBuilder()
        used = dict.fromkeys(groups, 0)  # rows of each group put back so far
        for _buf, _start, records, length, _dump in self._runs:
            group = decoded[length]
            first = used[length]
            used[length] += records
            before = int(group.bad_before[first])
            if int(group.bad_before[first + records]) == before:
                table_row = first - before
                builder.add_rows(group.table, table_row, table_row + records)
                continue
            for row in range(first, first + records):
                if row in group.exact:
                    builder.add(group.exact[row])
                else:
                    table_row = row - int(group.bad_before[row])
                    builder.add_rows(group.table, table_row, table_row + 1)
        return builder.build()

    def _group(self, length: int, places: list[int]) -> _Group:
        """The records of one message length (the runs at `places`, joined): a table of
        those of the first one's layout, the others decoded exactly."""
        import numpy as np

        stride = nla_align(length)
        runs = [self._runs[place] for place in places]
        buf = runs[0][0]  # the group's records, joined
        rows = len(buf) // stride
        layout = self._layouts.get(length)
        if layout is None or not _same_headers(buf, layout):
            self._decode_one(places[0], 0)  # a valid record: raises if it is not
            layout = _learn(buf[:length])
            if layout is not None:
                self._layouts[length] = layout
        families = [int(self._families[run[4]] or 0) for run in runs]
        service_families = np.repeat(np.array(families, np.int64), [run[2] for run in runs])
        good = np.zeros(rows, bool)
        if layout is not None:
            good = _matching(buf, stride, rows, layout)
            good &= _valid(
                buf, stride, layout, _address_families(buf, stride, layout, service_families)
            )
        exact = {}
        bad = np.flatnonzero(~good).tolist()
        if bad:
            firsts = list(accumulate((run[2] for run in runs), initial=0))
            for row in bad:
                place = bisect_right(firsts, row) - 1
                exact[row] = self._decode_one(places[place], row - firsts[place])
        bad_before = np.concatenate(([0], np.cumsum(~good)))
        table = _EMPTY
        if layout is not None:
            table = _columns(buf, stride, layout, good, service_families)
        return _Group(table, exact, bad_before)

    def _exact(self) -> RealServerTable:
        builder = TableBuilder()
        for place, run in enumerate(self._runs):
            for record in range(run[2]):
                builder.add(self._decode_one(place, record))
        return builder.build()

    def _decode_one(self, place: int, record: int) -> RealServer:
        """The `record`-th record of the run at `place` the exact way (`ipvs.decode_dest`),
        with its place in its dump."""
        buf, start, _records, length, dump = self._runs[place]
        offset = start + record * nla_align(length)
        message = buf[offset : offset + length]
        index = self._first_index(place) + record
        nest = ipvs.top_level(message[RECORD_START:], CmdAttr.DEST, index=index)
        return ipvs.decode_dest(nest, service_family=self._families[dump], index=index)

    def _first_index(self, place: int) -> int:
        """The 1-based place in its dump of the first record of the run at `place` (errors
        name it; worked out for all runs when first asked: a dump's runs are all pending)."""
        if self._first_indexes is None:
            seen: dict[int, int] = {}
            self._first_indexes = []
            for _buf, _start, records, _length, dump in self._runs:
                before = seen.get(dump, 0)
                self._first_indexes.append(before + 1)
                seen[dump] = before + records
        return self._first_indexes[place]


@dataclass(frozen=True, slots=True)
class _Group:
    table: RealServerTable  # the rows of the learned layout, in order
    exact: dict[int, RealServer]  # the others, by their row in the group
    bad_before: npt.NDArray[np.int64]  # how many of the group's rows before each are exact


def _joined(runs: list[_Run], groups: dict[int, list[int]]) -> list[_Run]:
    """The runs, in order, moved into one buffer per message length (`groups`: the places
    of each length's runs), each record copied once at its stride (a datagram's last
    message may end without its padding: zeros are added). Then only the buffers hold the
    records, not the datagrams as well."""
    moved = list(runs)
    for length, places in groups.items():
        stride = nla_align(length)
        parts: list[bytes | memoryview] = []
        for place in places:
            datagram, start, records, _length, _dump = runs[place]
            size = records * stride
            if start == 0 and len(datagram) == size:  # the usual run: the whole datagram
                parts.append(datagram)
                continue
            chunk = memoryview(datagram)[start : start + size]
            parts += (chunk,) if len(chunk) == size else (chunk, bytes(size - len(chunk)))
        buf, at = b"".join(parts), 0
        for place in places:
            _datagram, _start, records, _length, dump = runs[place]
            moved[place] = (buf, at, records, length, dump)
            at += records * stride
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


def _same_headers(buf: bytes, layout: _Layout) -> bool:
    """Whether the first record in `buf` has every attribute header the layout has."""
    learned = layout.message
    return all(buf[at : at + 4] == learned[at : at + 4] for at in layout.header_offsets)


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
    """The table of the good records, each column read for all records at once and kept
    `compact`: ints are made only for the values a consumer reads."""
    select = None if good.all() else good

    def selected(values: npt.NDArray[np.integer]) -> npt.NDArray[np.integer]:
        return values if select is None else values[select]

    def required(attr: DestAttr) -> Sequence[int]:
        values = _value(buf, stride, layout, attr)
        assert values is not None  # decode_dest needs it; the layout is of a valid record
        return compact(selected(values))

    def optional(attr: DestAttr) -> Sequence[int] | None:
        values = _value(buf, stride, layout, attr)
        return None if values is None else compact(selected(values))

    families = selected(_address_families(buf, stride, layout, service_families))
    numbers = address_numbers(buf, stride, layout.values[DestAttr.ADDR][0], families, select)
    tunnels = None
    tun_type = optional(DestAttr.TUN_TYPE)
    if tun_type is not None:
        # TUN_PORT and TUN_FLAGS missing read as 0, as decode_dest reads them
        zeros = array("Q", bytes(8 * len(tun_type)))
        tunnels = (
            tun_type,
            optional(DestAttr.TUN_PORT) or zeros,
            optional(DestAttr.TUN_FLAGS) or zeros,
        )
    stats = None
    if layout.stats is not None:
        stats = tuple(
            compact(selected(column(buf, stride, offset, None if layout.stats_wide else codec)))
            for codec, (offset, _size) in zip(_STATS32, layout.stats, strict=True)
        )
    address_families = _members(_FAMILIES.__getitem__, families)
    reported = DestAttr.ADDR_FAMILY in layout.values
    forwards = _value(buf, stride, layout, DestAttr.FWD_METHOD)
    assert forwards is not None  # decode_dest needs it; the layout is of a valid record
    return RealServerTable(
        address_families=address_families,
        address_numbers=numbers,
        ports=required(DestAttr.PORT),
        forwards=_members(_FORWARDS.__getitem__, selected(forwards) & FWD_MASK),
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


def _members(member_of: Callable[[int], T], values: npt.NDArray[np.integer]) -> list[T]:
    """The enum member of each value; one look-up for the whole column when every value is
    the same (as a column of families or forwarding methods usually is)."""
    if not len(values):
        return []
    first = int(values[0])
    if (values == first).all():
        return [member_of(first)] * len(values)
    return list(map(member_of, values.tolist()))


_EMPTY = RealServerTable([], [], [], [], [], [], [])
