"""Reading a big flow log for the analyzers: a generated flows.parquet of 10M rows (what a
`replay run --workers` of a few minutes writes), read by `lvsprobe.analyze.inputs.read_flows`
(only the analyzers' columns, a projected pyarrow dataset) and, for comparison, the same
function reading every column (what it did before). Each read runs in a
fresh interpreter, timed after its imports; printed: wall time and the child's peak RSS.

    python -m bench flowlog_read [--rows N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROW_GROUP = 1_000_000

READERS = {
    "projected (inputs.read_flows)": "frame = inputs.read_flows(PATH)",
    # the same function reading every column, as it did before
    "every column (read_flows before)": (
        "inputs._read_columns = lambda p: pyarrow.parquet.read_table(str(p))\n"
        "frame = inputs.read_flows(PATH)"
    ),
}

CHILD = """
import json, sys, time
from pathlib import Path
import pandas, pyarrow.parquet
from lvsprobe.analyze import inputs

def hwm_mib():
    # VmHWM, not getrusage's ru_maxrss: that one keeps the parent's peak across exec
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

PATH = Path(sys.argv[1])
imported_mib = hwm_mib()
started = time.perf_counter()
{reader}
elapsed = time.perf_counter() - started
print(json.dumps({{"rows": len(frame), "columns": len(frame.columns), "s": elapsed,
                  "peak_mib": hwm_mib(), "imported_mib": imported_mib}}))
"""


def _strings(values: list[str], picks: object) -> object:
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(picks, pa.array(values)).cast(pa.string())


def generate(path: Path, rows: int) -> None:
    """A flow log of `rows` HTTP flows from 1000 clients to three backends, four workers."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from lvsprobe.replay.flowlog import flow_schema

    schema = flow_schema()
    rng = np.random.default_rng(1)
    clients = [f"198.18.{16 + i // 250}.{1 + i % 250}" for i in range(1000)]
    backends = ["rs1", "rs2", "rs3"]
    with pq.ParquetWriter(str(path), schema) as writer:
        for first in range(0, rows, ROW_GROUP):
            n = min(ROW_GROUP, rows - first)
            ids = np.arange(first, first + n, dtype=np.int64)
            start = ids / 50_000.0
            pick = (ids % 3).astype(np.int32)
            columns = {
                "flow_id": ids,
                "kind": _strings(["http"], np.zeros(n, np.int32)),
                "client_address": _strings(clients, (ids % 1000).astype(np.int32)),
                "client_port": rng.integers(32768, 60999, n, dtype=np.int32),
                "server_address": _strings(["198.18.1.100"], np.zeros(n, np.int32)),
                "server_port": np.full(n, 80, np.int32),
                "protocol": _strings(["tcp"], np.zeros(n, np.int32)),
                "scheduled_s": start,
                "start_s": start + 1e-4,
                "start_unix": start + 1.7e9,
                "connect_s": rng.exponential(3e-4, n),
                "ttfb_s": rng.exponential(1e-3, n),
                "end_s": start + 2e-3,
                "out_bytes": np.full(n, 64, np.int64),
                "in_bytes": np.full(n, 180, np.int64),
                "outcome": _strings(["ok"], np.zeros(n, np.int32)),
                "backend": _strings(backends, pick),
                "conn_backend_address": _strings(
                    ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"], pick
                ),
                "conn_backend": _strings(backends, pick),
                "attribution_agrees": np.ones(n, bool),
                "requests": np.ones(n, np.int32),
                "heartbeats": np.zeros(n, np.int32),
                "worker": _strings(["w0", "w1", "w2", "w3"], (ids % 4).astype(np.int32)),
            }
            arrays = [
                pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
                for f in schema
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-flowlog-") as tmp:
        path = Path(tmp) / "flows.parquet"
        started = time.monotonic()
        generate(path, args.rows)
        print(f"  generated {args.rows:,} rows in {time.monotonic() - started:.1f} s: "
              f"{path.stat().st_size / 2**20:.0f} MiB on disk")  # fmt: skip
        for label, reader in READERS.items():
            out = subprocess.run(
                [sys.executable, "-c", CHILD.format(reader=reader), str(path)],
                capture_output=True,
                text=True,
                check=True,
                cwd=root,
                timeout=1800,
            )
            got = json.loads(out.stdout)
            print(f"  {label:34s} {got['rows']:,} rows x {got['columns']} columns: "
                  f"{got['s']:6.1f} s, peak RSS {got['peak_mib']:7.0f} MiB "
                  f"({got['imported_mib']:.0f} MiB after the imports)")  # fmt: skip


if __name__ == "__main__":
    main()
