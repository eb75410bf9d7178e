"""The JSON summary of a run (summary.json, `replay run --json`), read off its flow log's
columns (flowcolumns.py)."""

from __future__ import annotations

from typing import Any

from lvsprobe.replay.flowcolumns import FlowColumns
from lvsprobe.replay.flowlog import SCHEMA_VERSION, quantile
from lvsprobe.replay.latency import latency_of


def summarize_columns(columns: FlowColumns, **extra: Any) -> dict[str, Any]:
    """The JSON summary of a run: counts by outcome, kind and backend, attribution, latency
    (`connect_s` and `ttfb_s` as before; `latency` holds the HDR histograms' figures).
    Each figure is taken from the flow log's columns, in C-level passes."""
    rows = columns.rows
    outcomes = columns.labels("outcome").counts()
    compared = rows - columns.nulls("attribution_agrees")
    agree = columns.count_true("attribution_agrees")
    span = float(columns.numbers("end_s").values.max()) if rows else 0.0
    connect, ttfb = columns.given("connect_s"), columns.given("ttfb_s")
    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "flows": rows,
        "ok": outcomes.get("ok", 0),
        "errors": rows - outcomes.get("ok", 0),
        "outcomes": dict(sorted(outcomes.items())),
        "kinds": dict(sorted(columns.labels("kind").counts().items())),
        "backends": dict(sorted(columns.backend().counts().items())),
        "attribution": {
            "compared": compared,
            "agree": agree,
            "disagree": compared - agree,
            "self_named": rows - columns.nulls("backend"),
            "conn_table": rows - columns.nulls("conn_backend_address"),
        },
        "connect_s": {"p50": quantile(connect, 0.5), "p99": quantile(connect, 0.99)},
        "ttfb_s": {"p50": quantile(ttfb, 0.5), "p99": quantile(ttfb, 0.99)},
        "duration_s": round(span, 6),
        "flows_per_s": round(rows / span, 3) if span > 0 else None,
        "out_bytes": int(columns.numbers("out_bytes").values.sum()),
        "in_bytes": int(columns.numbers("in_bytes").values.sum()),
        "tls_session_reused": columns.count_true("tls_session_reused"),
        "latency": latency_of(columns),
    }
    summary.update(extra)
    return summary
