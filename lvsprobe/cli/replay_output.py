"""What `lvsprobe replay run` prints: the progress line while it runs, the summary and the
threshold verdicts after."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import click

from lvsprobe.replay.latency import PHASES, STATS


class ProgressLine:
    """Flows, rate, errors and p99 so far on stderr: one rewritten line on a TTY, a plain line
    every 5 s otherwise. `live` (live.LiveStats) gives the recent rate and the corrected p99."""

    def __init__(self, total: int, enabled: bool, live: Any = None):
        self.total, self.enabled, self.live = total, enabled, live
        self.tty = sys.stderr.isatty()
        self._last_plain = float("-inf")

    def __call__(self, progress: Any) -> None:
        if not self.enabled:
            return
        rate = progress.done / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        p99 = None
        if self.live is not None:
            view = self.live.view()
            rate, p99 = view.rate_per_s, view.p99_s
        width = 24
        filled = int(width * progress.done / self.total) if self.total else width
        text = (
            f"[{'#' * filled}{'.' * (width - filled)}] {progress.done}/{self.total} flows "
            f"{rate:7.1f}/s  errors {progress.errors}  in flight "
            f"{progress.started - progress.done}  p99 {_ms(p99)}  {progress.elapsed_s:6.1f}s"
        )
        if self.tty:
            click.echo("\r" + text, err=True, nl=False)
        elif progress.elapsed_s - self._last_plain >= 5 or progress.done == self.total:
            self._last_plain = progress.elapsed_s
            click.echo(text, err=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            click.echo("", err=True)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def summary_line(summary: Mapping[str, Any]) -> str:
    return (
        f"{summary['flows']} flows, {summary['ok']} ok, {summary['errors']} errors; "
        f"backends {summary['backends']}"
    )


def latency_table(summary: Mapping[str, Any]) -> list[str]:
    """The summary's latency as wrk2 prints it, ms: each phase from the scheduled start
    (corrected) and from the actual start; phases no flow reached are left out."""
    latency = summary.get("latency") or {}
    head = f"{'latency ms':22}" + "".join(f"{name:>10}" for name in (*STATS[2:], "mean"))
    lines = [head]
    for phase in PHASES:
        for timing in ("corrected", "uncorrected"):
            stats = latency.get(phase, {}).get(timing, {})
            if not stats.get("count"):
                continue
            cells = "".join(f"{stats[k] * 1000:10.2f}" for k in (*STATS[2:], "mean"))
            lines.append(f"{phase + ' ' + timing:22}{cells}")
    return lines if len(lines) > 1 else []


def threshold_lines(summary: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(lines for stdout, one per threshold; one stderr line per breach) of a run."""
    results = (summary.get("thresholds") or {}).get("results", [])
    shown = [f"{'✓' if r['passed'] else '✗'} {r['threshold']}: {r['observed']}" for r in results]
    breached = [
        f"lvsprobe: threshold breached: {r['threshold']} (observed {r['observed']})"
        for r in results
        if not r["passed"]
    ]
    return shown, breached
