"""ipvsadm's real-server lines from the real-server table's columns: its order of
destinations (ipvs_cmp_dests) as a sort of row numbers, and its numbers (print_largenum)
formatted a column at a time.

A kube-proxy node's view has 10^5 real-server lines. Made from a `RealServer` object and a
few f-strings each, they took most of `lvsprobe status`'s time and the objects most of its
memory. Here the rows of a batch of services are gathered in ipvsadm's order and each line
is one `%`-format of a template made for the batch (`format_lines`): each number is written by
`%d` in C, and a column's print_largenum units are chosen for all its values in one pass.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from itertools import chain, groupby, repeat
from operator import and_, attrgetter, floordiv, is_not, itemgetter, mod, rshift
from typing import Any, TypeAlias

from lvsprobe.model import (
    Family,
    IPAddress,
    RealServerRows,
    RealServerTable,
    address_number,
    address_texts,
)

MISSING = "-"

# print_largenum without --exact: a value below a limit is written divided by the divisor,
# with the unit (decimal: K is 1000).
_UNIT_LIMITS = (100_000_000, 1_000_000_000, 100_000_000_000, 100_000_000_000_000)
_UNIT_FORMATS = ("%9d", "%8dK", "%8dM", "%8dG", "%8dT")
_UNIT_DIVISORS = (1, 1_000, 1_000_000, 1_000_000_000, 1_000_000_000_000)


@dataclass(frozen=True)
class Number:
    """An int column, each value written by `spec` (a `%d` format), None as `missing`."""

    spec: str
    missing: str


@dataclass(frozen=True)
class Units:
    """An int column as print_largenum writes it without --exact (K, M, G, T)."""

    missing: str = f"{MISSING:>9}"


@dataclass(frozen=True)
class Named:
    """A column of enum members, each written as its name by `spec` (a `%s` format)."""

    spec: str
    names: Mapping[Any, str]


Cell: TypeAlias = Number | Units | Named
Column: TypeAlias = Sequence[Any]
# A table's column for a cell (None: the table has no such column).
ColumnOf: TypeAlias = Callable[[RealServerTable], Column | None]


def largenum_cell(exact: bool) -> Cell:
    """print_largenum: 9 columns; with --exact every digit (a space, then at least 8)."""
    return Number(" %8d", Units.missing) if exact else Units()


def left(width: int) -> Number:
    """A number left-aligned in `width` columns after a space, `-` when there is none."""
    return Number(f" %-{width}d", f" {MISSING:<{width}}")


def largenum(value: int | None, exact: bool) -> str:
    """print_largenum of one value."""
    return _text(largenum_cell(exact), value)


def _text(cell: Cell, value: Any) -> str:
    """One value as `cell` writes it."""
    if isinstance(cell, Named):
        return cell.spec % cell.names[value]
    if value is None:
        return cell.missing
    if isinstance(cell, Number):
        return cell.spec % value
    step = bisect_right(_UNIT_LIMITS, value)
    return _UNIT_FORMATS[step] % (value // _UNIT_DIVISORS[step])


def _part(cell: Cell, values: Column | None, args: list[Column]) -> str:
    """The cell's part of a line's template; the column its `%` takes, appended to `args`
    (None: the same text in every line)."""
    if values is None:
        assert not isinstance(cell, Named)
        return cell.missing.replace("%", "%%")
    if isinstance(cell, Named):
        args.append(list(map(cell.names.__getitem__, values)))
        return cell.spec
    if None in values:
        args.append(list(map(_text, repeat(cell), values)))
        return "%s"
    if isinstance(cell, Number):
        args.append(values)
        return cell.spec
    if max(values, default=0) < _UNIT_LIMITS[0]:
        args.append(values)
        return _UNIT_FORMATS[0]
    steps = list(map(bisect_right, repeat(_UNIT_LIMITS), values))
    scaled = map(floordiv, values, map(_UNIT_DIVISORS.__getitem__, steps))
    args.append(list(map(mod, map(_UNIT_FORMATS.__getitem__, steps), scaled)))
    return "%s"


def format_lines(
    head_spec: str, heads: Column, cells: Iterable[tuple[Cell, Column | None]]
) -> list[str]:
    """One line per head: `head_spec % head` then each cell's value in that row."""
    args: list[Column] = [heads]
    template = head_spec + "".join(_part(cell, values, args) for cell, values in cells)
    return list(map(template.__mod__, zip(*args, strict=True)))


# -- ipvs_cmp_dests ------------------------------------------------------------------------

_WORD = 0xFFFFFFFF
_Words: TypeAlias = tuple[int, int, int, int]


def _s32(value: int) -> int:
    """C's `int r = a - b` on unsigned operands: wrap to signed 32 bits."""
    value &= _WORD
    return value - (1 << 32) if value & 0x80000000 else value


def words(family: Family, number: int) -> _Words:
    """An address as the four 32-bit words ipvsadm compares (IPv4: the first)."""
    if family is Family.INET:
        return (number, 0, 0, 0)
    return (number >> 96 & _WORD, number >> 64 & _WORD, number >> 32 & _WORD, number & _WORD)


def address_words(address: IPAddress | None) -> _Words:
    """`words` of an address object (None: zeros, as an fwmark service's)."""
    return (0, 0, 0, 0) if address is None else words(*address_number(address))


def cmp_words(a: _Words, b: _Words, v6: bool) -> int:
    """ipvsadm's address compare: the first word (IPv4) or each in turn, as signed C ints."""
    for index in range(4 if v6 else 1):
        r = _s32(a[index] - b[index])
        if r:
            return r
    return 0


_Dest: TypeAlias = tuple[Family, int, int, int]  # family, address, port, row


def _cmp_dests(a: _Dest, b: _Dest) -> int:
    """ipvs_cmp_dests: address (of `a`'s family), then port."""
    r = cmp_words(words(a[0], a[1]), words(b[0], b[1]), a[0] is not Family.INET)
    return r or a[2] - b[2]


def words_close(columns: Iterable[Sequence[int]]) -> bool:
    """In each column of address words, no two are 2^31 or more apart (where C's `a - b`
    wraps): then ipvsadm's compare orders the addresses as their words do."""
    return all(max(column) - min(column) <= 0x7FFFFFFF for column in columns)


def _keyed(families: Column, numbers: Column) -> bool:
    """ipvs_cmp_dests orders these rows as (address number, port) does: one family, and
    the addresses' words close."""
    family = families[0]
    if families.count(family) != len(families):
        return False
    if family is Family.INET:
        return words_close([numbers])
    return words_close(
        list(map(and_, map(rshift, numbers, repeat(shift)), repeat(_WORD)))
        for shift in (96, 64, 32, 0)
    )


def ordered_rows(table: RealServerTable, parts: Sequence[RealServerRows]) -> list[int]:
    """Row numbers of each part of `table` in ipvsadm's order, the parts in turn.

    Sorted as numbers when the C compare agrees with them (a kube-proxy table: one sort for
    all the parts), else each part by ipvs_cmp_dests itself (not a total order: mixed
    families, addresses 2^31 apart), as ipvsadm's sort of that part would meet it.
    """
    starts, stops = map(attrgetter("start"), parts), map(attrgetter("stop"), parts)
    rows = list(chain.from_iterable(map(range, starts, stops)))
    if len(rows) < 2:
        return rows
    families = list(map(table.address_families.__getitem__, rows))
    numbers = list(map(table.address_numbers.__getitem__, rows))
    ports = map(table.ports.__getitem__, rows)
    if _keyed(families, numbers):
        ordinals = chain.from_iterable(map(repeat, range(len(parts)), map(len, parts)))
        return list(map(itemgetter(3), sorted(zip(ordinals, numbers, ports, rows, strict=True))))
    if len(parts) > 1:
        return list(chain.from_iterable(ordered_rows(table, [part]) for part in parts))
    dests = sorted(zip(families, numbers, ports, rows, strict=True), key=cmp_to_key(_cmp_dests))
    return list(map(itemgetter(3), dests))


_Run: TypeAlias = tuple[RealServerTable, list[int]]  # a table, row numbers of it in order


class Gathered:
    """Columns of rows of many services' tables, in order (a snapshot's services share one
    table; a service made from objects has its own)."""

    def __init__(self, runs: Sequence[_Run]) -> None:
        self._runs = runs

    def column(self, column_of: ColumnOf) -> list[Any] | None:
        """The rows' values of a column; None in the rows of a table without it, and None
        when no table has it."""
        got = [(column_of(table), rows) for table, rows in self._runs]
        if all(column is None for column, _ in got):
            return None
        out: list[Any] = []
        for column, rows in got:
            out.extend(repeat(None, len(rows)) if column is None else map(column.__getitem__, rows))
        return out


def _windows(runs: Iterable[_Run], rows: int) -> Iterator[list[_Run]]:
    """The runs' rows in turn, `rows` to 2 * `rows` at a time (the last: fewer)."""
    window: list[_Run] = []
    held = 0
    for table, numbers in runs:
        for at in range(0, len(numbers), rows):
            window.append((table, numbers[at : at + rows]))
            held += len(window[-1][1])
            if held >= rows:
                yield window
                window, held = [], 0
    if window:
        yield window


def dest_lines(
    parts: Sequence[RealServerRows],
    head_spec: str,
    cells: Sequence[tuple[ColumnOf, Cell]],
    window_rows: int,
) -> Iterator[list[str]]:
    """Each part's real-server lines in ipvsadm's order, the parts in turn, made about
    `window_rows` at a time: `head_spec` takes the `addr:port` name, then each cell its
    column."""
    runs = [
        (table, ordered_rows(table, list(group)))
        for table, group in groupby(parts, key=attrgetter("table"))
    ]
    for window in _windows(runs, window_rows):
        gathered = Gathered(window)
        families = gathered.column(attrgetter("address_families")) or []
        numbers = gathered.column(attrgetter("address_numbers")) or []
        ports = gathered.column(attrgetter("ports")) or []
        names = dest_names(families, numbers, ports)
        yield format_lines(head_spec, names, ((cell, gathered.column(of)) for of, cell in cells))


_NAME_FORMATS = {Family.INET: "%s:%d", Family.INET6: "[%s]:%d"}
# An IPv4 name is cut at this many characters (ipvsadm's print_service_entry).
_IPV4_NAME_CHARS = 28


def dest_names(families: Column, numbers: Column, ports: Column) -> list[str]:
    """`198.18.1.11:80`, `[2001:2::11]:80`: each row's address and port as ipvsadm -n
    prints them."""
    texts = address_texts(families, numbers)
    names = list(map(mod, map(_NAME_FORMATS.__getitem__, families), zip(texts, ports, strict=True)))
    if max(map(len, names), default=0) > _IPV4_NAME_CHARS:
        names = [
            name[:_IPV4_NAME_CHARS] if family is Family.INET else name
            for family, name in zip(families, names, strict=True)
        ]
    return names


def stat_column(index: int) -> ColumnOf:
    """The table's counter column `index` (STAT_FIELDS + RATE_FIELDS order)."""

    def column_of(table: RealServerTable) -> Column | None:
        return None if table.stats is None else table.stats[index]

    return column_of


def record_columns(records: Sequence[Any], names: Sequence[str]) -> list[Column | None]:
    """Columns of these records' fields; None in a row without a record, and None for a
    field when no row has one."""
    present = list(map(is_not, records, repeat(None)))
    if not any(present):
        return [None] * len(names)
    fields = attrgetter(*names)
    if all(present):
        return list(zip(*map(fields, records), strict=True))
    nothing = (None,) * len(names)
    return list(zip(*(fields(r) if r is not None else nothing for r in records), strict=True))
