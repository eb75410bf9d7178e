"""A /proc row as the kernel's printf writes it: one declaration, two ways to read it.

Each IPVS file declares its rows as a `RowFormat`: the kernel's format string with its
conversions named, and for each whitespace-separated column the conversions it may take
(address family, era) and how its token is decoded. From that one declaration come:
- the exact reading: `RowFormat.split` cuts a row on whitespace (every printf width is a
  minimum) and each `Column.decode` checks and converts its token. It is the reference:
  every error a reader raises comes from it, with its line number;
- the fixed-width layouts the columnar strategy (`_columnar`) checks byte by byte: every
  combination of the columns' conversions at their usual widths (`%-11s` as wide as the
  longest state name, `%7u` below 10^7), each byte with the values it may hold. A row of
  any other form (a wider number, PE data) is not in a layout and is read the exact way.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

_CONVERSION = re.compile(r"%pI6|%(?P<flags>[-0]?)(?P<width>[0-9]*)(?:L|l)?(?P<type>[sXud])")
# A byte's allowed values: two inclusive ranges (the same twice when one is enough).
Ranges = tuple[tuple[int, int], tuple[int, int]]
_DIGIT = (ord("0"), ord("9"))
_BLANK = (ord(" "), ord(" "))
_TEXT = (ord("!"), ord("~"))  # printable ASCII, no blank
_UPPER_HEX: Ranges = (_DIGIT, (ord("A"), ord("F")))
_LOWER_HEX: Ranges = (_DIGIT, (ord("a"), ord("f")))


@dataclass(frozen=True)
class Column:
    """One whitespace-separated column: the conversions the kernel prints it with, in order
    of preference (IPv4 before IPv6), and how its token is read back.

    `names` are the strings a `%s` conversion prints (their lengths give its widths);
    `bounds` the range a decimal must lie in (the exact decoder and the columnar check
    share it); `same_as` names a column this one always shares its conversion with (the
    virtual address is printed in the client's family). An `optional` column is the tail
    of a row (PE data): it may be missing, and it keeps the rest of the line, blanks too.
    """

    name: str
    printf: tuple[str, ...]
    decode: Callable[[Any], Any]
    names: tuple[str, ...] = ()
    bounds: tuple[int, int] | None = None
    same_as: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class Span:
    """Where one conversion of a column sits in a fixed-width row."""

    column: str
    part: int  # which conversion of the column's printf (an endpoint is address, port)
    start: int
    width: int
    spec: str

    @property
    def stop(self) -> int:
        return self.start + self.width


@dataclass(frozen=True)
class Layout:
    """One fixed-width form of a row, newline included: which conversion each column took,
    each byte's allowed values, and the padded spans whose blanks must all be on one side."""

    index: int
    choice: tuple[int, ...]  # the alternative taken by each column of the format
    row_bytes: int
    spans: tuple[Span, ...]
    allowed: tuple[Ranges, ...]  # per byte
    left_aligned: tuple[Span, ...]  # text or digits, then blanks
    right_aligned: tuple[Span, ...]  # blanks, then digits

    def span(self, column: str, part: int = 0) -> Span:
        for span in self.spans:
            if span.column == column and span.part == part:
                return span
        raise KeyError(f"no span {column}[{part}]")


@dataclass(frozen=True)
class RowFormat:
    """A row of a /proc file as its printf prints it.

    `printf` is the kernel's format string with each column named, e.g.
    `"{protocol} {client_address} {client_port} ..."`; the columns give the conversions.
    """

    source: str
    printf: str
    columns: tuple[Column, ...]
    noun: str = ""  # how errors name the row: "expected 6 fields on a real-server line"
    _literals: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parsed = list(string.Formatter().parse(self.printf))
        names = [name for _, name, _, _ in parsed if name is not None]
        if names != [column.name for column in self.columns]:
            raise ValueError(f"printf names {names} are not the columns in order")
        if any(column.optional for column in self.columns[:-1]):
            raise ValueError("only the last column may be optional")
        literals = tuple(literal for literal, _, _, _ in parsed)
        object.__setattr__(self, "_literals", literals)

    @property
    def fixed_columns(self) -> int:
        """Columns every row has (all but an optional tail)."""
        return len(self.columns) - (1 if self.columns[-1].optional else 0)

    def split(self, line: Any) -> list[Any]:
        """The row's whitespace tokens (str or bytes); a present tail stays one token.
        ValueError when the count is wrong."""
        n = self.fixed_columns
        tail = n < len(self.columns)
        return self.checked(line.split(None, n) if tail else line.split())

    def checked(self, tokens: list[Any]) -> list[Any]:
        """`tokens` when there are as many as columns (or one fewer, without the optional
        tail); ValueError when not."""
        n = self.fixed_columns
        if len(tokens) < n or len(tokens) > len(self.columns):
            raise ValueError(f"expected {n} fields{self.noun}, got {len(tokens)}")
        return tokens

    def decode(self, tokens: Sequence[Any]) -> list[Any]:
        """Each token decoded by its column (a missing tail is None); ValueError names why."""
        values = [column.decode(tok) for column, tok in zip(self.columns, tokens, strict=False)]
        return values + [None] * (len(self.columns) - len(values))

    def named(self, source: str) -> RowFormat:
        """The same format reported under another source name (e.g. a netns path)."""
        if source == self.source:
            return self
        return RowFormat(source, self.printf, self.columns, self.noun)

    def layouts(self, where: Callable[[Layout], bool] = lambda layout: True) -> list[Layout]:
        """Every fixed-width form of a row without its optional tail (see the module
        docstring), those `where` accepts, numbered in order."""
        columns = [column for column in self.columns if not column.optional]
        position = {column.name: at for at, column in enumerate(columns)}
        options = [list(_forms(column)) for column in columns]
        out: list[Layout] = []
        for combination in itertools.product(*options):
            choice = tuple(alternative for alternative, _ in combination)
            if any(
                column.same_as is not None and choice[position[column.same_as]] != choice[at]
                for at, column in enumerate(columns)
            ):
                continue
            layout = self._layout(choice, [pieces for _, pieces in combination])
            if where(layout):
                out.append(dataclasses.replace(layout, index=len(out)))
        return out

    def _layout(self, choice: tuple[int, ...], pieces: list[list[tuple[str, int]]]) -> Layout:
        spans: list[Span] = []
        allowed: list[Ranges] = []
        left: list[Span] = []
        right: list[Span] = []
        for literal, column, column_pieces in zip(
            self._literals, self.columns, pieces, strict=False
        ):
            allowed += [((ord(c), ord(c)),) * 2 for c in literal]
            part = 0
            for text, width in column_pieces:
                if not text.startswith("%"):
                    allowed += [((ord(c), ord(c)),) * 2 for c in text]
                    continue
                span = Span(column.name, part, len(allowed), width, text)
                part += 1
                spans.append(span)
                allowed += _allowed(text, width, column.bounds)
                kind = _CONVERSION.fullmatch(text)
                conversion = (kind and kind["type"]) or ""
                if conversion in ("s", "d") and kind and kind["flags"] == "-" and width > 1:
                    left.append(span)
                elif conversion == "u" and width > 1:
                    right.append(span)
        tail = self._literals[len(self.columns)] if len(self._literals) > len(self.columns) else ""
        allowed += [((ord(c), ord(c)),) * 2 for c in tail + "\n"]
        return Layout(
            0, choice, len(allowed), tuple(spans), tuple(allowed), tuple(left), tuple(right)
        )


def _forms(column: Column) -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """(alternative, [(literal or conversion, width)]) for each fixed-width form of a column."""
    for alternative, printf in enumerate(column.printf):
        pieces: list[list[tuple[str, int]]] = []
        at = 0
        for match in _CONVERSION.finditer(printf):
            if match.start() > at:
                pieces.append([(printf[at : match.start()], 0)])
            pieces.append([(match.group(), width) for width in _widths(match, column)])
            at = match.end()
        if at < len(printf):
            pieces.append([(printf[at:], 0)])
        for combination in itertools.product(*pieces):
            yield alternative, list(combination)


def _widths(match: re.Match[str], column: Column) -> list[int]:
    """The usual widths of a conversion: what the kernel prints for ordinary values."""
    if match.group() == "%pI6":
        return [39]
    width = int(match["width"] or 0)
    if match["type"] == "s":
        if not column.names:
            raise ValueError(f"column {column.name}: a %s needs the names it prints")
        return sorted({max(len(name), width) for name in column.names})
    if match["type"] == "X" and match["flags"] != "0":
        raise ValueError(f"column {column.name}: {match.group()} has no usual width")
    return [width]


def _allowed(spec: str, width: int, bounds: tuple[int, int] | None) -> list[Ranges]:
    """Each byte's allowed values in a conversion of `width` bytes."""
    if spec == "%pI6":
        colon = ((ord(":"), ord(":")),) * 2
        return [colon if at % 5 == 4 else _LOWER_HEX for at in range(width)]
    kind = _CONVERSION.fullmatch(spec)
    assert kind is not None
    if kind["type"] == "X":
        return [_UPPER_HEX] * width
    if kind["type"] == "s":
        return [(_TEXT, _TEXT)] + [(_TEXT, _BLANK)] * (width - 1)
    if kind["type"] == "u":
        return [(_DIGIT, _BLANK)] * (width - 1) + [(_DIGIT, _DIGIT)]
    # %-Nd: a minus only where the bounds allow one, and first.
    first = (_DIGIT, (ord("-"), ord("-"))) if bounds is None or bounds[0] < 0 else (_DIGIT, _DIGIT)
    return [first] + [(_DIGIT, _BLANK)] * (width - 1)
