"""Flow latencies in HDR histograms (the `hdrhistogram` package), with wrk2's definitions.

Three phases per flow: `connect` (the TCP handshake done), `ttfb` (the first reply byte) and
`total` (the flow ended `ok`; a failed flow's time says nothing about the service's). Each is
timed two ways:

- `corrected`: from `scheduled_s`, when the flow was meant to start. In an open model a
  stalled server delays every flow queued behind it; that wait is part of what a client of
  the service sees, so it counts (wrk2's "corrected" latency, the one it reports by default).
- `uncorrected`: from `start_s`, when the flow really started (wrk's figure, and wrk2's with
  --u_latency). It hides the queueing: the coordinated omission wrk2 exists to correct.

In closed models the two are equal: a flow is meant to start when its slot frees.

Values are recorded in microseconds, 1 µs to 1 h, to 3 significant digits (wrk2's
histogram). A percentile is the highest value equivalent to the recorded one at that rank and
the mean weights each value by the middle of its bucket, as HdrHistogram computes them in
wrk2. Values past 1 h are recorded as 1 h, so `max` then reads 1 h.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from lvsprobe.replay.flowrecord import FlowRecord, backend_of

PHASES = ("connect", "ttfb", "total")
TIMINGS = ("corrected", "uncorrected")
PERCENTILES = (50.0, 90.0, 99.0, 99.9)
STATS = ("count", "mean", "p50", "p90", "p99", "p99.9", "max")
LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS = 1, 3_600_000_000, 3

# the record's column holding each phase, by timing
COLUMN = {
    ("connect", "uncorrected"): "connect_s",
    ("ttfb", "uncorrected"): "ttfb_s",
    ("total", "uncorrected"): "total_s",
    ("connect", "corrected"): "connect_corrected_s",
    ("ttfb", "corrected"): "ttfb_corrected_s",
    ("total", "corrected"): "total_corrected_s",
}


def new_histogram() -> HdrHistogram:
    """An empty histogram of microseconds with wrk2's range and precision."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def record_seconds(hist: HdrHistogram, seconds: np.ndarray) -> None:
    """Add latencies (seconds; NaN skipped) to `hist`, bucket by bucket.

    Each value is rounded down to its bucket's lowest equivalent value first (the same bucket
    HdrHistogram's own record_value picks), so a million values cost one record call per
    distinct bucket, not per value.
    """
    values = seconds[~np.isnan(seconds)]
    if not values.size:
        return
    us = np.clip(np.round(values * 1e6), 0, HIGHEST_US).astype(np.int64)
    # bucket width = 2**shift: values below sub_bucket_count are exact (shift 0)
    _, exponent = np.frexp(np.maximum(us, 1).astype(np.float64))  # us = m * 2**exponent
    shift = np.maximum(0, exponent - 1 - hist.sub_bucket_half_count_magnitude)
    lowest = (us >> shift) << shift
    buckets, counts = np.unique(lowest, return_counts=True)
    for value, count in zip(buckets.tolist(), counts.tolist(), strict=True):
        hist.record_value(value, count)


def histogram_stats(hist: HdrHistogram) -> dict[str, Any]:
    """count, mean, p50/p90/p99/p99.9 and max in seconds (None for an empty histogram)."""
    count = hist.get_total_count()
    if not count:
        return {"count": 0, **dict.fromkeys(STATS[1:])}
    at = hist.get_percentile_to_value_dict(list(PERCENTILES))
    return {
        "count": count,
        "mean": round(_mean_us(hist) / 1e6, 6),
        **{f"p{p:g}": round(at[p] / 1e6, 6) for p in PERCENTILES},
        "max": round(hist.get_max_value() / 1e6, 6),
    }


def _mean_us(hist: HdrHistogram) -> float:
    """HdrHistogram's mean: each count at the middle of its bucket (what `get_mean_value`
    computes, walking only the buckets that hold counts)."""
    counts = np.frombuffer(hist.counts, dtype=np.int64, count=hist.counts_len)
    total = 0
    for index in np.flatnonzero(counts).tolist():
        value = hist.get_value_from_index(index)
        low = hist.get_lowest_equivalent_value(value)
        size = hist.get_highest_equivalent_value(value) - low + 1
        total += int(counts[index]) * (low + (size >> 1))
    return total / hist.get_total_count()


def _column(rows: Sequence[FlowRecord], name: str, keep: Callable[[FlowRecord], bool]) -> Any:
    return np.array(
        [v if (v := getattr(r, name)) is not None and keep(r) else np.nan for r in rows],
        dtype=np.float64,
    )


def _is_ok(record: FlowRecord) -> bool:
    return record.outcome == "ok"


def _any(_record: FlowRecord) -> bool:
    return True


def phase_stats(rows: Sequence[FlowRecord]) -> dict[str, dict[str, dict[str, Any]]]:
    """{phase: {timing: stats}} of `rows` (see the module docstring for what each holds)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for phase in PHASES:
        keep = _is_ok if phase == "total" else _any
        out[phase] = {}
        for timing in TIMINGS:
            hist = new_histogram()
            record_seconds(hist, _column(rows, COLUMN[(phase, timing)], keep))
            out[phase][timing] = histogram_stats(hist)
    return out


def _groups(
    rows: Iterable[FlowRecord], key: Callable[[FlowRecord], object]
) -> dict[str, list[FlowRecord]]:
    groups: dict[str, list[FlowRecord]] = {}
    for r in rows:
        groups.setdefault(str(key(r)), []).append(r)
    return dict(sorted(groups.items()))


def latency_summary(records: Iterable[FlowRecord]) -> dict[str, Any]:
    """The summary's `latency` block: every phase and timing for all flows, then by kind,
    by backend and by stage of the rate profile."""
    rows = list(records)
    return {
        **phase_stats(rows),
        "by_kind": {k: phase_stats(g) for k, g in _groups(rows, lambda r: r.kind).items()},
        "by_backend": {k: phase_stats(g) for k, g in _groups(rows, backend_of).items()},
        "by_stage": {
            k: phase_stats(g)
            for k, g in _groups((r for r in rows if r.stage is not None), lambda r: r.stage).items()
        },
    }
