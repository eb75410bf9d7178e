"""Counting /proc/net/ip_vs_conn{,_sync} rows by (protocol, state) at C speed.

A 1M-row table is ~70 MB; splitting every row into fields in Python costs ~1 µs a row.
Instead the rows are taken in chunks of whole lines (~64 KiB) and each chunk goes through
`bytes.translate`, which maps every hex digit to NUL. Rows that differ only in addresses,
ports and Expires digits then become the same *shape* (`TCP` -> `T\\0P`, `C0A8010A` ->
eight NULs, `ESTABLISHED` -> `\\0STABLISH\\0\\0`), so a chunk holds a handful of distinct
shapes, counted by `Counter` on the split lines. Each distinct shape is checked once, field
by field (addresses 8 or 4x8 hex digits, ports 4, known protocol and state names, an Expires
of 1-19 digits, a well-formed PEName), with the same splitting as the exact parser.

A chunk falls back to the exact parser (`_conn_row`), which raises the `ParseError` with
the line number, when a shape does not check out, when the shape alone cannot decide (an
`IP_<n>` protocol, a 20-digit Expires, an IPv6 fwmark template, a PEName with hex digits),
or when the chunk contains a NUL byte (which would pose as a hex digit).

What the shapes cannot see: a hex digit where a letter A-F belongs. A state name garbled
only in those letters (`DSTABLISHED`) or an Expires with hex letters (`12AB`) is counted
as if well formed; `iter_ip_vs_conn` and `summarize_ip_vs_conn` reject them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator

from lvsprobe.kernel.procfs import _conn_row
from lvsprobe.kernel.procfs._conn_row import ConnLayout
from lvsprobe.model import Origin

CHUNK_BYTES = 1 << 16
_HEX_DIGITS = b"0123456789ABCDEFabcdef"
_MARK = 0
TRANSLATE = bytes(_MARK if c in _HEX_DIGITS else c for c in range(256))
_ADDRESS = re.compile(rb"\x00{8}|\x00{4}(?::\x00{4}){7}")
_PORT = b"\x00" * 4
_EXPIRES = re.compile(rb"\x00{1,19}")
# Shapes kept in the per-call cache; PE rows are mostly unique shapes, so cap it.
_MAX_CACHED_SHAPES = 4096

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
    if (b":" in caddr) != (b":" in vaddr) or (protocol == "IP" and b":" in vaddr):
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


def chunks(data: bytes, start: int) -> Iterator[tuple[bytes, int]]:
    """Whole-line chunks of data[start:] with the line number of each chunk's first line."""
    pos, line_no, size = start, 2, len(data)
    while pos < size:
        end = data.rfind(b"\n", pos, pos + CHUNK_BYTES) + 1
        if end <= pos:  # one line longer than a chunk, or an unterminated last line
            newline = data.find(b"\n", pos)
            end = size if newline < 0 else newline + 1
        chunk = data[pos:end]
        yield chunk, line_no
        line_no += chunk.count(b"\n")
        pos = end


class ShapeCounter:
    """Counts shapes chunk by chunk, remembering the decode of each shape seen."""

    def __init__(self, layout: ConnLayout) -> None:
        self.layout = layout
        self._decoded: dict[bytes, ShapeKey | None] = {}

    def count_chunk(self, chunk: bytes) -> list[tuple[ShapeKey, int]] | None:
        """Checked (shape key, rows) pairs of one chunk, or None: parse it exactly."""
        if b"\x00" in chunk:
            return None
        shapes = Counter(chunk.translate(TRANSLATE).split(b"\n"))
        if chunk.endswith(b"\n"):
            shapes[b""] -= 1
            if not shapes[b""]:
                del shapes[b""]
        out = []
        for shape, rows in shapes.items():
            if shape in self._decoded:
                key = self._decoded[shape]
            else:
                key = decode_shape(shape, self.layout)
                if len(self._decoded) < _MAX_CACHED_SHAPES:
                    self._decoded[shape] = key
            if key is None:
                return None
            out.append((key, rows))
        return out


def count_shapes(data: bytes, layout: ConnLayout) -> dict[ShapeKey, int]:
    """(protocol, state, origin) -> rows of a whole file; ParseError on a malformed row."""
    start = _conn_row.body_start(data, layout)
    counter = ShapeCounter(layout)
    counts: dict[ShapeKey, int] = {}
    for chunk, line_no in chunks(data, start):
        checked = counter.count_chunk(chunk)
        if checked is None:
            checked = [
                ((conn.protocol, conn.state, conn.origin), 1)
                for conn in _conn_row.iter_rows(chunk, layout, 0, line_no)
            ]
        for key, rows in checked:
            counts[key] = counts.get(key, 0) + rows
    return counts
