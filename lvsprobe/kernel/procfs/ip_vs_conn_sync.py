"""/proc/net/ip_vs_conn_sync: the connection table with the Origin column (LOCAL/SYNC).

The same rows as /proc/net/ip_vs_conn without PEName/PEData, plus `Origin`: SYNC when the
backup's sync daemon created the entry (IP_VS_CONN_F_SYNC). The file exists whether or not
a daemon runs. Its row, `SYNC_ROW`, shares its columns and readers with ip_vs_conn (`_conn`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from lvsprobe.deadline import Deadline
from lvsprobe.kernel.procfs import _conn, _conn_count
from lvsprobe.kernel.procfs._format import RowFormat
from lvsprobe.kernel.procfs._read import read_proc_bytes, read_proc_chunks
from lvsprobe.kernel.procfs.cache import ParseCache
from lvsprobe.kernel.procfs.ip_vs_conn import DEFAULT_MAX_BYTES, RAISE_WITH, summarize
from lvsprobe.kernel.procfs.limits import CONN_TABLE_LINE_MAX_BYTES
from lvsprobe.model import Conn, ConnSummary, Origin

# ip_vs_conn_sync_seq_show (ip_vs_conn.c), K4.19 ... K6.12, under the header
# "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires":
#   "%-3s %08X %04X %08X %04X %s %04X %-11s %-6s %7u\n"     (IPv4 entry)
#   "%-3s %pI6 %04X %pI6 %04X %s %04X %-11s %-6s %7u\n"     (IPv6 entry)
SYNC_ROW = RowFormat(
    "net/ip_vs_conn_sync",
    "{protocol} {client_address} {client_port} {virtual_address} {virtual_port}"
    " {dest_address} {dest_port} {state} {origin} {expires_s}",
    (*_conn.ENTRY, _conn.ORIGIN, _conn.EXPIRES),
)
SOURCE = SYNC_ROW.source


def read_ip_vs_conn_sync(root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of `root/net/ip_vs_conn_sync` (read like `read_ip_vs_conn`)."""
    return read_proc_bytes(root, SOURCE, max_bytes=max_bytes, raise_with=RAISE_WITH)


def stream_ip_vs_conn_sync(
    root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, deadline: Deadline | None = None
) -> Iterator[bytes]:
    """`root/net/ip_vs_conn_sync` in pieces as read (see `ip_vs_conn.stream_ip_vs_conn`)."""
    return read_proc_chunks(
        root,
        SOURCE,
        max_bytes=max_bytes,
        deadline=deadline,
        raise_with=RAISE_WITH,
        max_line_bytes=CONN_TABLE_LINE_MAX_BYTES,
    )


def iter_ip_vs_conn_sync(data: bytes, source: str = SOURCE) -> Iterator[Conn]:
    """One Conn per row with `origin` set, streamed; ParseError names the malformed line."""
    return _conn.iter_conns(data, SYNC_ROW.named(source))


def summarize_ip_vs_conn_sync(
    data: bytes | Iterable[bytes],
    *,
    per_real_server: bool = True,
    source: str = SOURCE,
    cache: ParseCache | None = None,
) -> ConnSummary:
    """Like `summarize_ip_vs_conn` (whole or streamed); every key carries its `origin`."""
    return summarize(SYNC_ROW.named(source), data, per_real_server, cache)


def count_states(data: bytes, source: str = SOURCE) -> dict[tuple[str, str], int]:
    """(protocol, state) -> entries, LOCAL and SYNC together (see `count_states_by_origin`)."""
    counts: dict[tuple[str, str], int] = {}
    for (protocol, state, _), rows in count_states_by_origin(data, source).items():
        counts[(protocol, state)] = counts.get((protocol, state), 0) + rows
    return counts


def count_states_by_origin(
    data: bytes, source: str = SOURCE
) -> dict[tuple[str, str, Origin | None], int]:
    """(protocol, state, origin) -> entries. `origin` is never None here (every row of this
    file has the column); the type is the one shared with ip_vs_conn's counts."""
    return _conn_count.count(data, SYNC_ROW.named(source), _conn_count.BY_STATE)
