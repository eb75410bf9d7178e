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

The summary's figures are read off the buckets directly (`Buckets`: each filled bucket's
lowest value and count, from numpy), not through an HdrHistogram object, whose queries walk
its count array in Python; tests/replay/test_latency.py holds them equal to HdrHistogram's
own, value by value.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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


# values below 2**(magnitude+1) µs are exact; each power of two above halves the precision
_HALF_COUNT_MAGNITUDE = new_histogram().sub_bucket_half_count_magnitude


def _bucket_shift(us: np.ndarray) -> np.ndarray:
    """log2 of the width of the bucket each value (integer µs) falls in."""
    _, exponent = np.frexp(np.maximum(us, 1).astype(np.float64))  # us = m * 2**exponent
    return np.maximum(0, exponent - 1 - _HALF_COUNT_MAGNITUDE)


def bucket_lowest_us(seconds: np.ndarray) -> np.ndarray:
    """Each latency (seconds; NaN dropped) as the lowest value of its HDR bucket, in µs:
    the bucket HdrHistogram's own record_value of the value rounded to a µs picks."""
    values = seconds[~np.isnan(seconds)]
    us = np.clip(np.round(values * 1e6), 0, HIGHEST_US).astype(np.int64)
    shift = _bucket_shift(us)
    return (us >> shift) << shift


@dataclass(frozen=True)
class Buckets:
    """A histogram's filled buckets: lowest value (µs, ascending) and count of each."""

    lowest_us: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, lowest_us: np.ndarray) -> Buckets:
        buckets, counts = np.unique(lowest_us, return_counts=True)
        return cls(buckets, counts)

    def record_into(self, hist: HdrHistogram) -> None:
        """Add the counts to `hist`: one record call per bucket, not per value."""
        for value, count in zip(self.lowest_us.tolist(), self.counts.tolist(), strict=True):
            hist.record_value(value, count)

    def stats(self) -> dict[str, Any]:
        """count, mean, p50/p90/p99/p99.9 and max in seconds (None when empty), as
        HdrHistogram's get_total_count, get_mean_value, get_percentile_to_value_dict and
        get_max_value compute them."""
        total = int(self.counts.sum())
        if not total:
            return {"count": 0, **dict.fromkeys(STATS[1:])}
        width = (1 << _bucket_shift(self.lowest_us)).tolist()
        lowest, counts = self.lowest_us.tolist(), self.counts.tolist()
        weighted = sum(
            c * (low + (w >> 1)) for low, c, w in zip(lowest, counts, width, strict=True)
        )
        cumulative = np.cumsum(self.counts)
        at = {}
        for p in PERCENTILES:  # the first bucket whose running count reaches the rank
            rank = max(int(p * total / 100 + 0.5), 1)
            index = int(np.searchsorted(cumulative, rank))
            at[p] = lowest[index] + width[index] - 1
        highest = lowest[-1] + width[-1] - 1 if lowest[-1] else 0
        return {
            "count": total,
            "mean": round(weighted / total / 1e6, 6),
            **{f"p{p:g}": round(at[p] / 1e6, 6) for p in PERCENTILES},
            "max": round(highest / 1e6, 6),
        }


def record_seconds(hist: HdrHistogram, seconds: np.ndarray) -> None:
    """Add latencies (seconds; NaN skipped) to `hist`, bucket by bucket."""
    Buckets.of(bucket_lowest_us(seconds)).record_into(hist)


@dataclass(frozen=True)
class Latencies:
    """The flows' latencies read off the records once, by record column: the distinct
    lowest values (µs) of the HDR buckets they fall in, ascending, and each flow's index
    into them; -1 is the value of a flow with none (and in `total_*`, of one that did not
    end `ok`). A group's histogram is then a count of its flows' indices: one sort per
    column for the run, none per group."""

    buckets_us: dict[str, np.ndarray]
    index: dict[str, np.ndarray]

    @classmethod
    def of(cls, rows: Sequence[FlowRecord]) -> Latencies:
        outcomes = map(operator.attrgetter("outcome"), rows)
        ok = np.fromiter(map("ok".__eq__, outcomes), dtype=bool, count=len(rows))
        buckets, index = {}, {}
        for (phase, _), column in COLUMN.items():
            seconds = np.array(list(map(operator.attrgetter(column), rows)), dtype=np.float64)
            if phase == "total":
                seconds[~ok] = np.nan
            bucketed = np.full(len(rows), -1, dtype=np.int64)
            bucketed[~np.isnan(seconds)] = bucket_lowest_us(seconds)
            buckets[column], index[column] = np.unique(bucketed, return_inverse=True)
        return cls(buckets, index)

    def phase_stats(self, rows: np.ndarray | slice) -> dict[str, dict[str, dict[str, Any]]]:
        """{phase: {timing: stats}} of the flows at `rows` (indices or a slice)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for phase in PHASES:
            out[phase] = {}
            for timing in TIMINGS:
                column = COLUMN[(phase, timing)]
                lowest_us = self.buckets_us[column]
                counts = np.bincount(self.index[column][rows], minlength=len(lowest_us))
                filled = (counts > 0) & (lowest_us >= 0)
                out[phase][timing] = Buckets(lowest_us[filled], counts[filled]).stats()
        return out


def phase_stats(rows: Sequence[FlowRecord]) -> dict[str, dict[str, dict[str, Any]]]:
    """{phase: {timing: stats}} of `rows` (see the module docstring for what each holds)."""
    return Latencies.of(rows).phase_stats(slice(None))


def _groups(labels: Sequence[object]) -> dict[str, np.ndarray]:
    """Row indices (ascending) by label as text, in the texts' order; rows labelled None
    belong to none. Coded by a dict per distinct label and split by one stable sort: no
    Python step per row beyond the lookup."""
    distinct = set(labels)
    if len(distinct) == 1 and None not in distinct:  # one group of every row (most runs)
        return {str(next(iter(distinct))): np.arange(len(labels), dtype=np.intp)}
    texts = {label: str(label) for label in distinct if label is not None}
    names = sorted(set(texts.values()))
    number = {name: i for i, name in enumerate(names)}
    code = {label: number[text] for label, text in texts.items()}
    code[None] = len(names)  # the unlabelled rows: a last group, dropped
    codes = np.fromiter(map(code.__getitem__, labels), dtype=np.intp, count=len(labels))
    order = np.argsort(codes, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(names) + 1))
    return dict(zip(names, np.split(order, ends[:-1])[:-1], strict=True))


def latency_summary(records: Iterable[FlowRecord]) -> dict[str, Any]:
    """The summary's `latency` block: every phase and timing for all flows, then by kind,
    by backend and by stage of the rate profile. A group holding every flow (one kind, one
    backend, one stage: most runs) shares the whole run's figures, not computed again."""
    rows = list(records)
    latencies = Latencies.of(rows)
    whole = latencies.phase_stats(slice(None))
    by = {
        "by_kind": _groups(list(map(operator.attrgetter("kind"), rows))),
        "by_backend": _groups(list(map(backend_of, rows))),
        "by_stage": _groups(list(map(operator.attrgetter("stage"), rows))),
    }
    return {
        **whole,
        **{
            name: {
                k: copy.deepcopy(whole) if len(g) == len(rows) else latencies.phase_stats(g)
                for k, g in groups.items()
            }
            for name, groups in by.items()
        },
    }
