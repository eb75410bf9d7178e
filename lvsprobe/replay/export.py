"""`lvsprobe replay export`: a run's flow log as CSV or JSON lines, batch by batch.

Rows come from `flowlog.read_flows` (flows.parquet, or the journal of a run still going or
killed), in flow_id order, every column of the flow log in its order. CSV has one header line
and empty cells for nulls; JSON lines hold one object per flow, nulls as null. Times are
seconds, as in the flow log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO

from lvsprobe.replay.flowlog import read_flows

FORMATS = ("csv", "jsonl")
BATCH_ROWS = 8192  # rows converted at a time: the text is never held whole


def write_export(run_dir: Path, fmt: str, out: IO[bytes]) -> int:
    """Write the run's flows to `out` in `fmt`; the rows written."""
    import pyarrow.csv as pacsv

    table = read_flows(run_dir)
    batches = table.to_batches(max_chunksize=BATCH_ROWS)
    if fmt == "csv":
        with pacsv.CSVWriter(out, table.schema) as writer:  # leaves `out` open
            for batch in batches:
                writer.write_batch(batch)
        return table.num_rows
    for batch in batches:
        rows = batch.to_pylist()
        out.write("".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode())
    return table.num_rows
