"""What a run has done so far, while it runs: the progress line's rate, errors and p99, and
the Prometheus metrics `replay run --metrics-listen` serves (metricspecs.py).

The engine's thread only appends to two queues (`started`, `finished`: a deque append each,
no lock); readers (the progress line in the engine's thread, scrapes in the HTTP server's)
fold what is queued into the counts under a lock, so the engine never waits for a scrape.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lvsprobe.errors import LvsprobeError
from lvsprobe.exporter.render import ExpositionFormat, escape_help, format_value, label_pairs
from lvsprobe.replay.flowlog import FlowRecord, backend_of
from lvsprobe.replay.latency import COLUMN, new_histogram, record_seconds
from lvsprobe.replay.metricspecs import LATENCY_BUCKETS_S, LATENCY_LABELS, PREFIX, SPECS
from lvsprobe.replay.profile import Stage, planned_rate, stage_at

RATE_WINDOW_S = 5.0  # the achieved rate: flows started over the last few seconds
MIN_RATE_SPAN_S = 1.0  # ... or over 1 s at the start: not a burst of starts over 1 ms
MAX_LABEL_VALUES = 64  # distinct backends (or outcomes) before the rest count as "other"
REPLY_FLUSH_S = 0.5  # after the final scrape's body is rendered: time for it to be sent
_HISTOGRAMS = tuple(COLUMN)  # (phase, timing)


@dataclass(frozen=True, slots=True)
class LiveView:
    """The progress line's figures: flows started per second lately, corrected p99 of the
    ok flows so far (None before the first), flows ended other than ok."""

    rate_per_s: float
    p99_s: float | None
    errors: int


class _Capped:
    """Label values as seen, up to a bound; a hostile backend naming itself anew in every
    reply cannot grow the scrape without end."""

    def __init__(self, limit: int = MAX_LABEL_VALUES) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit:
            return "other"
        self._seen.add(value)
        return value


class LiveStats:
    """Counts of one run, fed by its engine (`started`, `finished`), read from any thread."""

    def __init__(
        self,
        scenario: str,
        planned_flows: int,
        stages: Sequence[Stage],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.scenario, self.planned_flows, self.stages = scenario, planned_flows, tuple(stages)
        self._clock = clock
        self._t0: float | None = None
        self._started_q: collections.deque[tuple[str, float]] = collections.deque()
        self._finished_q: collections.deque[FlowRecord] = collections.deque()
        self._lock = threading.Lock()
        self._started: collections.Counter[str] = collections.Counter()
        self._recent: collections.deque[float] = collections.deque()
        self._ended: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._buckets: dict[tuple[str, str, str, str], list[int]] = {}
        self._sums: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        self._p99_hist = new_histogram()
        self._backend, self._outcome = _Capped(), _Capped()

    # ---- the engine's side ------------------------------------------------------------------
    def started(self, kind: str, now_s: float) -> None:
        if self._t0 is None:
            self._t0 = self._clock() - now_s
        self._started_q.append((kind, now_s))

    def finished(self, record: FlowRecord) -> None:
        self._finished_q.append(record)

    # ---- readers ----------------------------------------------------------------------------
    def elapsed_s(self) -> float:
        return 0.0 if self._t0 is None else self._clock() - self._t0

    def _fold(self) -> None:
        """Move what the engine queued into the counts (the lock held)."""
        while self._started_q:
            kind, at_s = self._started_q.popleft()
            self._started[kind] += 1
            self._recent.append(at_s)
        horizon = self.elapsed_s() - RATE_WINDOW_S
        while self._recent and self._recent[0] <= horizon:
            self._recent.popleft()
        done: list[FlowRecord] = []
        while self._finished_q:
            done.append(self._finished_q.popleft())
        for rec in done:
            kind, backend = rec.kind, self._backend(backend_of(rec))
            self._ended[(kind, self._outcome(rec.outcome), backend)] += 1
            for phase, timing in _HISTOGRAMS:
                value = getattr(rec, COLUMN[(phase, timing)])
                if value is None or (phase == "total" and rec.outcome != "ok"):
                    continue
                key = (kind, backend, phase, timing)
                if key not in self._buckets:
                    self._buckets[key] = [0] * (len(LATENCY_BUCKETS_S) + 1)
                self._buckets[key][bisect.bisect_left(LATENCY_BUCKETS_S, value)] += 1
                self._sums[key] += value
        ok_totals = [r.total_corrected_s for r in done if r.outcome == "ok"]
        record_seconds(self._p99_hist, np.array(ok_totals, dtype=np.float64))

    def view(self) -> LiveView:
        with self._lock:
            self._fold()
            count = self._p99_hist.get_total_count()
            p99 = self._p99_hist.get_value_at_percentile(99.0) / 1e6 if count else None
            errors = sum(n for (_, outcome, _), n in self._ended.items() if outcome != "ok")
            return LiveView(self._rate_per_s(), p99, errors)

    def _rate_per_s(self) -> float:
        span = max(MIN_RATE_SPAN_S, min(RATE_WINDOW_S, self.elapsed_s()))
        return len(self._recent) / span

    def render(self, fmt: ExpositionFormat = ExpositionFormat.CLASSIC) -> bytes:
        """The exposition text of the run so far, in the format the scraper negotiated."""
        with self._lock:
            self._fold()
            elapsed = self.elapsed_s()
            stage = stage_at(self.stages, elapsed)
            planned = planned_rate(self.stages, elapsed)
            ended = sum(self._ended.values())
            values: dict[str, list[tuple[dict[str, str], float]]] = {
                "run_info": [({"scenario": self.scenario}, 1)],
                "planned_flows": [({}, self.planned_flows)],
                "elapsed_seconds": [({}, elapsed)],
                "stage": [({}, stage)] if stage is not None else [],
                "flows_started_total": [({"kind": k}, n) for k, n in sorted(self._started.items())],
                "flows_finished_total": _flows(self._ended, failed=False),
                "flows_failed_total": _flows(self._ended, failed=True),
                "flows_in_flight": [({}, sum(self._started.values()) - ended)],
                "planned_rate_per_second": [({}, planned)] if planned is not None else [],
                "achieved_rate_per_second": [({}, self._rate_per_s())],
            }
            lines: list[str] = []
            for spec in SPECS:
                family = spec.name
                if fmt.openmetrics and spec.type == "counter":
                    family = family.removesuffix("_total")  # OpenMetrics names the family bare
                help_text = escape_help(spec.help, fmt.openmetrics)
                lines += [f"# HELP {family} {help_text}", f"# TYPE {family} {spec.type}"]
                if spec.type == "histogram":
                    lines += self._histogram_lines(spec.name)
                    continue
                for labels, value in values[spec.name.removeprefix(PREFIX)]:
                    lines.append(f"{spec.name}{_labels(labels)} {format_value(value)}")
            if fmt.openmetrics:
                lines.append("# EOF")
            return ("\n".join(lines) + "\n").encode()

    def _histogram_lines(self, name: str) -> list[str]:
        lines = []
        for key in sorted(self._buckets):
            labels = dict(zip(LATENCY_LABELS, key, strict=True))
            cumulative = 0
            bounds = (*(repr(b) for b in LATENCY_BUCKETS_S), "+Inf")
            for le, count in zip(bounds, self._buckets[key], strict=True):
                cumulative += count
                lines.append(f"{name}_bucket{_labels({**labels, 'le': le})} {cumulative}")
            lines.append(f"{name}_sum{_labels(labels)} {format_value(self._sums[key])}")
            lines.append(f"{name}_count{_labels(labels)} {cumulative}")
        return lines


def _flows(
    ended: collections.Counter[tuple[str, str, str]], failed: bool
) -> list[tuple[dict[str, str], float]]:
    return [
        ({"kind": kind, "outcome": outcome, "backend": backend}, n)
        for (kind, outcome, backend), n in sorted(ended.items())
        if not failed or outcome != "ok"
    ]


def _labels(labels: dict[str, str]) -> str:
    return "{" + label_pairs(list(labels), list(labels.values())) + "}" if labels else ""


@contextlib.contextmanager
def serve_metrics(
    address: tuple[str, int],
    live: LiveStats,
    linger_s: float = 0.0,
    on_linger: Callable[[float], None] | None = None,
) -> Iterator[tuple[str, int]]:
    """Serve `live` at http://ADDRESS/metrics (the exporter's HTTP server) while the block
    runs; yields the address bound (port 0: the kernel's pick). After the block, the endpoint
    stays up until one scrape has read the final counts, at most `linger_s`: a run shorter
    than a scrape interval, or its last seconds, would otherwise never reach Prometheus."""
    from lvsprobe.exporter.server import ExporterServer

    run_over = threading.Event()
    final_scraped = threading.Event()

    def scrape(fmt: ExpositionFormat, _timeout_s: float | None) -> Iterator[bytes]:
        ended_before = run_over.is_set()
        yield live.render(fmt)
        if ended_before:  # a whole reply: the server's warm-up reads the first chunk only
            final_scraped.set()

    try:
        server = ExporterServer(address, scrape)
    except OSError as exc:
        raise LvsprobeError(
            f"--metrics-listen {address[0]}:{address[1]}: cannot listen: {exc.strerror or exc}"
        ) from exc
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="replay-metrics")
    thread.start()
    try:
        yield str(server.server_address[0]), int(server.server_address[1])
        run_over.set()
        if on_linger is not None and linger_s > 0 and not final_scraped.is_set():
            on_linger(linger_s)  # the user sees why the command has not returned yet
        if final_scraped.wait(max(0.0, linger_s)):
            time.sleep(min(linger_s, REPLY_FLUSH_S))  # shutdown drops a reply still in flight
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
