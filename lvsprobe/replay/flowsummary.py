"""The JSON summary of a run (summary.json, `replay run --json`), read off its flow log's
columns (flowcolumns.py); summary.json written, read, and rebuilt from the flow log of a run
that ended without one."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lvsprobe.errors import LvsprobeError
from lvsprobe.replay.flowcolumns import FlowColumns
from lvsprobe.replay.flowlog import (
    SCHEMA_VERSION,
    SUMMARY_FILE,
    FlowLog,
    FlowRecord,
    quantile,
    read_flow_log,
    records_table,
)
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


def summarize(records: Iterable[FlowRecord], **extra: Any) -> dict[str, Any]:
    """The JSON summary of a run's records (`summarize_columns` of their table)."""
    return summarize_columns(FlowColumns(records_table(records)), **extra)


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> None:
    """RUN/summary.json, written whole then renamed (a reader never sees half a file)."""
    tmp = run_dir / (SUMMARY_FILE + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    tmp.replace(run_dir / SUMMARY_FILE)


def read_summary(run_dir: Path) -> dict[str, Any]:
    """RUN/summary.json, or one rebuilt from the flow log when it is missing (a run killed
    before its end): then `complete` is false, `stopped` is "unfinished" and `rebuilt` true."""
    path = run_dir / SUMMARY_FILE
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise LvsprobeError(f"{path}: unreadable summary: {exc}") from exc
        if not isinstance(doc, dict):
            raise LvsprobeError(f"{path}: expected a JSON object, got {type(doc).__name__}")
        return doc
    return rebuild_summary(read_flow_log(run_dir))


def rebuild_summary(log: FlowLog) -> dict[str, Any]:
    """The summary of a run that ended without writing one, from its flow log."""
    return summarize_columns(
        FlowColumns(log.table),
        scenario=log.scenario,
        planned=log.planned,
        complete=False,
        stopped="unfinished",
        rebuilt=True,
        journal_torn=log.torn,
    )
