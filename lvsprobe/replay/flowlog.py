"""The replay flow log: one record per flow, its Parquet schema, and the run directory.

Run directory layout (what `lvsprobe replay run … --out RUN/` writes; the analyzers read it):

    RUN/flows.parquet          one row per flow, columns = FLOW_SCHEMA (below), sorted by
                               flow_id; written when the run ends
    RUN/flows.journal.arrows   while the run goes on: each flow appended as it finishes
                               (Arrow IPC stream, flushed every second), so a run killed
                               before its end keeps its finished flows; removed once
                               flows.parquet is written. `read_flows` reads whichever is there,
                               `lvsprobe replay summary RUN` turns a dead run's journal into
                               flows.parquet and summary.json
    RUN/summary.json           totals: flows, outcomes, per-backend counts, attribution
                               agreement, `complete` (False after Ctrl-C or a bound hit early)
    RUN/scenario.yaml          the scenario as run (byte copy of the input file)
    RUN/target.json            the resolved target (address, port, protocol, fwmark,
                               backends name -> address) and the seed
    RUN/conn-snapshots/NNNN.txt
                               /proc/net/ip_vs_conn of the director, taken during the run
                               (NNNN = sequence number; first line of each file after the
                               kernel header is untouched kernel text, the capture time is in
                               conn-snapshots/index.json: [{"file", "t_s"}])

Times: `scheduled_s`, `start_s` and `end_s` are seconds since the run started (monotonic
clock): when the flow was meant to start (its planned time in open models; its start in closed
ones), when it started, when it ended; `start_unix` is the wall-clock start for joining with
other logs. Durations (`connect_s`, `ttfb_s`, `total_s`) are seconds from the flow's start;
`connect_corrected_s`, `ttfb_corrected_s` and `total_corrected_s` the same events timed from
`scheduled_s` (see latency.py). In the `pool` arrival model a flow is one request on a pooled
keep-alive connection. Byte counts are application payload bytes
(`out_bytes` client -> server, `in_bytes` server -> client).

Outcome is one of `ok`, `refused`, `reset`, `timeout`, `error:<reason>`.

Backend attribution, two ways: `backend` is what the backend said about itself (header,
banner, reply), `conn_backend` is the real server the director's connection table mapped the
flow's client address:port to (`conn_backend_address` raw, `conn_backend` its name when the
target names its backends). `attribution_agrees` is null when either side is unknown.

`worker` names the Dask worker whose shard drove the flow in a run spread with `--workers`
(lvsprobe/replay/scaleout.py); it is null in a single-process run.

Column names are stable: add columns, never rename or remove them.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvsprobe.errors import LvsprobeError
from lvsprobe.replay.flowrecord import COLUMNS, FlowRecord
from lvsprobe.replay.flowrecord import backend_of as backend_of  # (re-exported: live.py)
from lvsprobe.replay.journal import Journal, read_journal

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa


SCHEMA_VERSION = 1

FLOWS_FILE = "flows.parquet"
JOURNAL_FILE = "flows.journal.arrows"
SUMMARY_FILE = "summary.json"
SCENARIO_FILE = "scenario.yaml"
TARGET_FILE = "target.json"
SNAPSHOT_DIR = "conn-snapshots"
SNAPSHOT_INDEX = "index.json"

_META_PLANNED = b"lvsprobe.run.planned"
_META_SCENARIO = b"lvsprobe.run.scenario"


@functools.cache
def flow_schema() -> pa.Schema:
    """The Arrow schema of flows.parquet, built from COLUMNS."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(name, getattr(pa, type_name)(), nullable=null)
            for name, type_name, null in COLUMNS
        ],
        metadata={b"lvsprobe.flowlog.version": str(SCHEMA_VERSION).encode()},
    )


def __getattr__(name: str) -> Any:
    if name == "FLOW_SCHEMA":  # the schema as a module constant, built on first use
        return flow_schema()
    raise AttributeError(name)


_COLUMNS = tuple(name for name, _, _ in COLUMNS)
# The journal is sorted by pyarrow.compute, whose import (tens of ms) costs as much as
# converting some 20k records again (about 2 us each): below that, the records are converted.
JOURNAL_SORT_MIN_ROWS = 20_000
# Dictionary encoding pays where values repeat (addresses, kinds, outcomes, backends). In
# the number columns nearly every value is new: the writer built a dictionary for each row
# group only to fall back to plain encoding, half the write's time, for a larger file.
_DICTIONARY_COLUMNS = [name for name, type_name, _ in COLUMNS if type_name == "string"]
_FIELDS = operator.attrgetter(*_COLUMNS)  # a record's fields, in column order
_FLOW_ID = operator.attrgetter("flow_id")
# Rows per row group of flows.parquet: at 4096, a 100k-flow log's write took a quarter longer
# (a page, statistics and a dictionary per column of each group); 65536 rows (~12 MB of
# Arrow) keep a reader that goes group by group small.
ROW_GROUP_ROWS = 65_536


def records_to_table(records: Iterable[FlowRecord]) -> pa.Table:
    """Build an Arrow table with FLOW_SCHEMA from records (the engines' journal does it
    every batch: each record's fields read in one C-level call, turned into columns by zip,
    each column built without pyarrow's pandas check, see arrowarrays.py)."""
    import pyarrow as pa

    from lvsprobe.replay.arrowarrays import arrow_array

    rows = list(map(_FIELDS, records))
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
    arrays = []
    for (name, type_name, _), values in zip(COLUMNS, columns, strict=True):
        try:
            arrays.append(arrow_array(values, type_name))
        except TypeError as exc:
            raise TypeError(f"flow log column {name}: {exc}") from exc
    return pa.Table.from_arrays(arrays, schema=flow_schema())


def records_from_table(table: pa.Table) -> list[FlowRecord]:
    """The records of a flow-log table (the inverse of `records_to_table`)."""
    return [FlowRecord(**row) for row in table.select(list(_COLUMNS)).to_pylist()]


class FlowLogWriter:
    """Streams records into RUN/flows.parquet in row groups of `batch` rows; `close()` puts the
    finished file in place (written beside it, then renamed: a reader never sees half a log,
    and an older log stays whole until the new one is complete)."""

    def __init__(self, path: Path, batch: int = ROW_GROUP_ROWS):
        self.path = path
        self._tmp = path.with_name(path.name + ".tmp")
        self._batch = batch
        self._pending: list[FlowRecord] = []
        import pyarrow.parquet as pq

        self._writer: Any = pq.ParquetWriter(
            str(self._tmp), flow_schema(), use_dictionary=_DICTIONARY_COLUMNS
        )
        self.written = 0

    def add(self, record: FlowRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= self._batch:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        """Rows already in Arrow (FLOW_SCHEMA, metadata aside), after any records added."""
        self.flush()
        table = table.replace_schema_metadata(flow_schema().metadata)
        self._writer.write_table(table, row_group_size=self._batch)
        self.written += table.num_rows

    def flush(self) -> None:
        if self._pending and self._writer is not None:
            self._writer.write_table(records_to_table(self._pending))
            self.written += len(self._pending)
            self._pending = []

    def close(self) -> None:
        if self._writer is None:
            return
        self.flush()
        self._writer.close()
        self._writer = None
        self._tmp.replace(self.path)


def records_table(records: Iterable[FlowRecord]) -> pa.Table:
    """`records_to_table` of any number of records, ROW_GROUP_ROWS at a time (converting
    them all in one go would hold a tuple per record and per column at once)."""
    import pyarrow as pa

    rows = list(records)
    pieces = range(0, len(rows), ROW_GROUP_ROWS)
    if len(pieces) <= 1:
        return records_to_table(rows)
    return pa.concat_tables(records_to_table(rows[i : i + ROW_GROUP_ROWS]) for i in pieces)


def write_flows(run_dir: Path, records: Iterable[FlowRecord]) -> int:
    """RUN/flows.parquet from `records` (sorted by flow_id), then the journal it supersedes
    is removed; returns the rows written."""
    return write_flows_table(run_dir, records_table(sorted(records, key=_FLOW_ID)))


def write_flows_table(run_dir: Path, table: pa.Table) -> int:
    """RUN/flows.parquet from a flow-log table sorted by flow_id (a journal's, read back),
    then the journal is removed; returns the rows written."""
    writer = FlowLogWriter(run_dir / FLOWS_FILE)
    writer.add_table(table)
    writer.close()
    (run_dir / JOURNAL_FILE).unlink(missing_ok=True)
    return writer.written


def finish_flows(run_dir: Path, records: Sequence[FlowRecord], changed: Sequence[str] = ()) -> int:
    """RUN/flows.parquet at the end of a run (its journal closed: see `flows_table`);
    returns the rows written."""
    return write_flows_table(run_dir, flows_table(run_dir, records, changed))


def flows_table(
    run_dir: Path,
    records: Sequence[FlowRecord],
    changed: Sequence[str] = (),
    journaled: pa.Table | None = None,
) -> pa.Table:
    """The table of a run's flow log (its journal closed), sorted by flow_id. From the
    journal (`journaled`: the rows its Journal kept, else its file) when that holds exactly
    `records` (sorted by flow_id): their rows are in Arrow already, converted batch by batch
    as the run went, and converting every record again was a third of a run's finish. The
    `changed` columns, filled after the flows were journaled (the conn-table join), are
    taken from the records. Otherwise from the records."""
    table = _journaled(run_dir, records, journaled)
    if table is None:
        return records_table(sorted(records, key=_FLOW_ID))
    from lvsprobe.replay.arrowarrays import arrow_array

    for name, type_name, _ in COLUMNS:
        if name in changed:
            values = list(map(operator.attrgetter(name), records))
            index = table.schema.get_field_index(name)
            field = table.schema.field(index)
            table = table.set_column(index, field, arrow_array(values, type_name))
    return table


def _journaled(
    run_dir: Path, records: Sequence[FlowRecord], written: pa.Table | None
) -> pa.Table | None:
    """The run's journal (`written`: the rows its Journal kept; else read from its file) as
    a table sorted by flow_id, if it holds exactly the flows of `records` (sorted by flow_id)
    and nothing torn; else None. A journal out of flow order (flows end in another order
    than they start) is sorted only from JOURNAL_SORT_MIN_ROWS rows on. (The flow ids
    compared from the column's buffers: its `to_numpy()` imports pandas.)"""
    import numpy as np

    from lvsprobe.replay.arrowarrays import int64_array, numpy_of

    if written is None:
        try:
            read = read_journal(run_dir / JOURNAL_FILE)
        except OSError:
            return None
        if read.torn:
            return None
        written = read.table
    table = written
    if table.num_rows != len(records) or table.num_columns != len(COLUMNS):
        return None
    if not table.schema.remove_metadata().equals(flow_schema().remove_metadata()):
        return None
    ids = np.fromiter(map(_FLOW_ID, records), dtype=np.int64, count=len(records))
    journaled = numpy_of(table.column("flow_id"), "int64")
    if journaled.present is not None:
        return None
    if np.array_equal(journaled.values, ids):
        return table  # in flow order already
    if table.num_rows < JOURNAL_SORT_MIN_ROWS:
        return None
    order = np.argsort(journaled.values, kind="stable")
    if not np.array_equal(journaled.values[order], ids):
        return None
    return table.take(int64_array(order))


def open_journal(run_dir: Path, planned: int, scenario: str) -> Journal[FlowRecord]:
    """RUN/flows.journal.arrows, to which each flow is added as it finishes; the run's
    planned flow count and scenario name ride in its schema for a summary rebuilt later."""
    meta = {_META_PLANNED: str(planned).encode(), _META_SCENARIO: scenario.encode()}
    schema = flow_schema().with_metadata({**flow_schema().metadata, **meta})
    return Journal(run_dir / JOURNAL_FILE, schema, records_to_table, keep=True)


@dataclass(frozen=True)
class FlowLog:
    """A run's flow log as read: the table, and whether it is the journal of an unfinished
    run (`planned` and `scenario` then come from the journal, `torn` if it ends mid-batch)."""

    table: pa.Table
    from_journal: bool = False
    torn: bool = False
    planned: int | None = None
    scenario: str | None = None


def read_flow_log(run_dir: Path) -> FlowLog:
    """RUN/flows.parquet, or else the journal of a run that is still going or never ended.

    Raises LvsprobeError naming the file when neither is there or readable.
    """
    import pyarrow.parquet as pq

    final, journal = run_dir / FLOWS_FILE, run_dir / JOURNAL_FILE
    if final.is_file():
        try:
            return FlowLog(_whole(pq.read_table(str(final), schema=flow_schema()), final))
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise LvsprobeError(f"{final}: not a readable flow log: {exc}") from exc
    if not journal.is_file():
        raise LvsprobeError(f"{run_dir}: no flow log (neither {FLOWS_FILE} nor {JOURNAL_FILE})")
    try:
        read = read_journal(journal)
    except OSError as exc:
        raise LvsprobeError(f"{journal}: unreadable journal: {exc.strerror or exc}") from exc
    if read.table.num_columns == 0:  # the writer died before its first write
        return FlowLog(flow_schema().empty_table(), True, read.torn)
    meta = read.table.schema.metadata or {}
    if not read.table.schema.remove_metadata().equals(flow_schema().remove_metadata()):
        raise LvsprobeError(f"{journal}: not a flow journal of this lvsprobe version")
    planned = meta.get(_META_PLANNED)
    return FlowLog(
        _whole(read.table, journal)
        .replace_schema_metadata(flow_schema().metadata)
        .sort_by("flow_id"),
        True,
        read.torn,
        int(planned) if planned is not None else None,
        meta[_META_SCENARIO].decode() if _META_SCENARIO in meta else None,
    )


def _whole(table: pa.Table, path: Path) -> pa.Table:
    """`table`, if every column the schema says has no nulls has none (another writer's file
    may say so and not hold to it: the summary would read undefined values)."""
    for field in flow_schema():
        nulls = table.column(field.name).null_count
        if not field.nullable and nulls:
            raise LvsprobeError(
                f"{path}: not a readable flow log: column {field.name!r} is null in {nulls} "
                f"of {table.num_rows} rows (a flow log's never is)"
            )
    return table


def read_flows(run_dir: Path) -> pa.Table:
    """Every finished flow of RUN as an Arrow table (`.to_pandas()` for a DataFrame), from
    flows.parquet or, for a run still going or killed, its journal (see `read_flow_log`)."""
    return read_flow_log(run_dir).table


def quantile(values: Sequence[float] | np.ndarray, q: float) -> float | None:
    """The value at rank ceil(q * n) of `values` (a selection, not a sort)."""
    if not len(values):
        return None
    import numpy as np

    pos = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return round(float(np.partition(np.array(values, dtype=np.float64), pos)[pos]), 6)


_quantile = quantile  # (the name tests/replay/test_flowlog.py knows it by)
