"""The connection-table summary: rows counted by `ConnCountKey`, no object per row.

Each chunk is first checked by the shape counter (`_conn_fast`: every field's width and
character class), then its rows are split and counted by the raw fields the key needs;
each distinct raw key is decoded exactly once at the end. Expires is checked row by row
(digits only), so unlike `count_states` nothing malformed gets through.
"""

from __future__ import annotations

import ipaddress
from collections import deque

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn_row, _hex
from lvsprobe.kernel.procfs._conn_fast import ShapeCounter, chunks
from lvsprobe.kernel.procfs._conn_row import ConnLayout
from lvsprobe.model import Conn, ConnCountKey, ConnSummary

# With per_real_server=False every key carries this destination: 0.0.0.0 port 0.
NO_DEST = ipaddress.IPv4Address(0)
_ZERO_PORT = b"0000"

# (protocol, client port is 0, ToIP, TPrt, DestIP, DPrt, state, origin) as raw bytes.
RawKey = tuple[bytes, bool, bytes, bytes, bytes, bytes, bytes, bytes]


def summarize(data: bytes, layout: ConnLayout, per_real_server: bool) -> ConnSummary:
    """Count every row of a whole file by ConnCountKey; ParseError on a malformed row."""
    start = _conn_row.body_start(data, layout)
    shapes = ShapeCounter(layout)
    raw: dict[RawKey, int] = {}
    exact: dict[ConnCountKey, int] = {}
    line_no = 2
    for chunk in chunks(data, start):
        checked = shapes.check(chunk, line_no)
        for conn in checked.exact.values():
            key = count_key(conn, per_real_server)
            exact[key] = exact.get(key, 0) + 1
        if checked.shapes:
            _count_raw(chunk, line_no, checked.exact, shapes, per_real_server, raw)
        line_no += checked.rows
    for key_raw, rows in raw.items():
        try:
            key = _decode(key_raw, layout, per_real_server)
        except ValueError as exc:
            _raise_exact(data, layout)
            raise ParseError(layout.source, None, None, str(exc)) from exc
        exact[key] = exact.get(key, 0) + rows
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
    skip: dict[int, Conn],
    shapes: ShapeCounter,
    per_real_server: bool,
    raw: dict[RawKey, int],
) -> None:
    """Count the shape-checked rows of a chunk by raw key into `raw` (rows in `skip` were
    parsed exactly already). Expires is checked here: the shapes cannot tell digits from
    the hex letters A-F."""
    lines = chunk.split(b"\n")
    if chunk.endswith(b"\n"):
        lines.pop()
    layout = shapes.layout
    expires_at = layout.fixed_fields - 1
    # Without an Origin column the key's last slot repeats the protocol and is ignored.
    origin_at = 8 if layout.origin else 0
    counts: dict[RawKey, int] = {}
    for index, f in enumerate(map(bytes.split, lines)):
        if skip and index in skip:
            continue
        if not f[expires_at].isdigit():
            shapes.parse(lines[index], line_no + index)  # raises the ParseError
        if per_real_server:
            key = (f[0], f[2] == _ZERO_PORT, f[3], f[4], f[5], f[6], f[7], f[origin_at])
        else:
            key = (f[0], f[2] == _ZERO_PORT, f[3], f[4], b"", b"", f[7], f[origin_at])
        counts[key] = counts.get(key, 0) + 1
    for key, rows in counts.items():
        raw[key] = raw.get(key, 0) + rows


def _decode(raw: RawKey, layout: ConnLayout, per_real_server: bool) -> ConnCountKey:
    proto_b, client_port_zero, vaddr_b, vport_b, daddr_b, dport_b, state_b, origin_b = raw
    protocol = proto_b.decode("latin-1")
    state = _conn_row.state(protocol, state_b.decode("latin-1"))
    vaddr, fwmark = _conn_row.virtual(protocol, vaddr_b)
    return ConnCountKey(
        protocol=protocol,
        virtual_address=vaddr,
        virtual_port=int(vport_b, 16),
        fwmark=fwmark,
        dest_address=_hex.address(daddr_b) if per_real_server else NO_DEST,
        dest_port=int(dport_b, 16) if per_real_server else 0,
        state=state,
        template=protocol == "IP" or (client_port_zero and state in _conn_row.TEMPLATE_STATES),
        origin=_conn_row.ORIGINS[origin_b.decode("latin-1")] if layout.origin else None,
    )


def _raise_exact(data: bytes, layout: ConnLayout) -> None:
    """Re-read the file exactly so the error names its line (only on malformed input)."""
    deque(_conn_row.iter_conns(data, layout), maxlen=0)
