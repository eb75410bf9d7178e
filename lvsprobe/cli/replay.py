"""`lvsprobe replay`: drive client flows against a director and log every flow."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from lvsprobe.cli.exit import ExitCode
from lvsprobe.cli.options import max_conn_table_bytes_option
from lvsprobe.kernel.procfs.limits import CONN_TABLE_DEFAULT_MAX_BYTES


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


@replay.command("run")
@click.argument(
    "scenario_path", metavar="SCENARIO", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory to write (flows.parquet, summary.json, ...).",
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
    help="Seconds between conn-table snapshots.",
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
    engine: str,
    skip_pool_check: bool,
    timed: tuple[Any, ...],
) -> None:
    """Run SCENARIO and write the flow log to --out.

    Ctrl-C stops the run early and still writes a valid flow log (the flows in flight are
    recorded as error:interrupted) and exits 130.
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
        max_conn_table_bytes,
    )
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=True))
    else:
        click.echo(
            f"{summary['flows']} flows, {summary['ok']} ok, {summary['errors']} errors; "
            f"backends {summary['backends']}; written to {out_dir}"
        )
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
    max_conn_table_bytes: int = CONN_TABLE_DEFAULT_MAX_BYTES,
) -> tuple[dict[str, Any], bool]:
    from lvsprobe.replay.attribution import conn_table_source
    from lvsprobe.replay.fastloop import FastRunner
    from lvsprobe.replay.runner import Runner, RunOptions, write_run

    line = _ProgressLine(len(plan), progress)
    options = RunOptions(
        conn_table=conn_table_source(conn_table, max_conn_table_bytes) if conn_table else None,
        snapshot_every_s=snapshot_every,
        on_progress=line,
    )

    async def main() -> Any:
        runner = Runner(scenario, plan, options)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, runner.stop)
        try:
            result = await runner.run()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        return result, runner.stop_reason

    def epoll() -> Any:
        runner = FastRunner(scenario, plan, options)
        handlers = {
            signum: signal.signal(signum, lambda *_: runner.stop())
            for signum in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            result = runner.run()
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return result, runner.stop_reason

    from lvsprobe.replay import hooks

    schedule = hooks.CommandSchedule(timed) if timed else None
    if schedule is not None:
        schedule.start()
    try:
        result, stop_reason = epoll() if fast else asyncio.run(main())
    finally:
        runs = schedule.finish() if schedule is not None else []
    line.close()
    summary = write_run(out_dir, scenario, scenario_path, result, stop_reason, len(plan), check)
    if schedule is not None:
        starts = [r.start_unix - r.start_s for r in result.records]
        hooks.write_events(out_dir, runs, min(starts, default=schedule.started_unix))
        for problem in hooks.problems(runs):
            click.echo(f"lvsprobe: warning: {problem}", err=True)
    return summary, stop_reason == "interrupted"


def _import_options(target: str, clients_cidr: str) -> tuple[str, int | None]:
    """`replay import`'s --target and --clients, checked by the rules `replay run` applies
    to the scenario it writes: (target address, port or None)."""
    from lvsprobe.replay.scenario import check_families, parse_endpoint, pool_span

    try:
        host, port = parse_endpoint(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from None
    try:
        first_client, _ = pool_span(clients_cidr)
        check_families(host, str(first_client))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--clients") from None
    return host, port


@replay.command("import")
@click.argument("capture", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Scenario file to write (its directory is created).",
)
@click.option(
    "--target",
    default="198.18.1.100:80",
    show_default=True,
    help="VIP[:PORT] the recorded server is mapped to (no port: the recorded one).",
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
    type=click.FloatRange(min=0.001, max=1e6),
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
    warning naming where it stopped. The scenario written always loads in `replay run`.
    """
    from lvsprobe.errors import LvsprobeError, ScenarioError
    from lvsprobe.replay.limits import MAX_RECORDED
    from lvsprobe.replay.pcapimport import read_capture
    from lvsprobe.replay.recorded import add_detail, replayable, to_scenario
    from lvsprobe.replay.scenario import parse_scenario

    host, port = _import_options(target, clients_cidr)
    result = read_capture(capture)
    if result.error:
        click.echo(f"lvsprobe: warning: {result.error}; kept {len(result.flows)} flows", err=True)
    if detail:
        add_detail(capture, result.flows)
    text = to_scenario(result, str(capture), host, port, clients_cidr, speed)
    try:
        scenario = parse_scenario(text, str(output))
    except ScenarioError as exc:
        raise LvsprobeError(
            f"replay import made a scenario that does not load (a bug): {exc}"
        ) from exc
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except FileExistsError as exc:  # a file where a directory of the path should be
        raise LvsprobeError(f"{output}: cannot write: {exc.filename} is not a directory") from exc
    except OSError as exc:
        raise LvsprobeError(f"{output}: cannot write the scenario: {exc.strerror or exc}") from exc
    replayed = len(scenario.recorded)
    kept = len(replayable(result))
    folded, dropped = len(result.flows) - kept, kept - replayed
    click.echo(
        f"{replayed} flows from {result.packets} packets -> {output}"
        + (f" ({folded} FTP data connections or non-TCP/UDP flows folded)" if folded else "")
    )
    if dropped:
        click.echo(
            f"lvsprobe: warning: {dropped} later flows left out: a scenario holds at most "
            f"{MAX_RECORDED:,} (split the capture, e.g. editcap -c, to replay the rest)",
            err=True,
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
@max_conn_table_bytes_option
def attribute(
    run_dir: Path, snapshot_dir: Path | None, backends: tuple[str, ...], max_conn_table_bytes: int
) -> None:
    """Join a finished run's flows with director conn-table snapshots, after the fact.

    Rewrites RUN/flows.parquet's conn_backend* and attribution_agrees columns and the
    summary. Use it when the snapshots were taken by another tool (`cat /proc/net/ip_vs_conn`
    on the director every second, say) rather than by `replay run --conn-table`.
    """
    from lvsprobe.errors import LvsprobeError
    from lvsprobe.replay import flowlog
    from lvsprobe.replay.attribution import attribute as join
    from lvsprobe.replay.attribution import load_snapshots

    names = dict(b.split("=", 1) for b in backends if "=" in b)
    if len(names) != len(backends):
        raise click.BadParameter("expected NAME=ADDRESS[:PORT]", param_hint="--backend")
    target_path = run_dir / flowlog.TARGET_FILE
    if not names and target_path.exists():
        names = json.loads(target_path.read_text()).get("backends", {})
    try:
        table = flowlog.read_flows(run_dir)
    except (OSError, ValueError) as exc:
        raise LvsprobeError(f"{run_dir}: no readable {flowlog.FLOWS_FILE}: {exc}") from exc
    records = [flowlog.FlowRecord(**row) for row in table.to_pylist()]
    for record in records:  # a fresh join replaces the old one
        for name in ("conn_backend_address", "conn_backend", "attribution_agrees"):
            setattr(record, name, None)
    snapshots = load_snapshots(snapshot_dir or run_dir / flowlog.SNAPSHOT_DIR, max_conn_table_bytes)
    matched = join(records, snapshots, names)
    writer = flowlog.FlowLogWriter(run_dir / flowlog.FLOWS_FILE)
    for record in records:
        writer.add(record)
    writer.close()
    old = (
        json.loads((run_dir / flowlog.SUMMARY_FILE).read_text())
        if (run_dir / flowlog.SUMMARY_FILE).exists()
        else {}
    )
    keep = {k: v for k, v in old.items() if k not in flowlog.summarize([])}
    summary = flowlog.summarize(
        records, **{**keep, "conn_table_matched": matched, "snapshots": len(snapshots)}
    )
    flowlog.write_summary(run_dir, summary)
    agree = summary["attribution"]
    click.echo(
        f"{matched} of {len(records)} flows found in {len(snapshots)} snapshots; "
        f"{agree['agree']} agree, {agree['disagree']} disagree"
    )


@replay.command("schema")
def schema() -> None:
    """Print the scenario file schema (every key, with its default)."""
    from lvsprobe.replay.expect import __doc__ as expect_doc
    from lvsprobe.replay.scenario import SCENARIO_HELP

    click.echo(SCENARIO_HELP)
    click.echo("\nexpect: checks `replay run --check` makes after the run (exit 3 if one fails):")
    click.echo((expect_doc or "").split("\n\n", 1)[1].rstrip())
