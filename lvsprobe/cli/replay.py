"""`lvsprobe replay`: drive client flows against a director and log every flow."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from lvsprobe.cli.exit import ExitCode


@click.group("replay")
def replay() -> None:
    """Replay synthetic or recorded client traffic from many source addresses.

    \b
    Scenarios (YAML) say what to drive, from which client addresses, how fast and when to
    stop; `replays/` holds a catalogue. Every flow becomes one row of RUN/flows.parquet
    with the backend that served it, named by the backend itself and by the director's
    connection table.

    \b
      lvsprobe replay run replays/rr-fairness.yaml --out runs/rr --dry-run
      lvsprobe replay run replays/rr-fairness.yaml --out runs/rr --conn-table netns:lvs-d
      lvsprobe replay import capture.pcap -o recorded.yaml --target 198.18.1.100:80
    """


class _ProgressLine:
    """Flows, rate and errors on stderr: one rewritten line on a TTY, plain lines otherwise."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.tty = sys.stderr.isatty()
        self._last_plain = float("-inf")

    def __call__(self, progress: Any) -> None:
        if not self.enabled:
            return
        rate = progress.done / progress.elapsed_s if progress.elapsed_s > 0 else 0.0
        width = 24
        filled = int(width * progress.done / self.total) if self.total else width
        text = (
            f"[{'#' * filled}{'.' * (width - filled)}] {progress.done}/{self.total} flows "
            f"{rate:7.1f}/s  errors {progress.errors}  in flight "
            f"{progress.started - progress.done}  {progress.elapsed_s:6.1f}s"
        )
        if self.tty:
            click.echo("\r" + text, err=True, nl=False)
        elif progress.elapsed_s - self._last_plain >= 5 or progress.done == self.total:
            self._last_plain = progress.elapsed_s
            click.echo(text, err=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            click.echo("", err=True)


def _override_target(scenario: Any, target: str | None) -> Any:
    import dataclasses
    import ipaddress

    if target is None:
        return scenario
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        host, port = target, str(scenario.target.port)
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise click.BadParameter(
            f"{target!r} is not ADDRESS[:PORT]", param_hint="--target"
        ) from None
    new_target = dataclasses.replace(scenario.target, address=host, port=int(port))
    return dataclasses.replace(scenario, target=new_target)


def _timed_commands(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[Any, ...]:
    from lvsprobe.replay.hooks import parse_timed_command

    try:
        return tuple(parse_timed_command(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _snapshot_every(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    from lvsprobe.replay.runner import check_snapshot_every

    try:
        return check_snapshot_every(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _summary_line(summary: dict[str, Any]) -> str:
    return (
        f"{summary['flows']} flows, {summary['ok']} ok, {summary['errors']} errors; "
        f"backends {summary['backends']}"
    )


@replay.command("run")
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
    callback=_snapshot_every,
    help="Seconds between conn-table snapshots (at least 0.1).",
)
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
    "--engine",
    type=click.Choice(["auto", "epoll", "asyncio"]),
    default="auto",
    show_default=True,
    help="Flow driver: epoll (a plain loop, fastest; tcp/http/udp/syn flows only), asyncio "
    "(every kind), or auto (epoll when every planned flow allows it).",
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
    callback=_timed_commands,
    help="Run a shell COMMAND SECONDS into the replay and record it as EVENT in "
    "RUN/events.json (repeatable), e.g. --at '30:failover:ssh lvs1 systemctl stop keepalived' "
    "--at '60:failback:ssh lvs1 systemctl start keepalived'; then `lvsprobe analyze failover "
    "RUN` knows when it happened. Each command may take up to 300 s.",
)
def run(
    scenario_path: Path,
    out_dir: Path | None,
    force: bool,
    target: str | None,
    conn_table: str | None,
    snapshot_every: float,
    seed: int | None,
    max_flows: int | None,
    dry_run: bool,
    as_json: bool,
    no_progress: bool,
    check: bool,
    engine: str,
    skip_pool_check: bool,
    timed: tuple[Any, ...],
) -> None:
    """Run SCENARIO and write the flow log to --out.

    Each flow is journaled as it finishes (RUN/flows.journal.arrows, flushed every second),
    so a run killed before its end keeps its finished flows: `lvsprobe replay summary RUN`
    then writes flows.parquet and summary.json from the journal.

    Ctrl-C stops the run early and still writes a valid flow log (the flows in flight are
    recorded as error:interrupted) and exits 130; a second Ctrl-C skips the slow steps left
    (the final conn-table snapshot and attribution), a third quits at once.
    """
    import dataclasses

    from lvsprobe.replay.plan import describe_plan, make_plan, require_pool
    from lvsprobe.replay.scenario import load_scenario

    scenario = _override_target(load_scenario(scenario_path), target)
    if seed is not None:
        scenario = dataclasses.replace(scenario, seed=seed)
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
    if not skip_pool_check:
        require_pool(tuple(sorted({p.client_address for p in plan})))
    from lvsprobe.replay.fastloop import FAST_KINDS, fast_eligible

    fast = engine == "epoll" or (engine == "auto" and fast_eligible(plan))
    if fast and not fast_eligible(plan):
        kinds = sorted({p.kind for p in plan} - FAST_KINDS)
        raise click.UsageError(f"--engine epoll cannot drive {', '.join(kinds)} flows")
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
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        click.echo(f"{_summary_line(summary)}; written to {out_dir}")
    if interrupted:
        raise click.exceptions.Exit(ExitCode.INTERRUPTED)
    if summary.get("checks") and not summary["checks"]["passed"]:
        for failure in summary["checks"]["failures"]:
            click.echo(f"lvsprobe: check failed: {failure}", err=True)
        raise click.exceptions.Exit(ExitCode.CHECK_FAILED)


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
) -> tuple[dict[str, Any], bool]:
    from lvsprobe.replay import hooks
    from lvsprobe.replay.attribution import conn_table_source
    from lvsprobe.replay.fastloop import FastRunner
    from lvsprobe.replay.rundir import open_run_dir, write_run
    from lvsprobe.replay.runner import Runner, RunOptions, StopSignals

    run_dir = open_run_dir(out_dir, scenario, scenario_path, len(plan), force)
    signals = StopSignals(out_dir, ExitCode.INTERRUPTED)
    line = _ProgressLine(len(plan), progress)
    options = RunOptions(
        conn_table=conn_table_source(conn_table) if conn_table else None,
        snapshot_every_s=snapshot_every,
        on_progress=line,
        journal=run_dir.journal,
        hurry=signals.hurry,
    )

    async def main() -> Any:
        runner = Runner(scenario, plan, options)
        loop = asyncio.get_running_loop()
        signals.on_stop(lambda: loop.call_soon_threadsafe(runner.stop))
        try:
            return await runner.run(), runner.stop_reason
        finally:
            signals.on_stop(lambda: None)  # the loop is about to close

    def epoll() -> Any:
        runner = FastRunner(scenario, plan, options)
        signals.on_stop(runner.stop)
        return runner.run(), runner.stop_reason

    schedule = hooks.CommandSchedule(timed) if timed else None
    with signals:
        try:
            if schedule is not None:
                schedule.start()
            try:
                result, stop_reason = epoll() if fast else asyncio.run(main())
            finally:
                run_dir.journal.flush()
                runs = schedule.finish(signals.hurry) if schedule is not None else []
            line.close()
            summary = write_run(
                run_dir, scenario, result, stop_reason, len(plan), check, signals.hurry()
            )
            if schedule is not None:
                starts = [r.start_unix - r.start_s for r in result.records]
                hooks.write_events(out_dir, runs, min(starts, default=schedule.started_unix))
                for problem in hooks.problems(runs):
                    click.echo(f"lvsprobe: warning: {problem}", err=True)
        finally:
            run_dir.close()
    return summary, stop_reason == "interrupted"


@replay.command("import")
@click.argument("capture", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Scenario file to write.",
)
@click.option(
    "--target",
    default="198.18.1.100:80",
    show_default=True,
    help="VIP[:PORT] the recorded server is mapped to.",
)
@click.option(
    "--clients",
    "clients_cidr",
    default="198.18.16.1/20",
    show_default=True,
    help="Client pool: recorded clients map into it in order of first appearance.",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="Replay this many times faster than recorded.",
)
@click.option(
    "--detail",
    is_flag=True,
    help="Dissect with tshark (pyshark): HTTP paths, FTP commands, TLS SNI. Slower.",
)
def import_(
    capture: Path, output: Path, target: str, clients_cidr: str, speed: float, detail: bool
) -> None:
    """Turn the TCP/UDP flows of CAPTURE (pcap or pcapng) into a scenario.

    A truncated or corrupt capture still gives the flows read before the damage, with a
    warning naming where it stopped.
    """
    import ipaddress

    import yaml

    from lvsprobe.replay.pcapimport import read_capture
    from lvsprobe.replay.recorded import add_detail, to_scenario

    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{target!r} is not VIP:PORT", param_hint="--target")
    try:
        ipaddress.ip_address(host.strip("[]"))
        ipaddress.ip_network(clients_cidr, strict=False)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    result = read_capture(capture)
    if result.error:
        click.echo(f"lvsprobe: warning: {result.error}; kept {len(result.flows)} flows", err=True)
    if detail:
        add_detail(capture, result.flows)
    text = to_scenario(result, str(capture), host.strip("[]"), int(port), clients_cidr, speed)
    output.write_text(text)
    replayed = len(yaml.safe_load(text)["recorded"])
    folded = len(result.flows) - replayed
    click.echo(
        f"{replayed} flows from {result.packets} packets -> {output}"
        + (f" ({folded} FTP data connections or non-TCP/UDP flows folded)" if folded else "")
    )


@replay.command("attribute")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--snapshots",
    "snapshot_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Conn-table snapshots taken elsewhere (default: "
    "RUN/conn-snapshots). Files in name order; index.json gives their times.",
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    metavar="NAME=ADDRESS[:PORT]",
    help="Name a real server (repeatable); default: the run's target.json.",
)
def attribute(run_dir: Path, snapshot_dir: Path | None, backends: tuple[str, ...]) -> None:
    """Join a finished run's flows with director conn-table snapshots, after the fact.

    Rewrites RUN/flows.parquet's conn_backend* and attribution_agrees columns and the
    summary (a run killed before its end is read from its journal). Use it when the
    snapshots were taken by another tool (`cat /proc/net/ip_vs_conn` on the director every
    second, say) rather than by `replay run --conn-table`.
    """
    from lvsprobe.replay import flowlog
    from lvsprobe.replay.attribution import attribute as join
    from lvsprobe.replay.attribution import load_snapshots
    from lvsprobe.replay.rundir import lock_run_dir

    names = dict(b.split("=", 1) for b in backends if "=" in b)
    if len(names) != len(backends):
        raise click.BadParameter("expected NAME=ADDRESS[:PORT]", param_hint="--backend")
    target_path = run_dir / flowlog.TARGET_FILE
    if not names and target_path.exists():
        names = json.loads(target_path.read_text()).get("backends", {})
    lock_fd = lock_run_dir(run_dir)  # LvsprobeError while a run is writing it
    try:
        records = flowlog.records_from_table(flowlog.read_flows(run_dir))
        for record in records:  # a fresh join replaces the old one
            for name in ("conn_backend_address", "conn_backend", "attribution_agrees"):
                setattr(record, name, None)
        snapshots = load_snapshots(snapshot_dir or run_dir / flowlog.SNAPSHOT_DIR)
        matched = join(records, snapshots, names)
        old = flowlog.read_summary(run_dir)
        flowlog.write_flows(run_dir, records)
        keep = {k: v for k, v in old.items() if k not in flowlog.summarize([])}
        summary = flowlog.summarize(
            records, **{**keep, "conn_table_matched": matched, "snapshots": len(snapshots)}
        )
        flowlog.write_summary(run_dir, summary)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    agree = summary["attribution"]
    click.echo(
        f"{matched} of {len(records)} flows found in {len(snapshots)} snapshots; "
        f"{agree['agree']} agree, {agree['disagree']} disagree"
    )


@replay.command("summary")
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
    click.echo(f"{_summary_line(summary)} ({state})")


@replay.command("schema")
def schema() -> None:
    """Print the scenario file schema (every key, with its default)."""
    from lvsprobe.replay.expect import __doc__ as expect_doc
    from lvsprobe.replay.scenario import SCENARIO_HELP

    click.echo(SCENARIO_HELP)
    click.echo("\nexpect: checks `replay run --check` makes after the run (exit 3 if one fails):")
    click.echo((expect_doc or "").split("\n\n", 1)[1].rstrip())
