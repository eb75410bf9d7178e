"""Pass/fail gates on a run's figures, as k6's thresholds: `thresholds:` in the scenario and
`replay run --threshold`; a breach makes the run exit 3, naming every breached one.

    THRESHOLD = SUBJECT [{kind=K | backend=B | stage=N}] (< | <= | > | >=) VALUE

    p99 < 200ms                 total latency (an ok flow's end), corrected: from the
                                scheduled start; p50 p90 p99 p99.9 max mean, or p(99)
    ttfb p99.9 < 50ms           a phase first: connect, ttfb or total
    uncorrected p99 < 20ms      timed from the actual start (wrk's figure)
    p99{backend=rs1} < 100ms    one backend's (or kind's, or stage's) flows only
    errors < 0.1%               flows not ok / flows (also errors{kind=http}; N% or 0.001)
    share{backend=rs1} > 30%    that backend's share of the flows; without a backend: each
                                backend's (the target's named ones included)
    rate > 95%                  achieved / planned flows per second (open models)
    rate >= 900/s               achieved flows per second

A latency needs its unit (us, ms, s). A subject with no flows to judge is breached.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.latency import PHASES, STATS
from lvsprobe.replay.limits import MAX_THRESHOLDS
from lvsprobe.replay.yamldoc import Reader

if TYPE_CHECKING:
    from lvsprobe.replay.flowcolumns import FlowColumns

_FORM = re.compile(
    r"^\s*(?P<subject>[a-z0-9_.() ]+?)\s*"
    r"(?:\{\s*(?P<key>kind|backend|stage)\s*[=:]\s*(?P<name>[^}\s]+)\s*\})?\s*"
    r"(?P<op><=|>=|<|>)\s*(?P<value>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>us|ms|s|%|/s)?\s*$"
)
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}
LATENCY_STATS = STATS[1:]  # mean, p50 ... max


@dataclass(frozen=True, slots=True)
class Threshold:
    """One gate, parsed. `subject` is latency, errors, share or rate; `value` is in seconds,
    a fraction, or flows per second (`per_s`)."""

    text: str
    subject: str
    op: str
    value: float
    stat: str = ""
    phase: str = "total"
    timing: str = "corrected"
    key: str | None = None
    name: str | None = None
    per_s: bool = False


def parse_threshold(text: str) -> Threshold:
    """A Threshold from its text; ValueError says what is wrong."""
    match = _FORM.match(text.lower())
    if match is None:
        raise ValueError(
            f"{text[:60]!r} is not SUBJECT [{{kind=K|backend=B|stage=N}}] OP VALUE, "
            "e.g. `p99 < 200ms`, `errors < 0.1%`, `share{backend=rs1} > 30%`, `rate > 95%`"
        )
    words = match["subject"].replace("p(", "p").replace(")", "").split()
    op, number, unit, key = match["op"], float(match["value"]), match["unit"], match["key"]
    common: dict[str, Any] = {"text": text.strip(), "op": op, "key": key, "name": match["name"]}
    if words in (["errors"], ["share"]):
        if unit not in (None, "%"):
            raise ValueError(f"{text!r}: {words[0]} is a share: N% or a fraction")
        fraction = number / 100 if unit == "%" else number
        if fraction > 1:
            raise ValueError(f"{text!r}: a share is at most 100% (1.0)")
        if words == ["share"] and key not in (None, "backend"):
            raise ValueError(f"{text!r}: share is per backend: share{{backend=NAME}}")
        return Threshold(subject=words[0], value=fraction, **common)
    if words == ["rate"]:
        if unit not in ("%", "/s") or key is not None:
            raise ValueError(f"{text!r}: rate is N% (of the planned rate) or N/s, unfiltered")
        per_s = unit == "/s"
        value = number if per_s else number / 100
        return Threshold(subject="rate", value=value, per_s=per_s, **common)
    phase = words.pop(0) if words and words[0] in PHASES else "total"
    timing = words.pop(0) if words and words[0] in ("corrected", "uncorrected") else "corrected"
    if len(words) != 1 or words[0] not in LATENCY_STATS:
        raise ValueError(
            f"{text!r}: unknown subject {match['subject']!r} (latency: [connect|ttfb|total] "
            f"[uncorrected] {'|'.join(LATENCY_STATS)}; or errors, share, rate)"
        )
    if unit not in _SECONDS:
        raise ValueError(f"{text!r}: a latency needs its unit: us, ms or s (200ms, 0.2s)")
    return Threshold(
        subject="latency", value=number * _SECONDS[unit], stat=words[0], phase=phase,
        timing=timing, **common,
    )  # fmt: skip


def check_threshold(threshold: Threshold, kinds: Sequence[str], stages: int, open_: bool) -> None:
    """ValueError if the threshold cannot apply to the scenario (its kinds, stage count,
    arrival model): found before the run, not after."""
    if threshold.key == "kind" and threshold.name not in kinds:
        raise ValueError(
            f"{threshold.text!r}: no {threshold.name!r} flows (have {', '.join(kinds)})"
        )
    if threshold.key == "stage" and not (threshold.name or "").isdigit():
        raise ValueError(f"{threshold.text!r}: a stage is its index, 0 to {stages - 1}")
    if threshold.key == "stage" and int(threshold.name or 0) >= max(stages, 1):
        raise ValueError(f"{threshold.text!r}: the profile has {stages} stages (0 to {stages - 1})")
    if threshold.subject == "rate" and not threshold.per_s and not open_:
        raise ValueError(f"{threshold.text!r}: a closed model plans no rate; give N/s")


def read_thresholds(top: Reader) -> tuple[Threshold, ...]:
    """The scenario's `thresholds:` list (under the top-level reader), each parsed."""
    if not top.has("thresholds"):
        return ()
    out = []
    for i, item in enumerate(top.items("thresholds", "thresholds (text)", MAX_THRESHOLDS)):
        try:
            if not isinstance(item, str):
                raise ValueError(f"expected text like `p99 < 200ms`, got {type(item).__name__}")
            out.append(parse_threshold(item))
        except ValueError as exc:
            raise top.doc.error(("thresholds", i), str(exc)) from None
    return tuple(out)


def _picked(t: Threshold, columns: FlowColumns) -> np.ndarray | None:
    """Which flows a threshold's group holds (None: every flow)."""
    if t.key is None:
        return None
    labels = columns.backend() if t.key == "backend" else columns.labels(t.key)
    return labels.rows_named(t.name or "")


def _observe(
    t: Threshold, summary: Mapping[str, Any], columns: FlowColumns, backends: Iterable[str]
) -> tuple[float | None, str]:
    """The figure a threshold judges, and how to show it."""
    if t.subject == "latency":
        latency = summary.get("latency", {})
        if t.key is not None:
            latency = latency.get(f"by_{t.key}", {}).get(t.name, {})
        value = latency.get(t.phase, {}).get(t.timing, {}).get(t.stat)
        return value, "no flows" if value is None else f"{value * 1000:.2f}ms"
    if t.subject == "errors":
        picked = _picked(t, columns)
        failed = ~columns.ok()
        count = columns.rows if picked is None else int(np.count_nonzero(picked))
        if not count:
            return None, "no flows"
        value = int(np.count_nonzero(failed if picked is None else failed & picked)) / count
        return value, f"{value:.3%} of {count}"
    if t.subject == "share":
        if not columns.rows:
            return None, "no flows"
        flows = columns.backend().counts()
        names = [t.name] if t.name else sorted({*backends, *flows})
        shares = {name: flows.get(name, 0) / columns.rows for name in names if name is not None}
        pick = min if t.op.startswith(">") else max  # the backend nearest to breaching
        name = pick(shares, key=lambda n: shares[n])
        return shares[name], f"{name} {shares[name]:.2%}"
    rates = summary.get("rates") or {}
    if t.per_s:
        value = rates.get("achieved_per_s")
        return value, "no rate" if value is None else f"{value:.1f}/s"
    value = rates.get("achieved_ratio")
    if value is None:
        return None, "no planned rate"
    return value, f"{value:.1%} ({rates['achieved_per_s']:.1f} of {rates['planned_per_s']:.1f}/s)"


def evaluate(
    thresholds: Iterable[Threshold],
    summary: Mapping[str, Any],
    records: Iterable[FlowRecord],
    backends: Iterable[str] = (),
) -> dict[str, Any]:
    """`judge` on a finished run's records."""
    from lvsprobe.replay.flowcolumns import FlowColumns
    from lvsprobe.replay.flowlog import records_table

    return judge(thresholds, summary, FlowColumns(records_table(records)), backends)


def judge(
    thresholds: Iterable[Threshold],
    summary: Mapping[str, Any],
    columns: FlowColumns,
    backends: Iterable[str] = (),
) -> dict[str, Any]:
    """{passed, results: [{threshold, observed, passed}]} of a finished run, whose summary
    and flow log's columns are given."""
    results = []
    for t in thresholds:
        value, shown = _observe(t, summary, columns, backends)
        passed = value is not None and _COMPARE[t.op](value, t.value)
        results.append({"threshold": t.text, "observed": shown, "passed": passed})
    return {"passed": all(r["passed"] for r in results), "results": results}
