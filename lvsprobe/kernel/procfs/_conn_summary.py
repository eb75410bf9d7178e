"""The connection-table summary: rows counted by `ConnCountKey`, no object per row.

Each chunk is first checked by the shape counter (`_conn_fast`: every field's width and
character class). Its rows are then split and counted by the raw fields of the key with
C-level iterators only (`map`, `itemgetter`, `compress`, `Counter`); a second count of the
rows with client port 0000 tells persistence templates from connections in the same state.
Each distinct raw key is decoded exactly once, in the chunk that first brings it, and
Expires is checked row by row (digits only), so unlike `count_states` nothing malformed gets
through. The file may come whole or in pieces as read: the summary holds one block at a time.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from itertools import compress, islice
from operator import itemgetter, not_

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn_row, _hex
from lvsprobe.kernel.procfs._conn_fast import CheckedChunk, ShapeCounter, chunks
from lvsprobe.kernel.procfs._conn_fixed import NO_DEST, FixedKeys
from lvsprobe.kernel.procfs._conn_row import ConnLayout
from lvsprobe.model import Conn, ConnCountKey, ConnSummary, is_template_entry

__all__ = ["NO_DEST", "count_key", "summarize"]
# Blocks tried whole by the fixed-offset counter (fewer Python steps per row than CHUNK_BYTES).
FIXED_BLOCK_BYTES = 1 << 20
_ZERO_PORT = b"0000"
# Field positions in a row: Pro FromIP FPrt ToIP TPrt DestIP DPrt State [Origin] Expires
_PROTO, _CPORT, _VADDR, _VPORT, _DADDR, _DPORT, _STATE, _ORIGIN = 0, 2, 3, 4, 5, 6, 7, 8

# The raw fields a key is built from (see _Keys.fields), joined by one blank: a single
# bytes object hashes and compares in one go, where a tuple of fields chases pointers.
RawKey = bytes


class _Keys:
    """Which raw fields make a key for this layout and granularity, and how to decode it."""

    def __init__(self, layout: ConnLayout, per_real_server: bool) -> None:
        self.layout = layout
        self.per_real_server = per_real_server
        fields = [_PROTO, _VADDR, _VPORT, _STATE]
        if per_real_server:
            fields += [_DADDR, _DPORT]
        if layout.origin:
            fields.append(_ORIGIN)
        self.fields = tuple(fields)
        self.get: Callable[[list[bytes]], tuple[bytes, ...]] = itemgetter(*fields)
        self.expires = itemgetter(layout.fixed_fields - 1)
        self.client_port = itemgetter(_CPORT)

    def decode(self, raw: RawKey, template: bool) -> ConnCountKey:
        """A ConnCountKey from raw fields; ValueError if a field is malformed."""
        value = dict(zip(self.fields, raw.split(b" "), strict=True))
        protocol = value[_PROTO].decode("latin-1")
        state = _conn_row.state(protocol, value[_STATE].decode("latin-1"))
        vaddr, fwmark = _conn_row.virtual(protocol, value[_VADDR])
        origin = None
        if self.layout.origin:
            origin = _conn_row.ORIGINS.get(value[_ORIGIN].decode("latin-1"))
            if origin is None:  # the shapes cannot tell LOCAL from LO0AL
                raise ValueError(f"bad Origin {value[_ORIGIN].decode('latin-1')!r}")
        return ConnCountKey(
            protocol=protocol,
            virtual_address=vaddr,
            virtual_port=_hex.port(value[_VPORT]),
            fwmark=fwmark,
            dest_address=_hex.address(value[_DADDR]) if self.per_real_server else NO_DEST,
            dest_port=_hex.port(value[_DPORT]) if self.per_real_server else 0,
            state=state,
            template=template,
            origin=origin,
        )


def summarize(
    data: bytes | Iterable[bytes], layout: ConnLayout, per_real_server: bool, fixed: bool = True
) -> ConnSummary:
    """Count every row of a file by ConnCountKey; ParseError on a malformed row.

    `data` is the whole file, or its bytes in pieces as read (`read_proc_chunks`): then no
    more than a block of it is held at a time. Blocks of plain IPv4 rows are counted by
    `_conn_fixed` (column by column), the rest chunk by chunk below, where the plain rows of
    a mixed chunk still go by column. A distinct key is decoded (and so checked) when it is
    first counted; if it does not decode, its chunk is parsed exactly to name the line.
    """
    shapes = ShapeCounter(layout)
    raw = _RawCounts(_Keys(layout, per_real_server))
    by_column = FixedKeys(layout, per_real_server)
    exact: dict[ConnCountKey, int] = {}
    line_no = 2
    for block in body_blocks(data, layout, FIXED_BLOCK_BYTES):
        if fixed and by_column.count(block):
            line_no += by_column.last_rows
            continue
        for chunk in chunks(block, 0):
            checked = shapes.check(chunk, line_no)
            for conn in checked.exact.values():
                key = count_key(conn, per_real_server)
                exact[key] = exact.get(key, 0) + 1
            if len(checked.exact) < checked.rows:
                rest = _count_plain(chunk, by_column) if fixed and not checked.exact else None
                if rest is None:
                    raw.count(chunk, chunk, line_no, checked, shapes)
                elif rest:
                    # `rest` has other line numbers than `chunk`: errors are named in `chunk`.
                    raw.count(rest, chunk, line_no, checked, shapes)
            line_no += checked.rows
    exact = _merged(exact, list(by_column.counted()))
    by_column.remember()
    raw.add_to(exact)
    return ConnSummary(counts=exact, total=sum(exact.values()))


def _merged(
    exact: dict[ConnCountKey, int], counted: list[tuple[ConnCountKey, int]]
) -> dict[ConnCountKey, int]:
    """`exact` plus `counted` (keys may repeat); one hash per key when they do not."""
    if not exact:
        merged = dict(counted)
        if len(merged) == len(counted):
            return merged
    for key, n in counted:
        exact[key] = exact.get(key, 0) + n
    return exact


def body_blocks(data: bytes | Iterable[bytes], layout: ConnLayout, size: int) -> Iterator[bytes]:
    """Blocks of whole rows (about `size` bytes) after the header line, which is checked."""
    pieces = chunks(data, 0, size) if isinstance(data, bytes) else whole_lines(data)
    first = next(pieces, b"")
    start = _conn_row.body_start(first, layout)
    if start < len(first):
        yield first[start:]
    yield from pieces


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


def count_key(conn: Conn, per_real_server: bool) -> ConnCountKey:
    """The summary key of one row (dest replaced by NO_DEST:0 unless per_real_server)."""
    return ConnCountKey(
        protocol=conn.protocol,
        virtual_address=conn.virtual_address,
        virtual_port=conn.virtual_port,
        fwmark=conn.fwmark,
        dest_address=conn.dest_address if per_real_server else NO_DEST,
        dest_port=conn.dest_port if per_real_server else 0,
        state=conn.state,
        template=conn.is_template,
        origin=conn.origin,
    )


class _RawCounts:
    """Rows counted by raw key fields (the chunks the column counter cannot take)."""

    def __init__(self, keys: _Keys) -> None:
        self.keys = keys
        self.rows: Counter[RawKey] = Counter()
        self.zero_port: Counter[RawKey] = Counter()
        self.decoded: dict[RawKey, ConnCountKey] = {}  # as connections (template=False)

    def count(
        self, rows: bytes, chunk: bytes, line_no: int, checked: CheckedChunk, shapes: ShapeCounter
    ) -> None:
        """Count `rows` (all of `chunk`, or its rows that are not plain IPv4); a malformed
        row raises ParseError with its line number in `chunk`, which starts at `line_no`."""
        known = len(self.rows)
        try:
            if rows is chunk:
                _count_raw(chunk, line_no, checked, shapes, self.keys, self.rows, self.zero_port)
            else:
                no_exact = CheckedChunk({}, 0)
                _count_raw(rows, line_no, no_exact, shapes, self.keys, self.rows, self.zero_port)
            for key in list(islice(reversed(self.rows), len(self.rows) - known)):
                self.decoded[key] = self.keys.decode(key, False)
        except (ValueError, ParseError) as exc:
            # Name the right line: parse the chunk exactly (only on malformed input).
            deque(_conn_row.iter_rows(chunk, self.keys.layout, 0, line_no), maxlen=0)
            if isinstance(exc, ParseError):
                raise
            raise ParseError(self.keys.layout.source, None, None, str(exc)) from exc

    def add_to(self, exact: dict[ConnCountKey, int]) -> None:
        """Add the counts by decoded key, templates told apart from connections."""
        for raw, n in self.rows.items():
            protocol, _, _, state = raw.decode("latin-1").split(" ", 4)[:4]
            if protocol == "IP":
                templates = n
            elif is_template_entry(protocol, True, state):
                templates = self.zero_port[raw]  # those of its rows with client port 0
            else:
                templates = 0
            key = self.decoded[raw]
            for template, count in ((True, templates), (False, n - templates)):
                if count:
                    one = replace(key, template=True) if template else key
                    exact[one] = exact.get(one, 0) + count


def _count_raw(
    chunk: bytes,
    line_no: int,
    checked: CheckedChunk,
    shapes: ShapeCounter,
    keys: _Keys,
    rows: Counter[RawKey],
    zero_port: Counter[RawKey],
) -> None:
    """Count the shape-checked rows of a chunk by raw key (rows in `checked.exact` were
    parsed exactly already). Expires is checked here: the shapes cannot tell digits from
    the hex letters A-F."""
    lines = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        lines.pop()
    fields = list(map(bytes.split, lines))
    where = list(range(len(lines)))
    if checked.exact:  # rare: leave out the exactly parsed rows
        where = [index for index in where if index not in checked.exact]
        fields = [fields[index] for index in where]
    if not all(map(bytes.isdigit, map(keys.expires, fields))):
        for index, row in zip(where, fields, strict=True):
            if not keys.expires(row).isdigit():
                shapes.parse(lines[index], line_no + index)  # raises the ParseError
    rows.update(map(b" ".join, map(keys.get, fields)))
    zero = map(_ZERO_PORT.__eq__, map(keys.client_port, fields))
    zero_port.update(map(b" ".join, map(keys.get, compress(fields, zero))))


def _count_plain(chunk: bytes, by_column: FixedKeys) -> bytes | None:
    """Count the plain IPv4 rows of a mixed chunk by column (picked by their length, C-level
    filters only); return the other rows, b"" if none, or None if nothing was counted."""
    if not chunk.endswith(b"\n"):
        return None
    lines = chunk.split(b"\n")
    lines.pop()
    plain = list(map((by_column.row_bytes - 1).__eq__, map(len, lines)))
    if not any(plain) or not by_column.count(b"\n".join(compress(lines, plain)) + b"\n"):
        return None
    other = list(compress(lines, map(not_, plain)))
    return b"\n".join(other) + b"\n" if other else b""
