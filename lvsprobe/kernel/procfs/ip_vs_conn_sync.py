"""/proc/net/ip_vs_conn_sync: the connection table with the Origin column (LOCAL/SYNC).

The same rows as /proc/net/ip_vs_conn without PEName/PEData, plus `Origin`: SYNC when the
backup's sync daemon created the entry (IP_VS_CONN_F_SYNC). The file exists whether or not
a daemon runs. Rows are parsed by the same code as ip_vs_conn (`_conn_row`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from lvsprobe.deadline import Deadline
from lvsprobe.kernel.procfs import _conn_fast, _conn_row, _conn_summary
from lvsprobe.kernel.procfs._read import read_proc_bytes, read_proc_chunks
from lvsprobe.kernel.procfs.ip_vs_conn import DEFAULT_MAX_BYTES, RAISE_WITH
from lvsprobe.kernel.procfs.limits import CONN_TABLE_LINE_MAX_BYTES
from lvsprobe.model import Conn, ConnSummary, Origin

SOURCE = _conn_row.CONN_SYNC.source


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
    return _conn_row.iter_conns(data, _conn_row.CONN_SYNC.named(source))


def summarize_ip_vs_conn_sync(
    data: bytes | Iterable[bytes], *, per_real_server: bool = True, source: str = SOURCE
) -> ConnSummary:
    """Like `summarize_ip_vs_conn` (whole or streamed); every key carries its `origin`."""
    return _conn_summary.summarize(data, _conn_row.CONN_SYNC.named(source), per_real_server)


def count_states(data: bytes, source: str = SOURCE) -> dict[tuple[str, str], int]:
    """(protocol, state) -> entries, LOCAL and SYNC together (see `count_states_by_origin`)."""
    counts: dict[tuple[str, str], int] = {}
    for (protocol, state, _), rows in count_states_by_origin(data, source).items():
        counts[(protocol, state)] = counts.get((protocol, state), 0) + rows
    return counts


def count_states_by_origin(
    data: bytes, source: str = SOURCE
) -> dict[tuple[str, str, Origin | None], int]:
    """(protocol, state, origin) -> entries, at the speed of `count_states`.

    `origin` is never None here (every row of this file has the column); the type is the
    shared one of the shape counter.
    """
    return _conn_fast.count_shapes(data, _conn_row.CONN_SYNC.named(source))
