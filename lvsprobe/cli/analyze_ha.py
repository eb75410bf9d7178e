"""`lvsprobe analyze failover` and `analyze health`: what a director failover or a dead real
server did to the flows, judged against keepalived's own timings (the runs of `lvsprobe lab
drill`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from lvsprobe.cli.analyze_output import RUN_DIR, finish, mark, out_dir
from lvsprobe.errors import AnalysisError

F = TypeVar("F", bound=Callable[..., Any])


def tolerance_option(what: str) -> Callable[[F], F]:
    """--tolerance: how far a measured keepalived timing may be from its prediction."""
    return click.option(
        "--tolerance",
        "tolerance_s",
        type=click.FloatRange(0, 60),
        default=0.5,
        show_default=True,
        help=f"Seconds a {what} may miss its prediction by (a loaded lab: more).",
    )


@click.command(short_help="Connections lost to a director failover, sync on/off.")
@click.argument("run_dirs", type=RUN_DIR, nargs=-1, required=True)
@click.option(
    "--failover-at", type=float, help="Failover time (s since run start); default RUN/events.json."
)
@click.option("--failback-at", type=float, help="Fail-back time (s since run start).")
@click.option(
    "--sync",
    "sync_states",
    multiple=True,
    type=click.Choice(["on", "off", "unknown"]),
    help="Sync daemon state per run, in order (default: events.json's, else target.json's).",
)
@click.option(
    "--heartbeat",
    type=float,
    help="Heartbeat interval of the long-lived flows (s); default the run's scenario, else 0.1.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Default: the first run's analysis/ directory.",
)
@tolerance_option("keepalived timing")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result.")
@click.pass_context
def failover(
    ctx: click.Context,
    run_dirs: tuple[Path, ...],
    failover_at: float | None,
    failback_at: float | None,
    sync_states: tuple[str, ...],
    heartbeat: float | None,
    tolerance_s: float,
    out: Path | None,
    as_json: bool,
) -> None:
    """Classify each long-lived connection broken by a director failover (reset, timeout,
    wrong backend, refused), time new connections' recovery; compare sync on and off runs.

    \b
    A run directory from the lab's failover drill (lvsprobe.lab.drill) holds everything:
      RUN/events.json     failover/fail-back times, sync daemon state and threshold
      RUN/directors/      both directors' connection tables before/after each move
    With the backup's table from before the failover, each connection is judged by whether
    it was really synced; without it, by its estimated inbound packets ("3 50" rule).
    Elsewhere give the times: --failover-at 12.5 --failback-at 30 --sync off.
    A drill with keepalived (`lvsprobe lab drill failover`) also holds its VRRP transitions:
    the takeover is judged against 3 x advert_int + skew (skew alone after a clean stop),
    and the fail-back against preempt or nopreempt.
    """
    from lvsprobe.analyze import inputs
    from lvsprobe.analyze.drillfiles import (
        WHILE_ACTIVE,
        director_table,
        heartbeat_settings,
        read_drill,
    )
    from lvsprobe.analyze.failover import (
        HEARTBEAT_S,
        SYNC_MIN_INBOUND_PKTS,
        analyze_failover,
        expectation,
    )

    runs = []
    for i, run_dir in enumerate(run_dirs):
        run = inputs.load_run(run_dir)
        drill = read_drill(run_dir)
        t_fail = failover_at if failover_at is not None else drill.time_of("failover")
        if t_fail is None:
            raise AnalysisError(
                f"{run_dir}: when was the failover? no events.json entry; pass --failover-at"
            )
        t_back = failback_at if failback_at is not None else drill.time_of("failback")
        state = sync_states[i] if i < len(sync_states) else None
        if state is not None:
            sync = {"on": True, "off": False}.get(state)
        else:
            raw = drill.sync if drill.sync is not None else run.target.get("sync")
            sync = raw if isinstance(raw, bool) else None
        beats = heartbeat_settings(run_dir)
        backup = via_new = None
        if failover_at is None and drill.directors:
            new = drill.new_director() or "lvs2"
            backup = director_table(run_dir, drill, new)
            # what it scheduled itself (LOCAL), not the copies the old director still syncs
            gained = [director_table(run_dir, drill, new, w, "LOCAL") for w in WHILE_ACTIVE]
            if backup is not None and any(t is not None for t in gained):
                via_new = {k for t in gained if t for k in t} - set(backup)
        result = analyze_failover(
            run.flows,
            t_fail,
            t_back,
            run_dir.name,
            sync,
            heartbeat if heartbeat is not None else (beats[0] if beats else HEARTBEAT_S),
            backup=backup,
            sync_threshold=drill.sync_threshold[0]
            if drill.sync_threshold
            else SYNC_MIN_INBOUND_PKTS,
            failover_done_s=drill.done_of("failover") if failover_at is None else None,
            heartbeat_timeout_s=beats[1] if beats else None,
            via_new=via_new,
        )
        result.sysctls = drill.sysctls
        doc = result.to_json()
        doc["expectation"] = expectation(result)
        vrrp = _vrrp(run_dir, float(run.flows["end_s"].max()), tolerance_s)
        if vrrp is not None:
            doc["vrrp"] = vrrp
            passed = [p for p in (doc["expectation"]["passed"], vrrp["passed"]) if p is not None]
            doc["expectation"]["passed"] = all(passed) if passed else None
        runs.append(doc)
    decided = [r["expectation"]["passed"] for r in runs if r["expectation"]["passed"] is not None]
    doc = {"kind": "failover", "runs": runs, "passed": all(decided) if decided else None}
    lines = []
    for r in runs:
        recovery = "n/a" if r["recovery_s"] is None else f"{r['recovery_s']:.2f} s"
        slowest = "n/a" if r["worst_connect_s"] is None else f"{r['worst_connect_s']:.2f} s"
        lines += [
            f"{r['label']}: sync {r['sync']}, {r['broken_total']}/{r['long_lived']} broke "
            f"{r['fates']}, lost at {r['lost_at'] or 'none'}",
            f"  sync evidence ({r['evidence']}): {r['gaps']}",
            f"  new connections: {r['new_total']} after the failover, {r['new_failed']} failed "
            f"{r['new_fates']}; recovered after {recovery} ({r['recovery_evidence']}), "
            f"slowest connect {slowest}",
            f"  [{mark(r['expectation']['passed'])}] {r['expectation']['detail']}",
        ]
        lines += [
            f"  [{mark(c['passed'])}] {c['check']}: {c['detail']}"
            for c in r.get("vrrp", {}).get("checks", [])
        ]
    finish(ctx, "failover", doc, out_dir(run_dirs[0], out), as_json, lines)


def _keepalived_record(run_dir: Path) -> Any:
    """RUN/events.json's keepalived record (None without keepalived)."""
    from lvsprobe.analyze.drillfiles import EVENTS_FILE
    from lvsprobe.analyze.vrrp import read_keepalived_record
    from lvsprobe.errors import ParseError

    path = run_dir / EVENTS_FILE
    if not path.is_file():
        return None
    try:
        return read_keepalived_record(json.loads(path.read_text()), str(path))
    except ValueError as exc:
        raise AnalysisError(f"{path}: not JSON: {exc}") from exc
    except ParseError as exc:
        raise AnalysisError(str(exc)) from exc


def _vrrp(run_dir: Path, end_s: float, tolerance_s: float) -> dict[str, Any] | None:
    from lvsprobe.analyze.vrrp import vrrp_timing

    rec = _keepalived_record(run_dir)
    return None if rec is None or not rec.faults else vrrp_timing(rec, end_s, tolerance_s)


@click.command(short_help="A real server dies: keepalived's checker vs its settings.")
@click.argument("run_dir", type=RUN_DIR)
@tolerance_option("checker timing")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result.")
@click.pass_context
def health(
    ctx: click.Context, run_dir: Path, tolerance_s: float, out: Path | None, as_json: bool
) -> None:
    """How long keepalived's checker took to take a dead (or slow) real server out, against
    delay_loop, retry, delay_before_retry (and connect_timeout when it times out); the flows
    the kernel sent it meanwhile and what they got; weight 0 (inhibit_on_failure) or removal;
    how long it took to come back. Reads a run of `lvsprobe lab drill health`.
    """
    from lvsprobe.analyze import inputs
    from lvsprobe.analyze.health import analyze_health, read_victim_conns, victim_weight

    rec = _keepalived_record(run_dir)
    if rec is None or rec.victim is None:
        raise AnalysisError(
            f"{run_dir}: no health drill record (events.json from `lvsprobe lab drill health`)"
        )
    run = inputs.load_run(run_dir)
    weights: dict[str, Any] = {}
    for when in ("before", "during", "after"):
        try:
            weights[when] = victim_weight(run_dir, rec, when)
        except AnalysisError as exc:
            weights[when] = str(exc)  # the check that needs it says why it could not judge
    doc = analyze_health(run.flows, rec, read_victim_conns(run_dir, rec), weights, tolerance_s)
    doc["run"] = str(run_dir)
    lines = [f"{doc['fault']} on {doc['victim']['name']} at {doc['fault_s']:.2f} s: "
             f"{mark(doc['passed'])}"]  # fmt: skip
    lines += [f"  [{mark(c['passed'])}] {c['check']}: {c['detail']}" for c in doc["checks"]]
    finish(ctx, "health", doc, out_dir(run_dir, out), as_json, lines)
