"""The replay flow log: one record per flow, its Parquet schema, and the run directory.

Run directory layout (what `lvsprobe replay run … --out RUN/` writes; the analyzers read it):

    RUN/flows.parquet          one row per flow, columns = FLOW_SCHEMA (below)
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

Times: `start_s` and `end_s` are seconds since the run started (monotonic clock);
`start_unix` is the wall-clock start for joining with other logs. Durations (`connect_s`,
`ttfb_s`) are seconds from the flow's start. Byte counts are application payload bytes
(`out_bytes` client -> server, `in_bytes` server -> client).

Outcome is one of `ok`, `refused`, `reset`, `timeout`, `error:<reason>`.

Backend attribution, two ways: `backend` is what the backend said about itself (header,
banner, reply), `conn_backend` is the real server the director's connection table mapped the
flow's client address:port to (`conn_backend_address` raw, `conn_backend` its name when the
target names its backends). `attribution_agrees` is null when either side is unknown.

Column names are stable: add columns, never rename or remove them.
"""

from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


SCHEMA_VERSION = 1

FLOWS_FILE = "flows.parquet"
SUMMARY_FILE = "summary.json"
SCENARIO_FILE = "scenario.yaml"
TARGET_FILE = "target.json"
SNAPSHOT_DIR = "conn-snapshots"
SNAPSHOT_INDEX = "index.json"

OUTCOMES = ("ok", "refused", "reset", "timeout")  # plus "error:<reason>"

# (column, Arrow type, nullable). pyarrow is imported only when a log is written or read:
# importing it costs ~10 s of Python start-up inside the TCG lab guest.
COLUMNS: tuple[tuple[str, str, bool], ...] = (
    ("flow_id", "int64", False),
    ("kind", "string", False),
    ("client_address", "string", False),
    ("client_port", "int32", True),
    ("server_address", "string", False),
    ("server_port", "int32", False),
    ("protocol", "string", False),
    ("scheduled_s", "float64", False),
    ("start_s", "float64", False),
    ("start_unix", "float64", False),
    ("connect_s", "float64", True),
    ("ttfb_s", "float64", True),
    ("end_s", "float64", False),
    ("out_bytes", "int64", False),
    ("in_bytes", "int64", False),
    ("outcome", "string", False),
    ("detail", "string", True),
    ("backend", "string", True),
    ("conn_backend_address", "string", True),
    ("conn_backend", "string", True),
    ("attribution_agrees", "bool_", True),
    ("requests", "int32", False),
    ("heartbeats", "int32", False),
    ("tls_session_reused", "bool_", True),
    ("tls_version", "string", True),
    ("ftp_data_client_port", "int32", True),
    ("ftp_file_size", "int64", True),
    ("ftp_sha256", "string", True),
    ("ftp_checksum_ok", "bool_", True),
)


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


@dataclass(slots=True)
class FlowRecord:
    """One flow's row in flows.parquet; field names and order are FLOW_SCHEMA's."""

    flow_id: int
    kind: str
    client_address: str
    client_port: int | None
    server_address: str
    server_port: int
    protocol: str
    scheduled_s: float
    start_s: float
    start_unix: float
    connect_s: float | None = None
    ttfb_s: float | None = None
    end_s: float = 0.0
    out_bytes: int = 0
    in_bytes: int = 0
    outcome: str = "error:unfinished"
    detail: str | None = None
    backend: str | None = None
    conn_backend_address: str | None = None
    conn_backend: str | None = None
    attribution_agrees: bool | None = None
    requests: int = 0
    heartbeats: int = 0
    tls_session_reused: bool | None = None
    tls_version: str | None = None
    ftp_data_client_port: int | None = None
    ftp_file_size: int | None = None
    ftp_sha256: str | None = None
    ftp_checksum_ok: bool | None = None


_COLUMNS = tuple(name for name, _, _ in COLUMNS)


def records_to_table(records: Iterable[FlowRecord]) -> pa.Table:
    """Build an Arrow table with FLOW_SCHEMA from records."""
    rows = list(records)
    columns = {name: [getattr(r, name) for r in rows] for name in _COLUMNS}
    import pyarrow as pa

    return pa.Table.from_pydict(columns, schema=flow_schema())


class FlowLogWriter:
    """Streams records into RUN/flows.parquet in row groups; `close()` makes the file valid.

    Records are buffered and written every `batch` rows, so an interrupted run that reaches
    `close()` (Ctrl-C does) leaves a readable file with every finished flow.
    """

    def __init__(self, path: Path, batch: int = 512):
        self.path = path
        self._batch = batch
        self._pending: list[FlowRecord] = []
        import pyarrow.parquet as pq

        self._writer: Any = pq.ParquetWriter(str(path), flow_schema())
        self.written = 0

    def add(self, record: FlowRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= self._batch:
            self.flush()

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


def read_flows(run_dir: Path) -> pa.Table:
    """RUN/flows.parquet as an Arrow table (`.to_pandas()` for a DataFrame)."""
    import pyarrow.parquet as pq

    return pq.read_table(str(run_dir / FLOWS_FILE), schema=flow_schema())


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return round(ordered[pos], 6)


def summarize(records: Iterable[FlowRecord], **extra: Any) -> dict[str, Any]:
    """The JSON summary of a run: counts by outcome, kind and backend, attribution, latency."""
    rows = list(records)
    outcomes = Counter(r.outcome for r in rows)
    by_backend = Counter(r.backend or r.conn_backend or "unknown" for r in rows)
    agree = [r.attribution_agrees for r in rows if r.attribution_agrees is not None]
    connect = [r.connect_s for r in rows if r.connect_s is not None]
    ttfb = [r.ttfb_s for r in rows if r.ttfb_s is not None]
    span = max((r.end_s for r in rows), default=0.0)
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "flows": len(rows),
        "ok": outcomes.get("ok", 0),
        "errors": len(rows) - outcomes.get("ok", 0),
        "outcomes": dict(sorted(outcomes.items())),
        "kinds": dict(sorted(Counter(r.kind for r in rows).items())),
        "backends": dict(sorted(by_backend.items())),
        "attribution": {
            "compared": len(agree),
            "agree": sum(agree),
            "disagree": len(agree) - sum(agree),
            "self_named": sum(1 for r in rows if r.backend is not None),
            "conn_table": sum(1 for r in rows if r.conn_backend_address is not None),
        },
        "connect_s": {"p50": _quantile(connect, 0.5), "p99": _quantile(connect, 0.99)},
        "ttfb_s": {"p50": _quantile(ttfb, 0.5), "p99": _quantile(ttfb, 0.99)},
        "duration_s": round(span, 6),
        "flows_per_s": round(len(rows) / span, 3) if span > 0 else None,
        "out_bytes": sum(r.out_bytes for r in rows),
        "in_bytes": sum(r.in_bytes for r in rows),
        "tls_session_reused": sum(1 for r in rows if r.tls_session_reused),
    }
    summary.update(extra)
    return summary


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> None:
    """RUN/summary.json, written whole then renamed (a reader never sees half a file)."""
    tmp = run_dir / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    tmp.replace(run_dir / SUMMARY_FILE)
