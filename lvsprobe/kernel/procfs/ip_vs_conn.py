"""/proc/net/ip_vs_conn: the connection table, persistence templates included.

Its row is declared once, `CONN_ROW`, from `ip_vs_conn_seq_show`'s printf; the readers:
- `iter_ip_vs_conn`: one `Conn` per row, streamed: the exact reading;
- `summarize_ip_vs_conn`: counts by `ConnCountKey` (service, real server, state, template),
  no object per row kept;
- `count_states`: (protocol, state) -> entries.
The counts go the exact or the columnar way (`_conn_count`), every field checked either way.
The table is one global hash shared by all namespaces and is read without a snapshot:
rows can be missed or repeated (docs/kernel/procfs.md#reading-the-table). Eras are in `_conn`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from lvsprobe.deadline import Deadline
from lvsprobe.kernel.procfs import _conn, _conn_count
from lvsprobe.kernel.procfs._conn_count import NO_DEST
from lvsprobe.kernel.procfs._format import RowFormat
from lvsprobe.kernel.procfs._read import read_file_bytes, read_proc_bytes, read_proc_chunks
from lvsprobe.kernel.procfs.cache import ParseCache
from lvsprobe.kernel.procfs.limits import (
    CONN_TABLE_DEFAULT_MAX_BYTES,
    CONN_TABLE_LINE_MAX_BYTES,
    CONN_TABLE_OPTION,
)
from lvsprobe.model import Conn, ConnCountKey, ConnSummary

__all__ = [
    "CONN_ROW",
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
# ip_vs_conn_seq_show (ip_vs_conn.c), K4.19 ... K6.12, under the header
# "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData":
#   "%-3s %08X %04X %08X %04X %s %04X %-11s %7u%s\n"     (IPv4 entry)
#   "%-3s %pI6 %04X %pI6 %04X %s %04X %-11s %7u%s\n"     (IPv6 entry)
CONN_ROW = RowFormat(
    "net/ip_vs_conn",
    "{protocol} {client_address} {client_port} {virtual_address} {virtual_port}"
    " {dest_address} {dest_port} {state} {expires_s}{pe}",
    (*_conn.ENTRY, _conn.EXPIRES, _conn.PE),
)
SOURCE = CONN_ROW.source
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
    return _conn.iter_conns(data, CONN_ROW.named(source))


def summarize_ip_vs_conn(
    data: bytes | Iterable[bytes],
    *,
    per_real_server: bool = True,
    source: str = SOURCE,
    cache: ParseCache | None = None,
) -> ConnSummary:
    """Entries counted by ConnCountKey (service, real server, state, template).

    `data` is the file whole, or in pieces as read (`stream_ip_vs_conn`); `cache` keeps
    the decoded keys for the next summary of the same table (a scraper's).

    With `per_real_server=False` the key's `dest_address`/`dest_port` are `NO_DEST`
    (0.0.0.0) and 0 for every row, so the summary is per service and state only.
    Templates are keyed with `template=True` (protocol IP, or client port 0 in state
    NONE/ASSURED: `Conn.is_template`).
    """
    return summarize(CONN_ROW.named(source), data, per_real_server, cache)


def summarize(
    fmt: RowFormat, data: bytes | Iterable[bytes], per_real_server: bool, cache: ParseCache | None
) -> ConnSummary:
    """The summary of either connection file (this one's or ip_vs_conn_sync's format)."""
    grouping = _conn_count.BY_REAL_SERVER if per_real_server else _conn_count.BY_SERVICE
    counts: dict[ConnCountKey, int] = _conn_count.count(data, fmt, grouping, cache)
    return ConnSummary(counts=counts, total=sum(counts.values()))


def count_states(data: bytes, source: str = SOURCE) -> dict[tuple[str, str], int]:
    """(protocol, state) -> entries: for per-state gauges.

    Templates are counted under their own names: ("IP", "NONE"), ("TCP", "ASSURED"), and a
    TCP template in NONE together with TCP connections in NONE. Use the summary when
    templates must be told apart.
    """
    counts: dict[tuple[str, str], int] = {}
    by_state = _conn_count.count(data, CONN_ROW.named(source), _conn_count.BY_STATE)
    for (protocol, state, _), rows in by_state.items():
        counts[(protocol, state)] = counts.get((protocol, state), 0) + rows
    return counts
