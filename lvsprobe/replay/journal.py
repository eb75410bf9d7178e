"""An append-only journal of rows that outlives its writer: Arrow record batches in the Arrow
IPC stream format, one batch per flush, appended to one file.

Why this format: a Parquet file is unreadable until its footer is written, so a writer killed
by SIGKILL (or the OOM killer) loses everything. An IPC stream has no footer: each batch is a
self-delimiting message (length, metadata, body), so any prefix of the file holds every batch
that was completely written before it; a batch torn by the writer's death is detected (its body
is shorter than its length says) and dropped. The file is unbuffered in user space: a flushed
batch is in the kernel once `flush()` returns, which SIGKILL does not undo.

Rows wait in memory until `flush_rows` of them have come or the oldest has waited
`flush_every_s`, whichever is first, so a flush costs one write per batch, not per row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa

Row = TypeVar("Row")

FLUSH_ROWS = 1024
FLUSH_EVERY_S = 1.0


class Batcher(Generic[Row]):
    """Rows held until `flush_rows` of them have come or the oldest has waited
    `flush_every_s`, then written as one batch by `_write`: the rule both a run's journal and
    a Dask shard's chunks follow (the engines call add, tick and flush)."""

    def __init__(
        self,
        flush_rows: int = FLUSH_ROWS,
        flush_every_s: float = FLUSH_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.flush_rows, self.flush_every_s = flush_rows, flush_every_s
        self._clock = clock
        self._pending: list[Row] = []
        self._oldest_s = 0.0

    def add(self, row: Row) -> None:
        if not self._pending:
            self._oldest_s = self._clock()
        self._pending.append(row)
        if len(self._pending) >= self.flush_rows:
            self.flush()

    def tick(self) -> None:
        """Flush if the oldest waiting row has waited `flush_every_s` (call it when idle)."""
        if self._pending and self._clock() - self._oldest_s >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        # taken off first: an exception in the write loses these rows, never writes them twice
        rows, self._pending = self._pending, []
        self._write(rows)

    def _write(self, rows: list[Row]) -> None:
        raise NotImplementedError


class Journal(Batcher[Row]):
    """Appends rows to `path` in batches; `to_table` turns a list of rows into an Arrow table
    with `schema`. Not thread-safe: one engine thread adds, ticks and flushes.

    With `keep`, the batches written are also kept (`written()`): a run's finish writes
    flows.parquet from them. Reading them back from the file instead allocated a second copy
    at the finish, which then ran slower (at 100k flows about 50 ms more in all); the run
    holds the batches (~220 bytes a flow) from the time they are written, no more at its end.
    """

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        to_table: Callable[[list[Row]], pa.Table],
        flush_rows: int = FLUSH_ROWS,
        flush_every_s: float = FLUSH_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        keep: bool = False,
    ) -> None:
        import pyarrow as pa

        super().__init__(flush_rows, flush_every_s, clock)
        self.path = path
        self.rows_written = 0
        self._to_table = to_table
        self._schema = schema
        self._kept: list[pa.Table] | None = [] if keep else None
        # Uncompressed: compression (zstd, lz4) costs 1-4 ms per batch, the flow log's 29
        # columns each compressed on their own, in the engine's loop; the journal (~180
        # bytes a flow) lives only until flows.parquet is written.
        self._sink: Any = pa.OSFile(str(path), "wb")
        self._writer: Any = pa.ipc.new_stream(self._sink, schema)

    def flush(self) -> None:
        if self._writer is not None:
            super().flush()

    def _write(self, rows: list[Row]) -> None:
        table = self._to_table(rows)
        self._writer.write_table(table)
        self.rows_written += len(rows)
        if self._kept is not None:  # once written: what is kept is what the file holds
            self._kept.append(table)

    def written(self) -> pa.Table | None:
        """Every row written so far, as the batches were (None unless made with `keep`)."""
        if self._kept is None:
            return None
        import pyarrow as pa

        return pa.concat_tables(self._kept) if self._kept else self._schema.empty_table()

    def close(self) -> None:
        """Flush and end the stream (the journal stays on disk until `discard()`)."""
        if self._writer is None:
            return
        self.flush()
        self._writer.close()
        self._sink.close()
        self._writer = None

    def discard(self) -> None:
        """Close and delete the journal: its rows are in the final log now."""
        self.close()
        self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class JournalRead:
    """The rows of a journal; `torn` when it ends in a batch its writer did not finish."""

    table: pa.Table
    torn: bool


def read_journal(path: Path) -> JournalRead:
    """Every complete batch of the journal at `path` (OSError if it cannot be opened).

    A file too short to hold its schema (the writer died before its first flush, when the
    schema is written) reads as no rows, with `table` then lacking the schema's columns: the
    caller supplies them.
    """
    import pyarrow as pa

    batches = []
    # Read, not memory-mapped: a mapped file that another process truncates, or a network
    # file system that fails a page in, kills the reader with SIGBUS (no error, no summary).
    with pa.OSFile(str(path)) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except (pa.ArrowInvalid, OSError):
            return JournalRead(pa.table({}), torn=source.size() > 0)
        torn = False
        while True:
            try:
                batches.append(reader.read_next_batch())
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError):  # the last batch was cut short
                torn = True
                break
        return JournalRead(pa.Table.from_batches(batches, reader.schema), torn)
