"""`lvsprobe replay run --workers`: the run spread over a Dask cluster, written to the same
run directory a single-process run writes (lvsprobe/replay/scaleout.py does the run)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import click

from lvsprobe.cli.exit import ExitCode


def parse_workers_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """`--workers` as a WorkersSpec (None: the single-process run)."""
    if value is None:
        return None
    from lvsprobe.replay.scaleout import parse_workers

    try:
        return parse_workers(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def execute_on_workers(
    spec: Any,
    scenario: Any,
    scenario_path: Path,
    plan: list[Any],
    max_flows: int | None,
    out_dir: Path,
    fast: bool,
    conn_table: str | None,
    snapshot_every_s: float,
    max_conn_table_bytes: int,
    progress: bool,
    check: bool,
    timed: tuple[Any, ...],
    force: bool,
    skip_pool_check: bool,
    thresholds: tuple[Any, ...] = (),
) -> tuple[dict[str, Any], bool, str | None]:
    """Run the plan's shards on the cluster `spec` names and write RUN; returns the summary,
    whether it was interrupted, and the one line saying which shards failed (None: none).
    The conn-table snapshots are taken here, once, not by the shards."""
    from lvsprobe.cli.replay_output import ProgressLine
    from lvsprobe.replay import flowsummary, hooks
    from lvsprobe.replay.attribution import conn_table_source
    from lvsprobe.replay.merge import skew_summary
    from lvsprobe.replay.rundir import open_run_dir, write_run
    from lvsprobe.replay.runparts import RunOptions, StopSignals
    from lvsprobe.replay.scaleout import START_LEAD_S, open_cluster, plan_shards, run_shards

    with open_cluster(spec) as client:
        shards, time_delays = plan_shards(client, plan, skip_pool_check)
        run_dir = open_run_dir(out_dir, scenario, scenario_path, len(plan), force)
        signals = StopSignals(out_dir, ExitCode.INTERRUPTED)
        stop_requested = threading.Event()
        progress_line = ProgressLine(len(plan), progress)
        options = RunOptions(
            conn_table=conn_table_source(conn_table, max_conn_table_bytes) if conn_table else None,
            snapshot_every_s=snapshot_every_s,
            on_progress=progress_line,
            journal=run_dir.journal,
            hurry=signals.hurry,
        )
        schedule = hooks.CommandSchedule(timed) if timed else None
        timers: list[threading.Timer] = []

        def on_start(start_unix: float) -> None:
            if schedule is not None:  # the timed commands count from the start instant
                timers.append(threading.Timer(start_unix - time.time(), schedule.start))
                timers[0].start()

        with signals:
            signals.on_stop(stop_requested.set)
            try:
                try:
                    scaled = run_shards(
                        client, scenario, shards, max_flows, fast, options, stop_requested,
                        time_delays, on_start,
                    )  # fmt: skip
                finally:
                    run_dir.journal.flush()
                    for timer in timers:
                        timer.cancel()
                    runs = schedule.finish(signals.hurry) if schedule is not None else []
                progress_line.close()
                result = scaled.result()
                summary = write_run(
                    run_dir, scenario, result, scaled.stop_reason, len(plan), check,
                    signals.hurry(), thresholds, [p.at_s for p in plan],
                )  # fmt: skip
                states = list(scaled.merge.states.values())
                summary["scale"] = {
                    "workers": spec.text,
                    "start_unix": scaled.start_unix,
                    "start_lead_s": START_LEAD_S,
                    "failed": len(scaled.merge.failed),
                    "lost": sum(s.lost for s in states),
                    "dropped": sum(s.dropped for s in states),
                    "shards": [s.describe() for s in states],
                    **skew_summary(states, time_delays),
                }
                flowsummary.write_summary(out_dir, summary)
                if schedule is not None:
                    hooks.write_events(out_dir, runs, scaled.start_unix or schedule.started_unix)
                    for problem in hooks.problems(runs):
                        click.echo(f"lvsprobe: warning: {problem}", err=True)
            finally:
                run_dir.close()
    return summary, scaled.stop_reason == "interrupted", scaled.merge.failure_line()
