"""`lvsprobe replay`: drive client flows against a director and log every flow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from lvsprobe.cli.options import max_conn_table_bytes_option
from lvsprobe.cli.replay_run import run, summary_


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
      lvsprobe replay summary runs/rr     (also finishes a run that was killed)
      lvsprobe replay export runs/rr --format jsonl > flows.jsonl
      lvsprobe replay import capture.pcap -o recorded.yaml --target 198.18.1.100:80
    """


replay.add_command(run)
replay.add_command(summary_)


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
    summary (a run killed before its end is read from its journal). Use it when the
    snapshots were taken by another tool (`cat /proc/net/ip_vs_conn` on the director every
    second, say) rather than by `replay run --conn-table`.
    """
    from lvsprobe.replay import flowlog, flowsummary
    from lvsprobe.replay.attribution import JOINED_COLUMNS, load_snapshots
    from lvsprobe.replay.attribution import attribute as join
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
            for name in JOINED_COLUMNS:
                setattr(record, name, None)
        snapshots = load_snapshots(
            snapshot_dir or run_dir / flowlog.SNAPSHOT_DIR, max_conn_table_bytes
        )
        matched = join(records, snapshots, names)
        old = flowsummary.read_summary(run_dir)
        flowlog.write_flows(run_dir, records)
        keep = {k: v for k, v in old.items() if k not in flowsummary.summarize([])}
        summary = flowsummary.summarize(
            records, **{**keep, "conn_table_matched": matched, "snapshots": len(snapshots)}
        )
        flowsummary.write_summary(run_dir, summary)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
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
    from lvsprobe.replay.thresholds import __doc__ as thresholds_doc

    click.echo(SCENARIO_HELP)
    click.echo("\nexpect: checks `replay run --check` makes after the run (exit 3 if one fails):")
    click.echo((expect_doc or "").split("\n\n", 1)[1].rstrip())
    click.echo(
        "\nthresholds: checked after every run, and --threshold (exit 3 naming each breach):"
    )
    click.echo((thresholds_doc or "").split("\n\n", 1)[1].rstrip())


@replay.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    default="csv",
    show_default=True,
    help="CSV (one header line) or JSON lines (one object per flow).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: stdout).",
)
def export(run_dir: Path, fmt: str, output: Path | None) -> None:
    """Write RUN's flow log (every flow, every column) as CSV or JSON lines.

    Streamed batch by batch; a run still going or killed is read from its journal.
    """
    import sys

    from lvsprobe.errors import LvsprobeError
    from lvsprobe.replay.export import write_export

    if output is None:
        write_export(run_dir, fmt, sys.stdout.buffer)
        return
    try:
        with output.open("wb") as out:
            rows = write_export(run_dir, fmt, out)
    except OSError as exc:
        raise LvsprobeError(f"{output}: cannot write: {exc.strerror or exc}") from exc
    click.echo(f"{rows} flows -> {output}", err=True)
