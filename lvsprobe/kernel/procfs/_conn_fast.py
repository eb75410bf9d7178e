"""Counting /proc/net/ip_vs_conn{,_sync} rows by (protocol, state) at C speed.

A 1M-row table is ~70 MB; splitting every row into fields in Python costs ~1 µs a row.
Instead the rows are taken in chunks of whole lines (~64 KiB) and each chunk goes through
`bytes.translate`, which maps every hex digit to NUL. Rows that differ only in addresses,
ports and Expires digits then become the same *shape* (`TCP` -> `T\\0P`, `C0A8010A` ->
eight NULs, `ESTABLISHED` -> `\\0ST\\0\\0LISH\\0\\0`), so a table holds a few dozen distinct
shapes, counted by `Counter` over the split lines (C code, nothing per row in Python).
Each distinct shape is checked once, field by field (addresses 8 or 4x8 hex digits, ports
4, known protocol and state names, an Expires of 1-19 digits, a well-formed PEName), with
the same splitting as the exact parser. Rows with PE data (`sip <Call-ID>`) are mostly
shapes of their own: each costs a check of its own (~ a naive split) and a counter entry.

Rows go to the exact parser (`_conn_row`), which raises the `ParseError` with the line
number, when their shape does not check out or cannot decide alone (an `IP_<n>` protocol,
a 20-digit Expires, a PEName with hex digits); a chunk with a NUL byte (which would pose as
a hex digit) is parsed exactly as a whole.

What the shapes cannot see, being blind to which hex digit stands where: a state name
garbled only in the letters A-F (`DSTABLISHED`), an Expires with hex letters (`12AB`), an
IPv6 fwmark template whose ToIP has bits set below the mark. `count_states` counts such
rows as if well formed; `iter_ip_vs_conn` and `summarize_ip_vs_conn` reject them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn_row
from lvsprobe.kernel.procfs._conn_row import ConnLayout
from lvsprobe.model import Conn, Origin

CHUNK_BYTES = 1 << 16
_HEX_DIGITS = b"0123456789ABCDEFabcdef"
_MARK = 0
TRANSLATE = bytes(_MARK if c in _HEX_DIGITS else c for c in range(256))
_ADDRESS = re.compile(rb"\x00{8}|\x00{4}(?::\x00{4}){7}")
_PORT = b"\x00" * 4
_EXPIRES = re.compile(rb"\x00{1,19}")

ShapeKey = tuple[str, str, Origin | None]


def _reverse(names: frozenset[str] | tuple[str, ...] | list[str]) -> dict[bytes, str]:
    """Translated name -> name, leaving out names whose translations collide."""
    out: dict[bytes, str] = {}
    seen: set[bytes] = set()
    for name in names:
        shape = name.encode().translate(TRANSLATE)
        if shape in seen:
            out.pop(shape, None)
        else:
            out[shape] = name
        seen.add(shape)
    return out


_PROTOCOLS = _reverse(list(_conn_row.STATES_BY_PROTOCOL))
_STATES = {proto: _reverse(states) for proto, states in _conn_row.STATES_BY_PROTOCOL.items()}
_ORIGINS = {shape: _conn_row.ORIGINS[name] for shape, name in _reverse(["LOCAL", "SYNC"]).items()}


def decode_shape(shape: bytes, layout: ConnLayout) -> ShapeKey | None:
    """(protocol, state, origin) of a translated row; None: only the exact parser can tell."""
    try:
        fields = _conn_row.split_row(shape, layout)
    except ValueError:
        return None
    protocol = _PROTOCOLS.get(fields[0])
    if protocol is None:
        return None
    caddr, cport, vaddr, vport, daddr, dport = fields[1:7]
    if not (_ADDRESS.fullmatch(caddr) and _ADDRESS.fullmatch(vaddr) and _ADDRESS.fullmatch(daddr)):
        return None
    if (b":" in caddr) != (b":" in vaddr):
        return None
    if not (cport == vport == dport == _PORT):
        return None
    state = _STATES[protocol].get(fields[7])
    origin = _ORIGINS.get(fields[8]) if layout.origin else None
    if state is None or (layout.origin and origin is None):
        return None
    if not _EXPIRES.fullmatch(fields[layout.fixed_fields - 1]):
        return None
    if len(fields) > layout.fixed_fields:
        name = fields[-1].partition(b" ")[0]
        if b"\x00" in name or not _conn_row.PE_NAME.fullmatch(name):
            return None
    return protocol, state, origin


def chunks(data: bytes, start: int, chunk_bytes: int | None = None) -> Iterator[bytes]:
    """Chunks of whole lines of data[start:], about `chunk_bytes` (CHUNK_BYTES) each."""
    pos, size = start, len(data)
    step = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    while pos < size:
        end = data.rfind(b"\n", pos, pos + step) + 1
        if end <= pos:  # one line longer than a chunk, or an unterminated last line
            newline = data.find(b"\n", pos)
            end = size if newline < 0 else newline + 1
        yield data[pos:end]
        pos = end


@dataclass
class CheckedChunk:
    """Rows of a chunk parsed exactly (row index -> Conn); the others were counted by shape."""

    exact: dict[int, Conn]
    rows: int


class ShapeCounter:
    """Counts the shapes of all chunks fed to `check`, decoding each new shape once.

    Rows whose shape does not decide (see the module docstring) are parsed exactly, one by
    one, and left out of the shape counts; a malformed row raises `ParseError` with its
    line number.
    """

    def __init__(self, layout: ConnLayout) -> None:
        self.layout = layout
        self.parser = _conn_row.RowParser(layout)
        self._shapes: Counter[bytes] = Counter()
        self._decoded: dict[bytes, ShapeKey] = {}
        self._undecided: set[bytes] = set()

    def check(self, chunk: bytes, first_line_no: int) -> CheckedChunk:
        if b"\x00" in chunk:
            parsed = dict(enumerate(_conn_row.iter_rows(chunk, self.layout, 0, first_line_no)))
            return CheckedChunk(parsed, len(parsed))
        lines = chunk.translate(TRANSLATE).split(b"\n")
        if chunk.endswith(b"\n"):
            lines.pop()
        known = len(self._shapes)
        self._shapes.update(lines)  # C-level counting: no Python code per row
        if len(self._shapes) != known:  # new shapes: a dict keeps them last, in order
            for shape in islice(reversed(self._shapes), len(self._shapes) - known):
                self._decode(shape)
        exact: dict[int, Conn] = {}
        if self._undecided and not self._undecided.isdisjoint(lines):
            for index in self._rows_of(lines, self._undecided):
                # Translation keeps lengths: the row starts after the lines before it.
                offset = sum(map(len, islice(lines, index))) + index
                line = chunk[offset : offset + len(lines[index])]
                exact[index] = self.parse(line, first_line_no + index)
        return CheckedChunk(exact, len(lines))

    def totals(self) -> dict[ShapeKey, int]:
        """Rows counted by shape so far (the exactly parsed ones are not included)."""
        counts: dict[ShapeKey, int] = {}
        for shape, key in self._decoded.items():
            counts[key] = counts.get(key, 0) + self._shapes[shape]
        return counts

    def parse(self, line: bytes, line_no: int) -> Conn:
        try:
            return self.parser.parse(line)
        except ValueError as exc:
            raise ParseError(self.layout.source, line_no, line, str(exc)) from exc

    def _decode(self, shape: bytes) -> None:
        key = decode_shape(shape, self.layout)
        if key is None:
            self._undecided.add(shape)
        else:
            self._decoded[shape] = key

    @staticmethod
    def _rows_of(lines: list[bytes], shapes: set[bytes]) -> list[int]:
        """Indices of the rows with one of `shapes`, in file order (C-level scans)."""
        indices: list[int] = []
        for shape in shapes:
            index = -1
            while True:
                try:
                    index = lines.index(shape, index + 1)
                except ValueError:
                    break
                indices.append(index)
        return sorted(indices)  # the first bad row in the file is the one reported


def count_shapes(data: bytes, layout: ConnLayout) -> dict[ShapeKey, int]:
    """(protocol, state, origin) -> rows of a whole file; ParseError on a malformed row."""
    start = _conn_row.body_start(data, layout)
    counter = ShapeCounter(layout)
    exact: dict[ShapeKey, int] = {}
    line_no = 2
    for chunk in chunks(data, start):
        checked = counter.check(chunk, line_no)
        line_no += checked.rows
        for conn in checked.exact.values():
            key = (conn.protocol, conn.state, conn.origin)
            exact[key] = exact.get(key, 0) + 1
    counts = counter.totals()
    for key, rows in exact.items():
        counts[key] = counts.get(key, 0) + rows
    return counts
