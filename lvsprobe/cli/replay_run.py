"""`lvsprobe replay run` and `lvsprobe replay summary`: drive a scenario into a run directory,
and read (or finish) one."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import click

from lvsprobe.cli.exit import ExitCode
from lvsprobe.cli.options import max_conn_table_bytes_option
from lvsprobe.cli.replay_options import (
    listen_address,
    override_target,
    run_thresholds,
    snapshot_every,
    timed_commands,
)
from lvsprobe.cli.replay_output import (
    ProgressLine,
    latency_table,
    summary_line,
    threshold_lines,
)
from lvsprobe.cli.replay_workers import execute_on_workers, parse_workers_option
from lvsprobe.errors import LvsprobeError
from lvsprobe.kernel.procfs.limits import CONN_TABLE_DEFAULT_MAX_BYTES
from lvsprobe.replay.metricspecs import METRICS_LINGER_S


@click.command("run")
@click.argument(
    "scenario_path", metavar="SCENARIO", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory to write (flows.parquet, summary.json, ...); checked before any "
    "traffic is sent.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Replace the run --out already holds (removes only the files lvsprobe writes).",
)
@click.option("--target", help="Override the scenario's target: VIP[:PORT].")
@click.option(
    "--conn-table",
    metavar="SOURCE",
    help="Director conn table to snapshot during the run: a file such as "
    "/proc/net/ip_vs_conn, or netns:NAME (read with ip netns exec).",
)
@click.option(
    "--snapshot-every",
    type=float,
    default=1.0,
    show_default=True,
    callback=snapshot_every,
    help="Seconds between conn-table snapshots (at least 0.1).",
)
@max_conn_table_bytes_option
@click.option("--seed", type=int, help="Override the scenario's seed.")
@click.option("--max-flows", type=click.IntRange(min=1), help="Run at most this many flows.")
@click.option("--dry-run", is_flag=True, help="Print the plan; send nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress line on stderr.")
@click.option(
    "--check",
    is_flag=True,
    help="Check the scenario's `expect:` block after the run; exit 3 if it does not hold.",
)
@click.option(
    "--threshold",
    "threshold_texts",
    multiple=True,
    metavar="EXPR",
    help="A gate on the run's figures, k6-like (repeatable; with the scenario's "
    "`thresholds:`): 'p99 < 200ms', 'errors < 0.1%', 'share{backend=rs1} > 30%', "
    "'rate > 95%'. Exit 3 naming every breach; `replay schema` lists the forms.",
)
@click.option(
    "--metrics-listen",
    metavar="[HOST]:PORT",
    callback=listen_address,
    help="Serve the run's own Prometheus metrics at http://HOST:PORT/metrics while it runs "
    "(flows by kind, outcome and backend; latency histograms; planned and achieved rates).",
)
@click.option(
    "--metrics-linger",
    "metrics_linger_s",
    type=click.FloatRange(min=0.0),
    default=METRICS_LINGER_S,
    show_default=True,
    metavar="SECONDS",
    help="With --metrics-listen: after the run, keep serving until one scrape has read the "
    "final counts, at most this long (0: stop with the run).",
)
@click.option(
    "--engine",
    type=click.Choice(["auto", "epoll", "asyncio"]),
    default="auto",
    show_default=True,
    help="Flow driver: epoll (a plain loop, fastest; tcp/http/udp/syn flows and the pool "
    "model), asyncio (every kind), or auto (epoll when every planned flow allows it).",
)
@click.option(
    "--skip-pool-check",
    is_flag=True,
    help="Do not check that the client addresses exist on this host.",
)
@click.option(
    "--at",
    "timed",
    multiple=True,
    metavar="SECONDS:EVENT:COMMAND",
    callback=timed_commands,
    help="Run a shell COMMAND SECONDS into the replay and record it as EVENT in "
    "RUN/events.json (repeatable), e.g. --at '30:failover:ssh lvs1 systemctl stop keepalived' "
    "--at '60:failback:ssh lvs1 systemctl start keepalived'; then `lvsprobe analyze failover "
    "RUN` knows when it happened. Each command may take up to 300 s.",
)
@click.option(
    "--workers",
    metavar="SPEC",
    callback=parse_workers_option,
    help="Spread the run over a Dask cluster (needs lvsprobe[scale]): local:N (N worker "
    "processes on this host), tcp://HOST:PORT or a scheduler file (an existing cluster; each "
    "worker drives the client addresses its host has). One run directory, a `worker` column.",
)
def run(
    scenario_path: Path,
    out_dir: Path | None,
    force: bool,
    target: str | None,
    conn_table: str | None,
    snapshot_every: float,
    max_conn_table_bytes: int,
    seed: int | None,
    max_flows: int | None,
    dry_run: bool,
    as_json: bool,
    no_progress: bool,
    check: bool,
    threshold_texts: tuple[str, ...],
    metrics_listen: tuple[str, int] | None,
    metrics_linger_s: float,
    engine: str,
    skip_pool_check: bool,
    timed: tuple[Any, ...],
    workers: Any,
) -> None:
    """Run SCENARIO and write the flow log to --out.

    Each flow is journaled as it finishes (RUN/flows.journal.arrows, flushed every second),
    so a run killed before its end keeps its finished flows: `lvsprobe replay summary RUN`
    then writes flows.parquet and summary.json from the journal.

    Ctrl-C stops the run early and still writes a valid flow log (the flows in flight are
    recorded as error:interrupted) and exits 130; a second Ctrl-C skips the slow steps left
    (the final conn-table snapshot and attribution), a third quits at once.

    Latency is reported as wrk2 does: each flow's connect, first byte and end timed from its
    scheduled start (corrected: a stall delays the flows queued behind it) and from its actual
    start (uncorrected), p50/p90/p99/p99.9/max and mean from HDR histograms.
    """
    import dataclasses

    from lvsprobe.replay.gcpause import collections_paused
    from lvsprobe.replay.plan import describe_plan, make_plan, require_pool
    from lvsprobe.replay.scenario import load_scenario

    scenario = override_target(load_scenario(scenario_path), target)
    if seed is not None:
        scenario = dataclasses.replace(scenario, seed=seed)
    thresholds = run_thresholds(scenario, threshold_texts)
    with collections_paused(promote=True):  # a tuple per flow, kept to the end: unwalked
        plan = make_plan(scenario, max_flows)
    if dry_run:
        described = describe_plan(scenario, plan)
        if as_json:
            click.echo(json.dumps(described, indent=2))
        else:
            for key, value in described.items():
                if key == "first":
                    click.echo("first flows:")
                    for line in value:  # type: ignore[attr-defined]
                        click.echo(f"  {line}")
                elif value is not None and value != "":
                    click.echo(f"{key}: {value}")
        return
    if out_dir is None:
        raise click.UsageError("--out RUN_DIR is required (or use --dry-run)")
    if not skip_pool_check and workers is None:  # with --workers, each worker checks its own
        require_pool(tuple(sorted({p.client_address for p in plan})))
    from lvsprobe.replay.fastloop import FAST_KINDS, fast_eligible

    fast = engine == "epoll" or (engine == "auto" and fast_eligible(plan))
    if fast and not fast_eligible(plan):
        kinds = sorted({p.kind for p in plan} - FAST_KINDS)
        raise click.UsageError(f"--engine epoll cannot drive {', '.join(kinds)} flows")
    if not fast and scenario.arrival.model == "pool":
        raise click.UsageError("--engine asyncio does not drive the pool model (epoll does)")
    shard_failure = None
    if workers is not None:
        if metrics_listen is not None:
            raise click.UsageError("--metrics-listen serves one process's run: not with --workers")
        summary, interrupted, shard_failure = execute_on_workers(
            workers, scenario, scenario_path, plan, max_flows, out_dir, fast, conn_table,
            snapshot_every, max_conn_table_bytes, not no_progress, check, timed, force,
            skip_pool_check, thresholds,
        )  # fmt: skip
    else:
        summary, interrupted = _execute(
            scenario,
            scenario_path,
            plan,
            out_dir,
            conn_table,
            snapshot_every,
            not no_progress,
            check,
            fast,
            timed,
            force,
            max_conn_table_bytes,
            thresholds,
            metrics_listen,
            metrics_linger_s,
        )
    shown, breached = threshold_lines(summary)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        click.echo(f"{summary_line(summary)}; written to {out_dir}")
        for line in (*latency_table(summary), *shown):
            click.echo(line)
    if interrupted:
        raise click.exceptions.Exit(ExitCode.INTERRUPTED)
    if shard_failure is not None:
        for line in breached:
            click.echo(line, err=True)
        raise LvsprobeError(shard_failure)
    failures = [
        f"lvsprobe: check failed: {f}" for f in (summary.get("checks") or {}).get("failures", [])
    ]
    for line in failures + breached:
        click.echo(line, err=True)
    if failures or breached:
        raise click.exceptions.Exit(ExitCode.CHECK_FAILED)


def _say_lingering(linger_s: float) -> None:
    click.echo(
        f"replay: run over; serving its final metrics until one scrape reads them "
        f"(at most {linger_s:g} s, --metrics-linger)",
        err=True,
    )


def _execute(
    scenario: Any,
    scenario_path: Path,
    plan: list[Any],
    out_dir: Path,
    conn_table: str | None,
    snapshot_every: float,
    progress: bool,
    check: bool,
    fast: bool,
    timed: tuple[Any, ...] = (),
    force: bool = False,
    max_conn_table_bytes: int = CONN_TABLE_DEFAULT_MAX_BYTES,
    thresholds: tuple[Any, ...] = (),
    metrics_listen: tuple[str, int] | None = None,
    metrics_linger_s: float = 0.0,
) -> tuple[dict[str, Any], bool]:
    from lvsprobe.replay import hooks
    from lvsprobe.replay.attribution import conn_table_source
    from lvsprobe.replay.fastloop import FastRunner
    from lvsprobe.replay.gcpause import collections_paused
    from lvsprobe.replay.live import LiveStats, serve_metrics
    from lvsprobe.replay.plan import stages_of
    from lvsprobe.replay.rundir import open_run_dir, write_run
    from lvsprobe.replay.runparts import RunOptions, StopSignals

    live = None
    if progress or metrics_listen is not None:
        live = LiveStats(scenario.name, len(plan), stages_of(scenario))
    with contextlib.ExitStack() as serving:
        if metrics_listen is not None and live is not None:  # bound before the run dir
            serving.enter_context(
                serve_metrics(metrics_listen, live, metrics_linger_s, _say_lingering)
            )
        run_dir = open_run_dir(out_dir, scenario, scenario_path, len(plan), force)
        signals = StopSignals(out_dir, ExitCode.INTERRUPTED)
        line = ProgressLine(len(plan), progress, live)
        options = RunOptions(
            conn_table=conn_table_source(conn_table, max_conn_table_bytes) if conn_table else None,
            snapshot_every_s=snapshot_every,
            on_progress=line,
            journal=run_dir.journal,
            hurry=signals.hurry,
            live=live,
        )

        def on_asyncio() -> Any:
            import asyncio  # only for this engine: an epoll run's process never loads it

            from lvsprobe.replay.runner import Runner

            async def main() -> Any:
                runner = Runner(scenario, plan, options)
                loop = asyncio.get_running_loop()
                signals.on_stop(lambda: loop.call_soon_threadsafe(runner.stop))
                try:
                    return await runner.run(), runner.stop_reason
                finally:
                    signals.on_stop(lambda: None)  # the loop is about to close

            return asyncio.run(main())

        def epoll() -> Any:
            runner = FastRunner(scenario, plan, options)
            signals.on_stop(runner.stop)
            return runner.run(), runner.stop_reason

        schedule = hooks.CommandSchedule(timed) if timed else None
        # The epoll engine pauses collections for its loop, the finish for its own work; one
        # pause over both, its survivors promoted, spares the young collection in between a
        # walk over every flow record (gcpause.py). The asyncio engine's loop makes cycles.
        paused = collections_paused(promote=True) if fast else contextlib.nullcontext()
        with signals, paused:
            try:
                if schedule is not None:
                    schedule.start()
                try:
                    result, stop_reason = epoll() if fast else on_asyncio()
                finally:
                    run_dir.journal.flush()
                    runs = schedule.finish(signals.hurry) if schedule is not None else []
                line.close()
                summary = write_run(
                    run_dir, scenario, result, stop_reason, len(plan), check, signals.hurry(),
                    thresholds, [p.at_s for p in plan],
                )  # fmt: skip
                if schedule is not None:
                    starts = [r.start_unix - r.start_s for r in result.records]
                    hooks.write_events(out_dir, runs, min(starts, default=schedule.started_unix))
                    for problem in hooks.problems(runs):
                        click.echo(f"lvsprobe: warning: {problem}", err=True)
            finally:
                run_dir.close()
    return summary, stop_reason == "interrupted"


@click.command("summary")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def summary_(run_dir: Path, as_json: bool) -> None:
    """Print RUN's summary, and finish RUN first if its run was killed before its end.

    A run killed before its end (SIGKILL, the OOM killer, a third Ctrl-C) leaves its finished
    flows in RUN/flows.journal.arrows and no summary: this writes flows.parquet and
    summary.json from them (`complete` false, `stopped` "unfinished"). A run still going is
    only read.
    """
    from lvsprobe.replay.rundir import finish_run_dir

    summary = finish_run_dir(run_dir)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    state = "in progress" if summary.get("in_progress") else None
    if state is None and summary.get("rebuilt"):
        state = "unfinished: rebuilt from its journal"
    elif state is None:
        state = "complete" if summary.get("complete") else f"stopped: {summary.get('stopped')}"
    click.echo(f"{summary_line(summary)} ({state})")
