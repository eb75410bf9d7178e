"""Counting the rows of /proc/net/ip_vs_conn{,_sync} by a key: two strategies, one dispatcher.

- `exact`: every row parsed into a Conn (`_conn.RowParser`), its key taken, counted.
- `columnar`: each block cut by the format's fixed-width layouts (`_columnar`); the key
  columns of the rows a layout takes are packed into uint64 words and counted with sorts
  (`_packed`), and each distinct key is decoded once, by the exact parser, from a canonical
  row: the key's columns as printed, every other column a fixed valid value. The rows no
  layout takes (PE data, a wide Expires, anything malformed) are parsed exactly, in place.

`count` picks one for the whole table from its first block (`COLUMNAR_MIN_BYTES`): a small
table is not worth numpy's import. Every error comes from the exact parser with its line:
the columnar strategy never raises, and a block whose key does not decode is parsed exactly.
Decoded keys go into the caller's `ParseCache`, so a scrape decodes only the keys that are new.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any, Protocol

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn
from lvsprobe.kernel.procfs._columnar import Columns, all_zero
from lvsprobe.kernel.procfs._format import Layout, RowFormat
from lvsprobe.kernel.procfs._packed import KeyTable, Packer
from lvsprobe.kernel.procfs.cache import ParseCache
from lvsprobe.model import Conn, ConnCountKey

# With per_real_server=False every key carries this destination: 0.0.0.0 port 0.
NO_DEST = ipaddress.IPv4Address(0)
# A table whose first block is smaller is counted exactly (~1,000 rows: a few ms).
COLUMNAR_MIN_BYTES = 1 << 16
# Blocks of whole rows the strategies take at a time (a whole file is cut into these).
BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class Grouping:
    """What rows are counted by: the key of a parsed row, and the columns it comes from
    (`template`: the key also tells templates, i.e. whether the client port is 0000)."""

    name: str
    columns: tuple[str, ...]
    template: bool
    key: Callable[[Conn], Hashable]


def _by_service(conn: Conn) -> ConnCountKey:
    return ConnCountKey(
        conn.protocol,
        conn.virtual_address,
        conn.virtual_port,
        conn.fwmark,
        NO_DEST,
        0,
        conn.state,
        conn.is_template,
        conn.origin,
    )


def _by_real_server(conn: Conn) -> ConnCountKey:
    return ConnCountKey(
        conn.protocol,
        conn.virtual_address,
        conn.virtual_port,
        conn.fwmark,
        conn.dest_address,
        conn.dest_port,
        conn.state,
        conn.is_template,
        conn.origin,
    )


def _by_state(conn: Conn) -> tuple[str, str, object]:
    return conn.protocol, conn.state, conn.origin


_SERVICE = ("protocol", "virtual_address", "virtual_port", "state", "origin")
BY_SERVICE = Grouping("service", _SERVICE, True, _by_service)
BY_REAL_SERVER = Grouping(
    "real server", (*_SERVICE, "dest_address", "dest_port"), True, _by_real_server
)
BY_STATE = Grouping("state", ("protocol", "state", "origin"), False, _by_state)


class Strategy(Protocol):
    def add(self, block: bytes, line_no: int) -> int:
        """Count a block of whole rows whose first is line `line_no`; return its rows."""

    def counts(self) -> dict[Hashable, int]:
        """Rows counted so far by key."""


class ExactCount:
    """Every row parsed (the reference)."""

    def __init__(self, fmt: RowFormat, grouping: Grouping, cache: ParseCache | None) -> None:
        self.fmt = fmt
        self.key = grouping.key
        self._counts: dict[Hashable, int] = {}

    def add(self, block: bytes, line_no: int) -> int:
        counts = self._counts
        rows = 0
        for conn in _conn.iter_rows(block, self.fmt, 0, line_no):
            key = self.key(conn)
            counts[key] = counts.get(key, 0) + 1
            rows += 1
        return rows

    def counts(self) -> dict[Hashable, int]:
        return self._counts


class ColumnarCount:
    """Rows of the format's fixed-width layouts counted by packed keys (module docstring)."""

    def __init__(self, fmt: RowFormat, grouping: Grouping, cache: ParseCache | None) -> None:
        self.fmt = fmt
        self.grouping = grouping
        self.exact = ExactCount(fmt, grouping, None)
        self.columns = Columns(fmt.layouts())
        self.parser = _conn.RowParser(fmt)
        self.keys = {
            layout.index: _LayoutKeys(fmt, layout, grouping) for layout in self.columns.layouts
        }
        # Flags packed with each key: the layout, then whether the client port is 0000.
        self.flag_bits = len(self.columns.layouts).bit_length() + 1
        self._cache = cache
        self._kind = (fmt.printf, grouping.name)
        # Packed keys by their number of words: what the last read decoded, counts at 0.
        previous: dict[int, KeyTable] = dict(cache.previous(self._kind)) if cache else {}
        self.tables = {width: table.fresh() for width, table in previous.items()}

    def add(self, block: bytes, line_no: int) -> int:
        import numpy as np

        split = self.columns.split(block)
        refused = list(split.refused)
        for taken in split.taken:
            keys = self.keys[taken.layout.index]
            flags = np.full(len(taken.matrix), taken.layout.index << 1, np.uint64)
            if keys.client_port is not None:
                flags |= all_zero(taken.matrix, keys.client_port).astype(np.uint64)
            words, ok = keys.packer.pack(taken.matrix, flags, self.flag_bits)
            if not ok.all():  # a text that is no name: the exact parser says what it is
                for row in np.flatnonzero(~ok).tolist():
                    line = taken.matrix[row, :-1].tobytes()
                    refused.append((int(taken.rows[row]), line))
                words = words[ok]
            if not len(words):
                continue
            table = self.tables.setdefault(words.shape[1], KeyTable(words.shape[1]))
            try:
                counted = table.add(words, self._decode)
            except ValueError as exc:
                # Name the line: parse the block exactly (only on malformed input).
                ExactCount(self.fmt, self.grouping, None).add(block, line_no)
                raise ParseError(self.fmt.source, None, None, str(exc)) from exc
            if not counted:  # two keys share a fingerprint: count these rows exactly
                refused += [
                    (int(at), taken.matrix[row, :-1].tobytes())
                    for row, at in enumerate(taken.rows.tolist())
                    if ok[row]
                ]
        exact = self.exact.counts()
        for index, line in sorted(refused):
            try:
                conn = self.parser.parse(line)
            except ValueError as exc:
                raise ParseError(self.fmt.source, line_no + index, line, str(exc)) from exc
            key = self.grouping.key(conn)
            exact[key] = exact.get(key, 0) + 1
        return split.lines

    def _decode(self, words: tuple[int, ...]) -> Hashable:
        """The key of a packed key: its canonical row read by the exact parser."""
        layout = words[-1] >> 1 & (1 << self.flag_bits - 1) - 1
        return self.grouping.key(self.parser.parse(self.keys[layout].row(words, self.flag_bits)))

    def counts(self) -> dict[Hashable, int]:
        if self._cache is not None:
            self._cache.keep(self._kind, {w: table.kept() for w, table in self.tables.items()})
        out = self.exact.counts()
        for table in self.tables.values():
            keys, rows = table.counted()
            if not out:
                out = dict(zip(keys, rows, strict=True))
                if len(out) == len(keys):  # no two packed keys of one key: one hash each
                    continue
                out = {}
            for key, n in zip(keys, rows, strict=True):
                out[key] = out.get(key, 0) + n
        return out


class _LayoutKeys:
    """A layout's key columns, packed (`_packed.Packer`), and the row that stands for a
    packed key: its key columns as printed, the others a fixed valid value (the exact
    parser then decodes the key)."""

    def __init__(self, fmt: RowFormat, layout: Layout, grouping: Grouping) -> None:
        names = {column.name: column.names for column in fmt.columns if column.names}
        spans = [span for span in layout.spans if span.column in grouping.columns]
        self.packer = Packer(layout, spans, names)
        self.client_port = layout.span("client_port") if grouping.template else None
        self.client_port_at = [column.name for column in fmt.columns].index("client_port")
        self.tokens: list[bytes] = []
        self.at: dict[str, int] = {}
        for index, column in enumerate(fmt.columns[: fmt.fixed_columns]):
            own = layout.span(column.name)
            self.at[column.name] = index
            self.tokens.append(b"0000:" * 7 + b"0000" if own.spec == "%pI6" else b"0" * own.width)

    def row(self, words: tuple[int, ...], flag_bits: int) -> bytes:
        tokens = list(self.tokens)
        values, flags = self.packer.unpack(words, flag_bits)
        for column, token in values.items():
            tokens[self.at[column]] = token
        if self.client_port is not None:
            tokens[self.client_port_at] = b"0000" if flags & 1 else b"0001"
        return b" ".join(tokens)


STRATEGIES: dict[str, type[ExactCount] | type[ColumnarCount]] = {
    "exact": ExactCount,
    "columnar": ColumnarCount,
}


def count(
    data: bytes | Iterable[bytes],
    fmt: RowFormat,
    grouping: Grouping,
    cache: ParseCache | None = None,
    strategy: str | None = None,
) -> dict[Any, int]:
    """Rows of a whole file (or its pieces as read) counted by `grouping`; ParseError on a
    malformed row. `strategy` forces one of STRATEGIES (tests); else the first block decides."""
    blocks = body_blocks(data, fmt)
    first = next(blocks, None)
    if first is None:
        return {}
    if strategy is None:
        strategy = "columnar" if len(first) >= COLUMNAR_MIN_BYTES else "exact"
    counter = STRATEGIES[strategy](fmt, grouping, cache)
    line_no = 2
    for block in chain([first], blocks):
        line_no += counter.add(block, line_no)
    return counter.counts()


def body_blocks(data: bytes | Iterable[bytes], fmt: RowFormat) -> Iterator[bytes]:
    """Blocks of whole rows (about BLOCK_BYTES, or as read) after the header line, which is
    checked (the first block is the header's when the table has no rows)."""
    pieces = _cut(data, BLOCK_BYTES) if isinstance(data, bytes) else whole_lines(data)
    first = next(pieces, b"")
    start = _conn.body_start(first, fmt)
    if start < len(first):
        yield first[start:]
    yield from pieces


def _cut(data: bytes, size: int) -> Iterator[bytes]:
    """data in blocks of whole lines of about `size` bytes."""
    pos, end = 0, len(data)
    while pos < end:
        stop = data.rfind(b"\n", pos, pos + size) + 1
        if stop <= pos:  # one line longer than a block, or an unterminated last line
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
        yield data[pos:stop]
        pos = stop


def whole_lines(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The bytes of `pieces` again, cut after the last newline of each (an unterminated
    last line comes alone at the end)."""
    rest = b""
    for piece in pieces:
        if not piece:
            continue
        buf = rest + piece if rest else piece
        cut = buf.rfind(b"\n") + 1
        if cut == len(buf):
            rest = b""
            yield buf
        elif cut:
            rest = buf[cut:]
            yield buf[:cut]
        else:
            rest = buf
    if rest:
        yield rest
