"""The connection-table summary: rows counted by `ConnCountKey`, no object per row.

Each chunk is first checked by the shape counter (`_conn_fast`: every field's width and
character class). Its rows are then split and counted by the raw fields of the key with
C-level iterators only (`map`, `itemgetter`, `compress`, `Counter`); a second count of the
rows with client port 0000 tells persistence templates from connections in the same state.
Each distinct raw key is decoded exactly once at the end, and Expires is checked row by row
(digits only), so unlike `count_states` nothing malformed gets through.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from itertools import compress
from operator import itemgetter, not_

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn_row, _hex
from lvsprobe.kernel.procfs._conn_fast import CheckedChunk, ShapeCounter, chunks
from lvsprobe.kernel.procfs._conn_fixed import NO_DEST, FixedKeys
from lvsprobe.kernel.procfs._conn_row import ConnLayout
from lvsprobe.model import Conn, ConnCountKey, ConnSummary

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
    data: bytes, layout: ConnLayout, per_real_server: bool, fixed: bool = True
) -> ConnSummary:
    """Count every row of a whole file by ConnCountKey; ParseError on a malformed row.

    Blocks of plain IPv4 rows are counted by `_conn_fixed` (column by column), the rest
    chunk by chunk below, where the plain rows of a mixed chunk still go by column. Should
    a row counted by columns not decode (malformed in a way the column checks cannot see),
    the whole file is counted again without that path.
    """
    start = _conn_row.body_start(data, layout)
    shapes = ShapeCounter(layout)
    keys = _Keys(layout, per_real_server)
    by_column = FixedKeys(layout, per_real_server)
    rows: Counter[RawKey] = Counter()
    zero_port: Counter[RawKey] = Counter()
    exact: dict[ConnCountKey, int] = {}
    line_no = 2
    for block in chunks(data, start, FIXED_BLOCK_BYTES):
        if fixed and by_column.count(block):
            line_no += block.count(b"\n")
            continue
        for chunk in chunks(block, 0):
            checked = shapes.check(chunk, line_no)
            for conn in checked.exact.values():
                key = count_key(conn, per_real_server)
                exact[key] = exact.get(key, 0) + 1
            if len(checked.exact) < checked.rows:
                rest = _count_plain(chunk, by_column) if fixed and not checked.exact else None
                if rest is None:
                    _count_raw(chunk, line_no, checked, shapes, keys, rows, zero_port)
                elif rest:
                    try:
                        _count_raw(
                            rest, line_no, CheckedChunk({}, 0), shapes, keys, rows, zero_port
                        )
                    except ParseError:  # `rest` has other line numbers: name the right one
                        _count_raw(chunk, line_no, checked, shapes, keys, rows, zero_port)
                        raise
            line_no += checked.rows
    try:
        for row, n in by_column.rows.items():
            key = by_column.decode(row)
            exact[key] = exact.get(key, 0) + n
    except ValueError:
        return summarize(data, layout, per_real_server, fixed=False)
    for raw, n in rows.items():
        try:
            protocol, _, _, state = raw.split(b" ", 4)[:4]
            # Conn.is_template: protocol IP, or client port 0 in state NONE/ASSURED.
            templates = n if protocol == b"IP" else 0
            if protocol != b"IP" and state in (b"NONE", b"ASSURED"):
                templates = zero_port[raw]
            for template, count in ((True, templates), (False, n - templates)):
                if count:
                    key = keys.decode(raw, template)
                    exact[key] = exact.get(key, 0) + count
        except ValueError as exc:
            _raise_exact(data, layout)
            raise ParseError(layout.source, None, None, str(exc)) from exc
    return ConnSummary(counts=exact, total=sum(exact.values()))


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


def _raise_exact(data: bytes, layout: ConnLayout) -> None:
    """Re-read the file exactly so the error names its line (only on malformed input)."""
    deque(_conn_row.iter_conns(data, layout), maxlen=0)
