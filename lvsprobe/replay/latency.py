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
own, value by value. The flows' latencies come from the flow log's columns (flowcolumns.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from hdrh.histogram import HdrHistogram

from lvsprobe.replay.flowrecord import FlowRecord

if TYPE_CHECKING:
    from lvsprobe.replay.flowcolumns import FlowColumns

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


def _us(seconds: np.ndarray) -> np.ndarray:
    """Latencies (seconds, none NaN) rounded to a µs and held to the histogram's range."""
    return np.clip(np.round(seconds * 1e6), 0, HIGHEST_US).astype(np.int64)


def bucket_lowest_us(seconds: np.ndarray) -> np.ndarray:
    """Each latency (seconds; NaN dropped) as the lowest value of its HDR bucket, in µs:
    the bucket HdrHistogram's own record_value of the value rounded to a µs picks."""
    us = _us(seconds[~np.isnan(seconds)])
    shift = _bucket_shift(us)
    return (us >> shift) << shift


def bucket_slot(us: np.ndarray) -> np.ndarray:
    """Each value's (integer µs, within the range) bucket as a slot of a dense array ordered
    by value: a bucket width 2**s holds the slots from s * half a sub-bucket count on, its
    values >> s picking one (HdrHistogram's counts index)."""
    shift = _bucket_shift(us)
    return (shift << _HALF_COUNT_MAGNITUDE) + (us >> shift)


def slot_lowest_us(slot: np.ndarray) -> np.ndarray:
    """The lowest value (µs) of the bucket at each slot (the inverse of `bucket_slot`)."""
    shift = np.maximum(0, (slot >> _HALF_COUNT_MAGNITUDE) - 1)
    return (slot - (shift << _HALF_COUNT_MAGNITUDE)) << shift


SLOTS = int(bucket_slot(np.array([HIGHEST_US]))[0]) + 1  # the slot SLOTS: a flow with none


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
        widths = 1 << _bucket_shift(self.lowest_us)
        # exact in int64: counts sum to the flows (far below 2**31), values stay below 2**32
        weighted = int(np.dot(self.counts.astype(np.int64), self.lowest_us + (widths >> 1)))
        lowest, width = self.lowest_us.tolist(), widths.tolist()
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
    """The flows' latencies by record column, each flow's as the slot of its HDR bucket
    (`bucket_slot`; SLOTS for a flow with none, and in `total_*` for one that did not end
    `ok`). A group's histogram is then a count of its flows' slots: no sort at all."""

    slots: dict[str, np.ndarray]

    @classmethod
    def of(cls, columns: FlowColumns) -> Latencies:
        ok = columns.ok()
        slots: dict[str, np.ndarray] = {}
        for (phase, timing), column in COLUMN.items():
            seconds = columns.seconds(column)
            uncorrected = COLUMN[(phase, "uncorrected")]
            if timing == "corrected" and np.array_equal(
                seconds, columns.seconds(uncorrected), equal_nan=True
            ):  # every flow started when it was meant to (a closed model's)
                slots[column] = slots[uncorrected]
                continue
            timed = ~np.isnan(seconds)
            if phase == "total":
                timed &= ok
            slot = np.full(len(seconds), SLOTS, dtype=np.intp)
            slot[timed] = bucket_slot(_us(seconds[timed]))
            slots[column] = slot
        return cls(slots)

    def phase_stats(self, rows: np.ndarray | slice) -> dict[str, dict[str, dict[str, Any]]]:
        """{phase: {timing: stats}} of the flows at `rows` (indices or a slice)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for phase in PHASES:
            out[phase] = {}
            for timing in TIMINGS:
                counts = np.bincount(self.slots[COLUMN[(phase, timing)]][rows], minlength=SLOTS)
                filled = np.flatnonzero(counts[:SLOTS])
                out[phase][timing] = Buckets(slot_lowest_us(filled), counts[filled]).stats()
        return out


def _columns(records: Iterable[FlowRecord]) -> FlowColumns:
    from lvsprobe.replay.flowcolumns import FlowColumns
    from lvsprobe.replay.flowlog import records_to_table

    return FlowColumns(records_to_table(records))


def phase_stats(rows: Iterable[FlowRecord]) -> dict[str, dict[str, dict[str, Any]]]:
    """{phase: {timing: stats}} of `rows` (see the module docstring for what each holds)."""
    return Latencies.of(_columns(rows)).phase_stats(slice(None))


def latency_summary(records: Iterable[FlowRecord]) -> dict[str, Any]:
    """The summary's `latency` block of `records` (see `latency_of`)."""
    return latency_of(_columns(records))


def latency_of(columns: FlowColumns) -> dict[str, Any]:
    """The summary's `latency` block: every phase and timing for all flows, then by kind,
    by backend and by stage of the rate profile. A group holding every flow (one kind, one
    backend, one stage: most runs) shares the whole run's figures, not computed again."""
    latencies = Latencies.of(columns)
    whole = latencies.phase_stats(slice(None))
    by = {
        "by_kind": columns.labels("kind").groups(),
        "by_backend": columns.backend().groups(),
        "by_stage": columns.labels("stage").groups(),
    }
    return {
        **whole,
        **{
            name: {
                k: _copied(whole) if len(g) == columns.rows else latencies.phase_stats(g)
                for k, g in groups.items()
            }
            for name, groups in by.items()
        },
    }


def _copied(stats: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{phase: {timing: stats}} copied (its values are numbers or None), not shared between
    the groups that hold it: copy.deepcopy's walk cost more than the group's figures."""
    return {phase: {timing: dict(s) for timing, s in by.items()} for phase, by in stats.items()}
