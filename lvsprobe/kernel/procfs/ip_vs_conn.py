"""/proc/net/ip_vs_conn: the connection table, persistence templates included.

Three ways to read it, by cost:
- `count_states`: (protocol, state) -> entries, at C speed (~0.25 µs a row); checks every
  row's layout and field widths, but not which hex digit stands where (`_conn_fast`).
- `summarize_ip_vs_conn`: counts by `ConnCountKey` (service, real server, state, template),
  every field checked, no object per row kept.
- `iter_ip_vs_conn`: one `Conn` per row, streamed.
The table is one global hash shared by all namespaces and is read without a snapshot:
rows can be missed or repeated (docs/kernel/procfs.md#reading-the-table). Eras are in `_conn_row`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from lvsprobe.deadline import Deadline
from lvsprobe.kernel.procfs import _conn_fast, _conn_row, _conn_summary
from lvsprobe.kernel.procfs._conn_summary import NO_DEST
from lvsprobe.kernel.procfs._read import read_file_bytes, read_proc_bytes, read_proc_chunks
from lvsprobe.kernel.procfs.limits import (
    CONN_TABLE_DEFAULT_MAX_BYTES,
    CONN_TABLE_LINE_MAX_BYTES,
    CONN_TABLE_OPTION,
)
from lvsprobe.model import Conn, ConnSummary

__all__ = [
    "DEFAULT_MAX_BYTES",
    "NO_DEST",
    "RAISE_WITH",
    "count_states",
    "iter_ip_vs_conn",
    "read_conn_table_file",
    "read_ip_vs_conn",
    "stream_ip_vs_conn",
    "summarize_ip_vs_conn",
]
SOURCE = _conn_row.CONN.source
DEFAULT_MAX_BYTES = CONN_TABLE_DEFAULT_MAX_BYTES
RAISE_WITH = CONN_TABLE_OPTION


def read_ip_vs_conn(root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of `root/net/ip_vs_conn`, read with large requests until EOF.

    The kernel hands at most ~4 KiB per read() whatever the buffer, and re-walks the hash
    table to its position on each, so a big table takes long to read. `IPVSUnavailable`
    when the file does not exist; `ParseError` past `max_bytes`.
    """
    return read_proc_bytes(root, SOURCE, max_bytes=max_bytes, raise_with=RAISE_WITH)


def stream_ip_vs_conn(
    root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, deadline: Deadline | None = None
) -> Iterator[bytes]:
    """`root/net/ip_vs_conn` in pieces of ~1 MB as read, for `summarize_ip_vs_conn`, which
    then never holds the table whole. `IPVSUnavailable` (on the first piece) when missing;
    `ParseError` past `max_bytes`; `DeadlineExceeded` once `deadline` passed between pieces."""
    return read_proc_chunks(
        root,
        SOURCE,
        max_bytes=max_bytes,
        deadline=deadline,
        raise_with=RAISE_WITH,
        max_line_bytes=CONN_TABLE_LINE_MAX_BYTES,
    )


def read_conn_table_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """A connection table at any path: /proc/net/ip_vs_conn, or a copy saved from one."""
    return read_file_bytes(path, max_bytes=max_bytes, raise_with=RAISE_WITH)


def iter_ip_vs_conn(data: bytes, source: str = SOURCE) -> Iterator[Conn]:
    """One Conn per row, in file order, streamed; ParseError names the malformed line.

    IPv6 addresses are the bare full `%pI6` form; an fwmark template (protocol IP) has
    `virtual_address=None` and the mark in `fwmark`; PEName/PEData (e.g. `sip <Call-ID>`)
    fill `pe_name`/`pe_data` (the data decoded as Latin-1, byte for byte).
    """
    return _conn_row.iter_conns(data, _conn_row.CONN.named(source))


def summarize_ip_vs_conn(
    data: bytes | Iterable[bytes], *, per_real_server: bool = True, source: str = SOURCE
) -> ConnSummary:
    """Entries counted by ConnCountKey (service, real server, state, template).

    `data` is the file whole, or in pieces as read (`stream_ip_vs_conn`).

    With `per_real_server=False` the key's `dest_address`/`dest_port` are `NO_DEST`
    (0.0.0.0) and 0 for every row, so the summary is per service and state only.
    Templates are keyed with `template=True` (protocol IP, or client port 0 in state
    NONE/ASSURED: `Conn.is_template`).
    """
    return _conn_summary.summarize(data, _conn_row.CONN.named(source), per_real_server)


def count_states(data: bytes, source: str = SOURCE) -> dict[tuple[str, str], int]:
    """(protocol, state) -> entries: the fast path for per-state gauges.

    Templates are counted under their own names: ("IP", "NONE"), ("TCP", "ASSURED"), and a
    TCP template in NONE together with TCP connections in NONE. Use the summary when
    templates must be told apart.
    """
    counts: dict[tuple[str, str], int] = {}
    shapes = _conn_fast.count_shapes(data, _conn_row.CONN.named(source))
    for (protocol, state, _), rows in shapes.items():
        counts[(protocol, state)] = counts.get((protocol, state), 0) + rows
    return counts
