"""A run's rate profile: stages of arrival rate or concurrency over time (pure arithmetic).

A stage lasts `duration_s` and is one of:
- open: the rate goes linearly from `start_rate_per_s` to `end_rate_per_s` (k6's
  ramping-arrival-rate stage `{duration, target}`); equal rates hold it constant, and a
  stage whose rate differs from the last one's end is a step;
- closed: `concurrency` loops, each starting its next flow when its last one ends.

Open arrivals come from the cumulative rate Λ(t) = ∫ rate: the k-th flow starts where Λ(t)
reaches k (uniform) or the sum of k exponential draws (Poisson: a non-homogeneous Poisson
process by time rescaling). Within a stage Λ is quadratic, so its inverse is exact.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lvsprobe.replay.limits import MAX_IN_FLIGHT, MAX_RATE_PER_S, MAX_STAGES
from lvsprobe.replay.yamldoc import Reader


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of the profile (see the module docstring); `weights` overrides the mix's
    per-kind weights while it lasts."""

    duration_s: float
    start_rate_per_s: float = 0.0
    end_rate_per_s: float = 0.0
    concurrency: int = 0
    weights: Mapping[str, float] | None = None

    @property
    def closed(self) -> bool:
        return self.concurrency > 0

    @property
    def flows(self) -> float:
        """Λ over the whole stage: how many open arrivals it holds (0 for a closed one)."""
        if self.closed:
            return 0.0
        return (self.start_rate_per_s + self.end_rate_per_s) / 2 * self.duration_s

    def rate_at(self, t_s: float) -> float:
        """The open rate `t_s` into the stage."""
        if self.duration_s <= 0:
            return self.end_rate_per_s
        slope = (self.end_rate_per_s - self.start_rate_per_s) / self.duration_s
        return self.start_rate_per_s + slope * t_s

    def time_of(self, arrivals: float) -> float:
        """The offset into the stage where Λ reaches `arrivals` (0 <= arrivals <= flows)."""
        if self.duration_s <= 0:
            return 0.0
        r0 = self.start_rate_per_s
        half_slope = (self.end_rate_per_s - r0) / (2 * self.duration_s)
        if half_slope == 0:
            return arrivals / r0
        # r0 t + a t² = L  ->  t = 2L / (r0 + sqrt(r0² + 4aL)): no cancellation when a -> 0
        root = math.sqrt(max(0.0, r0 * r0 + 4 * half_slope * arrivals))
        return min(self.duration_s, 2 * arrivals / (r0 + root)) if r0 + root > 0 else 0.0


def windows(stages: Sequence[Stage]) -> list[tuple[float, float]]:
    """(start_s, end_s) of each stage, back to back from 0."""
    out, at = [], 0.0
    for stage in stages:
        out.append((at, at + stage.duration_s))
        at += stage.duration_s
    return out


def stage_at(stages: Sequence[Stage], t_s: float) -> int | None:
    """The index of the stage running at `t_s`; None after the last."""
    for index, (start, end) in enumerate(windows(stages)):
        if start <= t_s < end:
            return index
    return None


def planned_rate(stages: Sequence[Stage], t_s: float) -> float | None:
    """The open rate the profile asks for at `t_s`; None in a closed stage or after the end."""
    index = stage_at(stages, t_s)
    if index is None or stages[index].closed:
        return None
    return stages[index].rate_at(t_s - windows(stages)[index][0])


def open_arrivals(
    stages: Sequence[Stage], poisson: bool, rng: random.Random, until_s: float
) -> Iterator[tuple[float, int]]:
    """(start offset, stage index) of every open arrival before `until_s`, in order.

    Uniform: the k-th arrival where Λ = k (so a constant rate r gives k / r); Poisson: where
    Λ reaches a sum of unit exponential draws (`rng.expovariate(1)`, one per arrival).
    """
    target = 0.0  # Λ of the next arrival
    passed = 0.0  # Λ of the stages already left behind
    for index, ((start, end), stage) in enumerate(zip(windows(stages), stages, strict=True)):
        if start >= until_s:
            return
        if stage.closed or stage.flows <= 0:
            continue
        while target < passed + stage.flows:
            at = start + stage.time_of(target - passed)
            if at >= min(end, until_s):
                break
            yield at, index
            target = target + rng.expovariate(1.0) if poisson else target + 1.0
        passed += stage.flows
        target = max(target, passed)


def expected_open_flows(stages: Sequence[Stage], until_s: float) -> int:
    """How many open arrivals the stages hold before `until_s` (a uniform process's count)."""
    total = 0.0
    for (start, end), stage in zip(windows(stages), stages, strict=True):
        if stage.closed or start >= until_s:
            continue
        span = min(end, until_s) - start
        total += (stage.start_rate_per_s + stage.rate_at(span)) / 2 * span
    return math.ceil(total)


def closed_budgets(stages: Sequence[Stage], max_flows: int, until_s: float) -> dict[int, int]:
    """How many flows to plan for each closed stage: what `max_flows` leaves after the open
    stages' arrivals, shared by concurrency x duration. A closed stage runs until its window
    ends; the flows it had no time for are skipped, not failed."""
    closed = {
        i: s.concurrency * max(0.0, min(end, until_s) - start)
        for i, ((start, end), s) in enumerate(zip(windows(stages), stages, strict=True))
        if s.closed and start < until_s
    }
    weight = sum(closed.values())
    left = max(0, max_flows - expected_open_flows(stages, until_s))
    if not closed:
        return {}
    if weight <= 0:
        return dict.fromkeys(closed, left // len(closed))
    return {i: int(left * w / weight) for i, w in closed.items()}


STAGE_KEYS = ("duration", "target", "rate", "concurrency", "mix")


def read_stages(r: Reader, kinds: Sequence[str], pool: bool) -> tuple[Stage, ...]:
    """`arrival.stages` (under the arrival reader): each stage validated, rates chained from
    `start_rate` (a ramp starts where the stage before it ended)."""
    entries = r.items("stages", "stages {duration, target | rate | concurrency}", MAX_STAGES)
    rate = r.number("start_rate", 0.0, lo=0.0, hi=MAX_RATE_PER_S)
    out = []
    for i in range(len(entries)):
        s = Reader(r.doc, (*r.path, "stages", i), STAGE_KEYS)
        given = [key for key in ("target", "rate", "concurrency") if s.has(key)]
        if len(given) != 1:
            raise r.doc.error(
                (*r.path, "stages", i),
                "give exactly one of target (ramp to this rate), rate (hold it), "
                f"concurrency (closed-model loops); got {', '.join(given) or 'none'}",
            )
        duration_s = s.duration("duration", None)
        weights = _weights(s, kinds) if s.has("mix") else None
        if given == ["concurrency"]:
            if pool:
                raise s.err("concurrency", "not in the pool model: its connections are fixed")
            concurrency = s.integer("concurrency", lo=1, hi=MAX_IN_FLIGHT)
            out.append(Stage(duration_s, concurrency=concurrency, weights=weights))
            continue
        end = s.number(given[0], 0.0, lo=0.0, hi=MAX_RATE_PER_S)
        start = rate if given == ["target"] else end
        out.append(Stage(duration_s, start, end, weights=weights))
        rate = end
    return tuple(out)


def _weights(s: Reader, kinds: Sequence[str]) -> dict[str, float]:
    mix = Reader(s.doc, (*s.path, "mix"), None, "a mapping KIND: WEIGHT")
    weights = {}
    for kind in mix.data:
        if kind not in kinds:
            raise mix.err(kind, f"no {kind!r} entry in flows: (have {', '.join(kinds)})")
        weights[kind] = mix.number(kind, 0.0, lo=0.0, hi=1e6)
    if sum(weights.values()) <= 0:
        raise s.err("mix", "all weights are 0: nothing to run in this stage")
    return weights


def _per_s(times_s: Sequence[float]) -> float | None:
    span = max(times_s) - min(times_s) if len(times_s) > 1 else 0.0
    return (len(times_s) - 1) / span if span > 0 else None


def rate_figures(planned_at_s: Sequence[float], started_at_s: Sequence[float]) -> dict[str, Any]:
    """Open flows per second, planned and achieved: (flows - 1) / (last start - first start)
    over the plan's times and over the real starts. An engine that falls behind stretches
    the real span (and a run stopped early starts fewer), so the ratio drops below 1."""
    planned, achieved = _per_s(planned_at_s), _per_s(started_at_s)
    return {
        "planned_per_s": None if planned is None else round(planned, 3),
        "achieved_per_s": None if achieved is None else round(achieved, 3),
        "achieved_ratio": round(achieved / planned, 4) if planned and achieved else None,
    }
