"""One flow's record: the columns of the flow log, declared once, and the record both
engines fill (flowlog.py writes and reads them; latency.py summarises them)."""

from __future__ import annotations

from dataclasses import dataclass

OUTCOMES = ("ok", "refused", "reset", "timeout")  # plus "error:<reason>"
UNKNOWN_BACKEND = "unknown"  # the backend of a flow nobody named (`backend_of`)

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
    # latency (latency.py): `total_s` from the actual start; the `*_corrected_s` from
    # `scheduled_s`, the time the flow was meant to start (wrk2's corrected latency: a stalled
    # server delays the flows queued behind it, and that wait counts); `stage` of the profile
    ("stage", "int32", True),
    ("total_s", "float64", True),
    ("connect_corrected_s", "float64", True),
    ("ttfb_corrected_s", "float64", True),
    ("total_corrected_s", "float64", True),
    ("worker", "string", True),  # the Dask worker that drove it (`--workers`), else null
)


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
    stage: int | None = None
    total_s: float | None = None
    connect_corrected_s: float | None = None
    ttfb_corrected_s: float | None = None
    total_corrected_s: float | None = None
    worker: str | None = None

    def settle(self) -> None:
        """Fill the derived latencies once the flow has ended (both engines call it)."""
        lag_s = self.start_s - self.scheduled_s
        self.total_s = self.end_s - self.start_s
        self.total_corrected_s = self.end_s - self.scheduled_s
        if self.connect_s is not None:
            self.connect_corrected_s = lag_s + self.connect_s
        if self.ttfb_s is not None:
            self.ttfb_corrected_s = lag_s + self.ttfb_s


def backend_of(record: FlowRecord) -> str:
    """The backend a flow is counted under: self-named, else the conn table's, else unknown."""
    return record.backend or record.conn_backend or UNKNOWN_BACKEND
