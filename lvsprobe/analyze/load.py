"""A run's load over time, from its flow log: planned vs achieved rate, latency percentiles,
errors and backend shares per second, and latency per backend (the report's Load section).

Per second bins: planned counts flows by `scheduled_s`, achieved by `start_s`; latency and
errors go to the bin where the flow ended. Percentiles per bin are the nearest rank (the
value at or above the share asked), as HdrHistogram reads them; the whole-run figures per
backend come from the run's summary (its HDR histograms).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lvsprobe.replay.flowlog import read_flows
from lvsprobe.replay.flowsummary import read_summary

QUANTILES = (0.5, 0.9, 0.99)
MAX_BINS = 3600  # longer runs get wider bins: the page stays light


def _nearest_rank(values: Any, q: float) -> float:
    return float(np.quantile(values, q, method="inverted_cdf"))


def load_timeline(run_dir: Path) -> dict[str, Any]:
    """The Load section's document (JSON-ready) for RUN (flows.parquet or its journal)."""
    frame = read_flows(run_dir).to_pandas()
    summary = read_summary(run_dir)
    if frame.empty:
        return {"bin_s": 1.0, "t_s": [], "backends": {}, "summary": summary}
    span = float(max(frame["end_s"].max(), frame["scheduled_s"].max()))
    bin_s = max(1.0, float(np.ceil(span / MAX_BINS)))
    bins = int(span // bin_s) + 1
    at = lambda column: np.minimum((frame[column] // bin_s).astype(int), bins - 1)  # noqa: E731
    ended, ok = at("end_s"), frame["outcome"] == "ok"
    planned = np.bincount(at("scheduled_s"), minlength=bins) / bin_s
    achieved = np.bincount(at("start_s"), minlength=bins) / bin_s
    errors = {
        outcome: (np.bincount(ended[frame["outcome"] == outcome], minlength=bins) / bin_s).tolist()
        for outcome in sorted(set(frame["outcome"]) - {"ok"})
    }
    backend = frame["backend"].fillna(frame["conn_backend"]).fillna("unknown")
    totals = np.bincount(ended, minlength=bins)
    shares = {
        name: np.divide(
            np.bincount(ended[backend == name], minlength=bins), totals, where=totals > 0,
            out=np.zeros(bins),
        ).tolist()
        for name in sorted(set(backend))
    }  # fmt: skip
    latency: dict[str, dict[str, list[float | None]]] = {}
    for timing, column in (("corrected", "total_corrected_s"), ("uncorrected", "total_s")):
        values = frame[column].where(ok)
        latency[timing] = {f"p{q * 100:g}": [None] * bins for q in QUANTILES}
        for index, group in values.groupby(ended):
            group = group.dropna()
            for q in QUANTILES if len(group) else ():
                latency[timing][f"p{q * 100:g}"][int(index)] = _nearest_rank(group, q)
    return {
        "passed": (summary.get("thresholds") or {}).get("passed"),  # None: no thresholds
        "bin_s": bin_s,
        "t_s": (np.arange(bins) * bin_s).tolist(),
        "planned_per_s": planned.tolist(),
        "achieved_per_s": achieved.tolist(),
        "errors_per_s": errors,
        "shares": shares,
        "latency_s": latency,
        "summary": summary,
    }


def backend_latency_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per backend: its total latency, corrected and uncorrected, in ms."""
    rows = []
    for name, phases in sorted((summary.get("latency") or {}).get("by_backend", {}).items()):
        for timing in ("corrected", "uncorrected"):
            stats = phases["total"][timing]
            if not stats["count"]:
                continue
            row: dict[str, Any] = {"backend": name, "timing": timing, "flows": stats["count"]}
            for key in ("p50", "p90", "p99", "p99.9", "max", "mean"):
                row[key] = f"{stats[key] * 1000:.2f}"
            rows.append(row)
    return rows
