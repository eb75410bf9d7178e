"""Real servers as columns: the one form `Service.real_servers` takes, whichever reader.

A kube-proxy node lists 10^5 real servers. As frozen `RealServer` objects (13 slots, an
address object, a Stats and a Rates each) they cost seconds and tens of MB a scrape to
make, and as much again for the exporter to read back, which needs them column by column.
So both readers fill the columns of one `RealServerTable` per snapshot (/proc/net/ip_vs
gives seven, a netlink GET_DEST dump up to twenty-one), and each service holds a range of
its rows (`RealServerRows`, in `service_rows`). Consumers read columns (`concat` joins the
rows of many services); objects are made only by the explicit `objects()` view (the
analyzers, the ipvsadm views).

An optional column is None when no row has the field (procfs has no counters), else a
sequence with None in the rows that lack it. An integer column is a list, or an `array` of
machine integers where a reader made it so (netlink's columns): consumers read any
column as a plain Sequence, and an array makes an int object only for a value read.
"""

from __future__ import annotations

import dataclasses
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Protocol, TypeAlias, TypeVar, cast

from lvsprobe.model.addresses import address_number, address_objects
from lvsprobe.model.values import Family, Forward, Rates, RealServer, Stats, Tunnel

# The ten counter columns, Stats's fields then Rates's (the order of a netlink stats nest).
STAT_FIELDS = tuple(f.name for f in dataclasses.fields(Stats))
RATE_FIELDS = tuple(f.name for f in dataclasses.fields(Rates))
Column = Sequence[int | None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True, eq=False)
class RealServerTable:
    """Real servers as columns, one row each, in the kernel's order. The lists are never
    changed once the table is made."""

    address_families: Sequence[Family]
    address_numbers: Sequence[int]  # the int of each address, of its family
    ports: Sequence[int]
    forwards: Sequence[Forward]
    weights: Sequence[int]
    active_conns: Sequence[int]
    inactive_conns: Sequence[int]
    # The family the kernel reported (netlink's ADDR_FAMILY, absent before ~3.18); None:
    # the address family in every row.
    families: Sequence[Family | None] | None = None
    persistent_conns: Column | None = None
    upper_thresholds: Column | None = None
    lower_thresholds: Column | None = None
    # Ten columns in STAT_FIELDS + RATE_FIELDS order; a row without stats is None in each.
    stats: tuple[Column, ...] | None = None
    # TUN_TYPE, TUN_PORT, TUN_FLAGS (5.3+); a row without a tunnel is None in each.
    tunnels: tuple[Column, Column, Column] | None = None

    def __post_init__(self) -> None:
        rows = len(self.address_numbers)
        for name, column in _columns(self):
            if len(column) != rows:
                raise ValueError(f"column {name} has {len(column)} rows, not {rows}")

    def __len__(self) -> int:
        return len(self.address_numbers)

    @classmethod
    def of(cls, objects: Iterable[RealServer]) -> RealServerTable:
        """The table of these real servers, in order (tests, JSON)."""
        builder = TableBuilder()
        for rs in objects:
            builder.add(rs)
        return builder.build()

    @classmethod
    def concat(cls, parts: Iterable[RowRange]) -> RealServerTable:
        """The rows of all parts, in order, as one table: slices of their columns (rows that
        follow on in one table, as every service of a snapshot does, are one slice)."""
        builder = TableBuilder()
        for rows in parts:
            builder.add_rows(rows.table, rows.start, rows.stop)
        return builder.build()

    def real_servers(self, start: int, stop: int) -> tuple[RealServer, ...]:
        """`RealServer` objects of rows start..stop.

        The frozen dataclass's __init__ sets its 13 slots one Python-level call each; here
        each slot is set for every row by its descriptor in one C-level map, as __init__
        does through object.__setattr__ (RealServer has no __post_init__ to skip).
        """
        n = max(0, stop - start)
        if not n:
            return ()
        rows = slice(start, stop)
        families = self.address_families[rows]
        columns: dict[str, Iterable[object]] = {
            "address": address_objects(families, self.address_numbers[rows]),
            "port": self.ports[rows],
            "forward": self.forwards[rows],
            "weight": self.weights[rows],
            "active_conns": self.active_conns[rows],
            "inactive_conns": self.inactive_conns[rows],
            "persistent_conns": _optional(self.persistent_conns, rows, n),
            "upper_threshold": _optional(self.upper_thresholds, rows, n),
            "lower_threshold": _optional(self.lower_thresholds, rows, n),
            "stats": _records(Stats, self.stats[:5] if self.stats else None, rows, n),
            "rates": _records(Rates, self.stats[5:] if self.stats else None, rows, n),
            "family": families if self.families is None else self.families[rows],
            "tunnel": _records(Tunnel, self.tunnels, rows, n),
        }
        return frozen_records(RealServer, columns, n)


class RowRange(Protocol):
    """Rows start..stop of a table, as `RealServerTable.concat` joins them (a service's
    `RealServerRows` is one)."""

    @property
    def table(self) -> RealServerTable: ...

    @property
    def start(self) -> int: ...

    @property
    def stop(self) -> int: ...


def frozen_records(
    kind: type[T], columns: Mapping[str, Iterable[object]], count: int
) -> tuple[T, ...]:
    """`count` objects of a frozen slots dataclass, each field set from its column.

    Made as its __init__ makes them (object.__setattr__ per slot), but each slot set for
    every object by its descriptor in one C-level map, not a Python-level call per object:
    10^4-10^5 objects a scrape. Only for a kind whose __post_init__ has nothing to do with
    these values (it is not run); every field needs its column.
    """
    names = [f.name for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
    if sorted(names) != sorted(columns):
        raise ValueError(f"{kind.__name__} needs columns {names}, got {list(columns)}")
    out = tuple(map(object.__new__, repeat(kind, count)))
    for name, column in columns.items():
        deque(map(getattr(kind, name).__set__, out, column), maxlen=0)
    return out


def _optional(column: Column | None, rows: slice, n: int) -> Iterable[int | None]:
    return repeat(None, n) if column is None else column[rows]


def _records(
    kind: type[Stats] | type[Rates] | type[Tunnel],
    columns: Sequence[Column] | None,
    rows: slice,
    n: int,
) -> Iterable[object]:
    """One record per row from its columns; None where the row has none."""
    if columns is None:
        return repeat(None, n)
    return [
        None if values[0] is None else kind(*values)
        for values in zip(*(column[rows] for column in columns), strict=True)
    ]


def _columns(table: RealServerTable) -> Iterator[tuple[str, Sequence[object]]]:
    """(name, column) of every column the table has."""
    for field in dataclasses.fields(table):
        value = getattr(table, field.name)
        if isinstance(value, tuple):
            for index, column in enumerate(value):
                yield f"{field.name}[{index}]", column
        elif value is not None:
            yield field.name, value


class TableBuilder:
    """Columns grown by rows of other tables (sliced in C) and by objects, into one table.

    Each part's rows are appended to one sequence per column as the next part comes (an
    array while every part's column is an array of its type code, else a list), so the
    table built holds the only copy of its columns: joining them at the end held two (17 MB
    more at 10^5 real servers for a netlink read's batches; and with arrays, a second
    write of fresh memory). The last part is kept as rows of its table until then, so rows
    that follow on in one table are one part, and the build of one whole table is that
    table.
    """

    def __init__(self) -> None:
        self._grown = _GrownColumns()  # the rows of the parts before the last
        self._last: tuple[RealServerTable, int, int] | None = None
        self._objects: list[RealServer] = []
        self.rows = 0  # rows added so far

    def add_rows(self, table: RealServerTable, start: int, stop: int) -> None:
        if start == stop:
            return
        self._flush()
        self.rows += stop - start
        self._add_part(table, start, stop)

    def add(self, rs: RealServer) -> None:
        self._objects.append(rs)
        self.rows += 1

    def build(self) -> RealServerTable:
        """The table of the rows added; the builder goes on from it (its lists stay as
        they are: rows added later go to new ones)."""
        self._flush()
        if self._last is None:
            return _EMPTY
        table, start, stop = self._last
        if self._grown.rows or (start, stop) != (0, len(table)):
            self._grown.extend(table, start, stop)
            table = self._grown.table()
            self._grown = _GrownColumns()
            self._last = (table, 0, len(table))
        return table

    def _add_part(self, table: RealServerTable, start: int, stop: int) -> None:
        if self._last is not None:
            last, last_start, last_stop = self._last
            if last is table and last_stop == start:
                self._last = (table, last_start, stop)
                return
            self._grown.extend(last, last_start, last_stop)
        self._last = (table, start, stop)

    def _flush(self) -> None:
        if self._objects:
            self._add_part(*_from_objects(self._objects))
            self._objects = []


# The columns every table has, and the optional ones with their width (None: one column).
_REQUIRED = tuple(
    f.name for f in dataclasses.fields(RealServerTable) if f.default is dataclasses.MISSING
)
_OPTIONAL = (
    ("persistent_conns", None),
    ("upper_thresholds", None),
    ("lower_thresholds", None),
    ("stats", len(STAT_FIELDS) + len(RATE_FIELDS)),
    ("tunnels", 3),
)


_Grown: TypeAlias = "list[object] | array[int]"


class _GrownColumns:
    """One sequence per column, rows of tables appended to them; an optional column any part
    has is None-filled in the rows of those without it (families: the address family)."""

    def __init__(self) -> None:
        self.rows = 0
        self._required: dict[str, _Grown | None] = dict.fromkeys(_REQUIRED)
        self._families: _Grown | None = None
        self._optional: dict[str, list[_Grown | None] | None] = {
            name: None for name, _ in _OPTIONAL
        }

    def extend(self, table: RealServerTable, start: int, stop: int) -> None:
        whole = (start, stop) == (0, len(table))

        def rows(column: Sequence[object]) -> Sequence[object]:
            return column if whole else column[start:stop]

        before, added = self.rows, stop - start
        if self._families is None and table.families is not None:
            self._families = list(self._required["address_families"] or ())
        if self._families is not None:
            reported = table.address_families if table.families is None else table.families
            self._families = _grow(self._families, rows(reported))
        for name, out in self._required.items():
            self._required[name] = _grow(out, rows(getattr(table, name)))
        for name, width in _OPTIONAL:
            value = getattr(table, name)
            grown = self._optional[name]
            if value is None:
                if grown is not None:
                    grown[:] = [_grow(out, [None] * added) for out in grown]
                continue
            if grown is None:
                grown = self._optional[name] = [[None] * before for _ in range(width or 1)]
            columns = (value,) if width is None else value
            grown[:] = [
                _grow(out, rows(column)) for out, column in zip(grown, columns, strict=True)
            ]
        self.rows += added

    def table(self) -> RealServerTable:
        optional: dict[str, object] = {}
        for name, width in _OPTIONAL:
            grown = self._optional[name]
            optional[name] = None if grown is None else grown[0] if width is None else tuple(grown)
        return RealServerTable(**self._required, families=self._families, **optional)  # type: ignore[arg-type]


def _grow(out: _Grown | None, part: Sequence[object]) -> _Grown:
    """`out` (None: no rows yet) with `part`'s rows appended. An array stays one while the
    parts are arrays of its type code (copied in C, no int objects); a part of any other
    kind (a list, None-filled rows) makes the column a list."""
    if isinstance(part, array):
        if not out:
            return array(part.typecode, part)
        if isinstance(out, array) and out.typecode == part.typecode:
            out += part
            return out
    grown = cast("list[object]", out.tolist()) if isinstance(out, array) else out or []
    grown += part
    return grown


def _from_objects(objects: list[RealServer]) -> tuple[RealServerTable, int, int]:
    numbers = [address_number(rs.address) for rs in objects]
    families = [family for family, _ in numbers]
    reported = [rs.family for rs in objects]
    stats = _record_columns([rs.stats for rs in objects], len(STAT_FIELDS))
    rates = _record_columns([rs.rates for rs in objects], len(RATE_FIELDS))
    table = RealServerTable(
        address_families=families,
        address_numbers=[number for _, number in numbers],
        ports=[rs.port for rs in objects],
        forwards=[rs.forward for rs in objects],
        weights=[rs.weight for rs in objects],
        active_conns=[rs.active_conns for rs in objects],
        inactive_conns=[rs.inactive_conns for rs in objects],
        families=None if reported == families else reported,
        persistent_conns=_optional_column([rs.persistent_conns for rs in objects]),
        upper_thresholds=_optional_column([rs.upper_threshold for rs in objects]),
        lower_thresholds=_optional_column([rs.lower_threshold for rs in objects]),
        stats=None if stats is None and rates is None else _both(stats, rates, len(objects)),
        tunnels=_record_columns([rs.tunnel for rs in objects], 3),  # type: ignore[arg-type]
    )
    return table, 0, len(objects)


def _optional_column(values: Column) -> Column | None:
    """None for a column no row has a value in."""
    return None if values.count(None) == len(values) else values


def _record_columns(
    records: list[Stats | None] | list[Rates | None] | list[Tunnel | None], width: int
) -> tuple[Column, ...] | None:
    """Columns of the records' fields, None in rows without one; None when no row has one."""
    if records.count(None) == len(records):
        return None
    rows = [(None,) * width if r is None else dataclasses.astuple(r) for r in records]
    return tuple(list(column) for column in zip(*rows, strict=True))


def _both(
    stats: tuple[Column, ...] | None, rates: tuple[Column, ...] | None, rows: int
) -> tuple[Column, ...]:
    nothing = [None] * rows
    return (*(stats or (nothing,) * 5), *(rates or (nothing,) * 5))


_EMPTY = RealServerTable([], [], [], [], [], [], [])
