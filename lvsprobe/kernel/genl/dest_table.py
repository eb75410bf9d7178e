"""GET_DEST dump records straight into the columns of a `RealServerTable`.

A kube-proxy node's dumps carry 10^4–10^5 DEST records. Decoded one by one (an Attrs, a
RealServer, a Stats, a Rates and an address object each) they cost ~100 µs a real server
in Python. But every record one kernel sends has the same attributes in the same order and
sizes (ip_vs_genl_fill_dest): only the values differ. So the records of a dump are copied,
as their datagram comes, into one buffer per message length (the datagram is then let go);
the layout of the first (decoded exactly, so it is a valid record) is learned as byte
offsets, every record's attribute headers are compared with it at once (`columns`), and
each value is read for all matching records as one strided column. A record that does not
match (another layout) is decoded exactly, and any error is reported as the exact decoder
reports it: all records are then decoded one by one, in order, and the first bad one raises.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl import ipvs
from lvsprobe.kernel.genl.attrs import U64, nla_align
from lvsprobe.kernel.genl.columns import (
    RECORD_START,
    address_numbers,
    byte_flags,
    column,
    differing,
    flagged,
    header_flags,
    low_byte,
    record_values,
    typecode_of,
    walk_offsets,
    without,
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

_STATS_ORDER = tuple(StatsAttr)[:10]
_STATS32 = tuple(STATS32_CODECS[attr] for attr in _STATS_ORDER)
_FORWARDS = tuple(Forward)
_FAMILIES = {int(family): family for family in Family}
# Per byte value: the forwarding method it gives (its FWD_MASK bits), whether that is one
# decode_dest knows not, whether it is no address family decode_dest knows.
_FORWARD_OF = bytes(value & FWD_MASK for value in range(256))
_UNKNOWN_FORWARD = bytes(int(value & FWD_MASK >= len(_FORWARDS)) for value in range(256))
_UNKNOWN_FAMILY = bytes(int(value not in _FAMILIES) for value in range(256))
T = TypeVar("T")
# Records kept as bytes before they are decoded (a batch's buffer: ~0.4 MB of 6.1's records).
# 8192 cost the same CPU and 3 MB more peak at 20k real servers (8 MB at 10^5).
FLUSH_RECORDS = 1 << 11
# Fewer records than this are decoded the exact way: as fast at that size.
COLUMNAR_MIN_RECORDS = 64


# Records of one dump that followed on in one datagram, all of one message length, as
# copied into the pending buffer of their length: (length, first row there, records, dump),
# the dump being the service's place in the read. A plain tuple: one is made per datagram.
_Run = tuple[int, int, int, int]


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
        self._pending: dict[int, list[bytes]] = {}  # their runs' bytes, by message length
        self._pending_rows: dict[int, int] = {}  # how many records each length has there
        self._pending_records = 0
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
        if self._pending_records >= FLUSH_RECORDS:
            self._flush()
        self._families.append(service_family)
        self._counts.append(0)

    def add_run(self, datagram: bytes, start: int, count: int, length: int) -> None:
        """`count` records of `length` bytes at `start`, each at the aligned stride, all
        checked by the reader to be whole messages of the current dump."""
        stride = nla_align(length)
        parts = self._pending.get(length)
        if parts is None:
            parts = self._pending[length] = []
            self._pending_rows[length] = 0
        dump = len(self._counts) - 1
        self._runs.append((length, self._pending_rows[length], count, dump))
        self._pending_rows[length] += count
        if start == 0 and len(datagram) == count * stride:  # the usual run: all of it
            parts.append(datagram)
        else:  # a datagram's last message may end without its padding: zeros are added
            chunk = datagram[start : start + count * stride]
            parts.append(chunk + bytes(count * stride - len(chunk)))
        self._counts[dump] += count
        self._pending_records += count

    def dump_records(self) -> int:
        """How many records of the current dump have been added."""
        return self._counts[-1]

    def abandon_dump(self) -> None:
        """Forget the dump being read (it failed: its records are never decoded). Its runs
        are the last ones, so its records end each pending buffer."""
        dump = len(self._counts) - 1
        while self._runs and self._runs[-1][3] == dump:
            length, _first, records, _dump = self._runs.pop()
            self._pending[length].pop()
            self._pending_rows[length] -= records
            self._pending_records -= records
        del self._counts[dump:], self._families[dump:]

    def build(self) -> tuple[RealServerTable, list[int]]:
        """The table of every record, in order, and how many rows each dump has in it."""
        self._flush()
        return self._decoded.build(), self._counts

    def _flush(self) -> None:
        """Decode the pending records (earlier ones are decoded: the first error is theirs).
        The one place the strategy is chosen: columns for many records, else exact."""
        self._first_indexes = None
        if self._pending_records < COLUMNAR_MIN_RECORDS:
            table = self._exact()
        else:
            try:
                table = self._columnar()
            except ParseError:
                table = self._exact()  # raises the first bad record's error, as one by one
        self._decoded.add_rows(table, 0, len(table))
        self._runs, self._pending, self._pending_rows, self._pending_records = [], {}, {}, 0

    def _columnar(self) -> RealServerTable:
        """Each length's records decoded column-wise, then the rows put back in arrival
        order (records of another layout decoded exactly in between)."""
        decoded = {length: self._group(length) for length in self._pending}
        if len(decoded) == 1:
            (only,) = decoded.values()
            if not only.exact:  # the usual batch: its one group's rows are in arrival order
                return only.table
        builder = TableBuilder()
        for length, first, records, _dump in self._runs:
            group = decoded[length]
            before = bisect_left(group.bad, first)
            if bisect_left(group.bad, first + records) == before:
                builder.add_rows(group.table, first - before, first + records - before)
                continue
            for row in range(first, first + records):
                if row in group.exact:
                    builder.add(group.exact[row])
                else:
                    table_row = row - bisect_left(group.bad, row)
                    builder.add_rows(group.table, table_row, table_row + 1)
        return builder.build()

    def _group(self, length: int) -> _Group:
        """The records of one message length: a table of those of the first one's layout,
        the others decoded exactly."""
        stride = nla_align(length)
        buf = self._records(length)
        rows = len(buf) // stride
        places = [place for place, run in enumerate(self._runs) if run[0] == length]
        firsts = [self._runs[place][1] for place in places]

        def decode(row: int) -> RealServer:
            place = places[bisect_right(firsts, row) - 1]
            return self._decode_one(place, row - self._runs[place][1], buf)

        layout = self._layouts.get(length)
        if layout is None or not _same_headers(buf, layout):
            decode(0)  # a valid record: raises if it is not
            layout = _learn(bytes(buf[:length]))
            if layout is not None:
                self._layouts[length] = layout
        families = b"".join(
            bytes((int(self._families[self._runs[place][3]] or 0),)) * self._runs[place][2]
            for place in places
        )
        if layout is None:
            bad = list(range(rows))
        else:
            flags = header_flags(buf, stride, layout.message, layout.header_offsets)
            bad = flagged(flags | _invalid(buf, stride, layout, families), rows)
        exact = {row: decode(row) for row in bad}
        if layout is None or len(bad) == rows:
            return _Group(_EMPTY, exact, bad)
        if bad:
            buf = without(buf, stride, bad)
            families = without(families, 1, bad)
        return _Group(_columns(buf, stride, layout, families), exact, bad)

    def _exact(self) -> RealServerTable:
        builder = TableBuilder()
        for place, (length, _first, records, _dump) in enumerate(self._runs):
            for record in range(records):
                builder.add(self._decode_one(place, record, self._records(length)))
        return builder.build()

    def _records(self, length: int) -> bytes:
        """The pending records of `length` at their stride in one buffer, which then holds
        them instead of their datagrams (joined when first asked)."""
        parts = self._pending[length]
        if len(parts) != 1:
            parts[:] = [b"".join(parts)]
        return parts[0]

    def _decode_one(self, place: int, record: int, buf: bytes) -> RealServer:
        """The `record`-th record of the run at `place` the exact way (`ipvs.decode_dest`),
        with its place in its dump; `buf`: the pending records of its length."""
        length, first, _records, dump = self._runs[place]
        offset = (first + record) * nla_align(length)
        message = bytes(buf[offset : offset + length])
        index = self._first_index(place) + record
        nest = ipvs.top_level(message[RECORD_START:], CmdAttr.DEST, index=index)
        return ipvs.decode_dest(nest, service_family=self._families[dump], index=index)

    def _first_index(self, place: int) -> int:
        """The 1-based place in its dump of the first record of the run at `place` (errors
        name it; worked out for all runs when first asked: a dump's runs are all pending)."""
        if self._first_indexes is None:
            seen: dict[int, int] = {}
            self._first_indexes = []
            for _length, _first, records, dump in self._runs:
                before = seen.get(dump, 0)
                self._first_indexes.append(before + 1)
                seen[dump] = before + records
        return self._first_indexes[place]


@dataclass(frozen=True, slots=True)
class _Group:
    table: RealServerTable  # the rows of the learned layout, in order
    exact: dict[int, RealServer]  # the others, by their row in the group
    bad: list[int]  # their rows, in order


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


def _address_families(
    buf: bytes, stride: int, layout: _Layout, service_families: bytes
) -> tuple[bytes, int]:
    """The address family of each record, a byte each: ADDR_FAMILY where sent (~3.18+),
    else the family of the service dumped; and the flags of the records whose ADDR_FAMILY
    is beyond a byte (no family decode_dest knows)."""
    place = layout.values.get(DestAttr.ADDR_FAMILY)
    if place is None:
        return service_families, 0
    offset, size = place  # a u16: the layout's record was decoded exactly
    low = low_byte(offset, size)
    flags = 0
    for at in range(offset, offset + size):
        if at != low:
            flags |= differing(buf[at::stride], 0)
    return buf[low::stride], flags


def _invalid(buf: bytes, stride: int, layout: _Layout, service_families: bytes) -> int:
    """Flags of the records whose values the exact decoder does not take as they are: a
    forwarding method or address family it does not know (left to it, to say so)."""
    families, flags = _address_families(buf, stride, layout, service_families)
    fwd_at, fwd_size = layout.values[DestAttr.FWD_METHOD]  # decode_dest needs it
    flags |= byte_flags(buf[low_byte(fwd_at, fwd_size) :: stride], _UNKNOWN_FORWARD)
    return flags | byte_flags(families, _UNKNOWN_FAMILY)


def _columns(buf: bytes, stride: int, layout: _Layout, service_families: bytes) -> RealServerTable:
    """The table of the records (all of the layout, all valid), each column cut out of all
    records at once as machine integers: ints are made only for the values a consumer
    reads (a scrape prints 8 of a real server's ~20 netlink columns)."""
    values = layout.values

    def optional(attr: DestAttr) -> array[int] | None:
        place = values.get(attr)
        if place is None:
            return None
        codec = DEST_CODECS[attr]
        return column(buf, stride, place[0], codec, typecode_of(codec))

    def required(attr: DestAttr) -> array[int]:
        out = optional(attr)
        assert out is not None  # decode_dest needs it; the layout is of a valid record
        return out

    def zeros(attr: DestAttr) -> array[int]:
        out = array(typecode_of(DEST_CODECS[attr]))
        out.frombytes(bytes(out.itemsize * (len(buf) // stride)))
        return out

    families, _ = _address_families(buf, stride, layout, service_families)
    tunnels = None
    tun_type = optional(DestAttr.TUN_TYPE)
    if tun_type is not None:
        # TUN_PORT and TUN_FLAGS missing read as 0, as decode_dest reads them
        tun_port, tun_flags = optional(DestAttr.TUN_PORT), optional(DestAttr.TUN_FLAGS)
        tunnels = (
            tun_type,
            zeros(DestAttr.TUN_PORT) if tun_port is None else tun_port,
            zeros(DestAttr.TUN_FLAGS) if tun_flags is None else tun_flags,
        )
    stats = None
    if layout.stats is not None:
        stats = tuple(
            column(buf, stride, offset, U64 if layout.stats_wide else codec, "Q")
            for codec, (offset, _size) in zip(_STATS32, layout.stats, strict=True)
        )
    fwd_at, fwd_size = values[DestAttr.FWD_METHOD]
    forwards = buf[low_byte(fwd_at, fwd_size) :: stride].translate(_FORWARD_OF)
    return RealServerTable(
        address_families=_members(_FAMILIES.__getitem__, families),
        address_numbers=address_numbers(buf, stride, values[DestAttr.ADDR][0], families),
        ports=required(DestAttr.PORT),
        forwards=_members(_FORWARDS.__getitem__, forwards),
        weights=required(DestAttr.WEIGHT),
        active_conns=required(DestAttr.ACTIVE_CONNS),
        inactive_conns=required(DestAttr.INACT_CONNS),
        # None: the reported family (ADDR_FAMILY) is the address family in every row
        families=None if DestAttr.ADDR_FAMILY in values else [None] * len(families),
        persistent_conns=optional(DestAttr.PERSIST_CONNS),
        upper_thresholds=optional(DestAttr.U_THRESH),
        lower_thresholds=optional(DestAttr.L_THRESH),
        stats=stats,
        tunnels=tunnels,
    )


def _members(member_of: Callable[[int], T], values: bytes) -> list[T]:
    """The enum member of each value (a byte a row); one look-up for the whole column when
    every value is the same (as a column of families or forwarding methods usually is)."""
    if not values:
        return []
    first = values[0]
    if values.count(first) == len(values):
        return [member_of(first)] * len(values)
    return list(map(member_of, values))


_EMPTY = RealServerTable([], [], [], [], [], [], [])
