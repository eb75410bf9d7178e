"""Every metric family `lvsprobe replay run --metrics-listen` serves, declared once: the live
metrics (live.py) render from it and the "Replay run" dashboard's queries are checked
against it. Standard library only: the dashboards generator imports it without the replay
extra.

Conventions as the exporter's (exporter/metrics.py): base units, `_total` on counters, rates
as gauges ending in `_per_second`, one meaning per label name. `timing` is `corrected`
(from the flow's scheduled start: wrk2's figure) or `uncorrected` (from its actual start).
"""

from __future__ import annotations

from dataclasses import dataclass

METRICS_LINGER_S = 30.0  # after a run: two 15 s scrape intervals for Prometheus to read the end

PREFIX = "lvsprobe_replay_"
# Prometheus buckets of the latency histograms (seconds): loopback to a stalled service
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                     2.5, 5.0, 10.0, 30.0, 60.0)  # fmt: skip
FLOW_LABELS = ("kind", "outcome", "backend")
LATENCY_LABELS = ("kind", "backend", "phase", "timing")


@dataclass(frozen=True, slots=True)
class LiveMetric:
    """One family: name, help, Prometheus type (counter, gauge, histogram), label names."""

    name: str
    help: str
    type: str
    labels: tuple[str, ...] = ()


SPECS: tuple[LiveMetric, ...] = (
    LiveMetric(PREFIX + "run_info", "The run: its scenario's name (value 1).", "gauge",
               ("scenario",)),
    LiveMetric(PREFIX + "planned_flows", "Flows in the run's plan.", "gauge"),
    LiveMetric(PREFIX + "elapsed_seconds", "Seconds since the run started.", "gauge"),
    LiveMetric(PREFIX + "stage", "Index of the rate profile's stage running now.", "gauge"),
    LiveMetric(PREFIX + "flows_started_total", "Flows started, by kind.", "counter", ("kind",)),
    LiveMetric(PREFIX + "flows_finished_total", "Flows ended, by kind, outcome and backend.",
               "counter", FLOW_LABELS),
    LiveMetric(PREFIX + "flows_failed_total", "Flows ended other than ok, by kind, outcome "
               "and backend.", "counter", FLOW_LABELS),
    LiveMetric(PREFIX + "flows_in_flight", "Flows started and not ended yet.", "gauge"),
    LiveMetric(PREFIX + "planned_rate_per_second", "Flows per second the rate profile asks "
               "for now (absent in a closed-model stage).", "gauge"),
    LiveMetric(PREFIX + "achieved_rate_per_second", "Flows started per second over the last "
               "few seconds.", "gauge"),
    LiveMetric(PREFIX + "latency_seconds", "Flow latency by phase (connect, ttfb, total: an ok "
               "flow's end) and timing (corrected: from the scheduled start).", "histogram",
               LATENCY_LABELS),
)  # fmt: skip


def catalog() -> dict[str, tuple[str, ...]]:
    """Every series name a scrape can hold and its labels (a histogram's `_bucket`, `_sum`,
    `_count`): what a dashboard query may name."""
    out: dict[str, tuple[str, ...]] = {}
    for spec in SPECS:
        if spec.type == "histogram":
            out[spec.name + "_bucket"] = (*spec.labels, "le")
            out[spec.name + "_sum"] = spec.labels
            out[spec.name + "_count"] = spec.labels
        else:
            out[spec.name] = spec.labels
    return out
