"""`lvsprobe analyze`: check what a replay run shows against the kernel's own algorithms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import AnalysisError

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def _out(run: Path | None, out: Path | None) -> Path:
    if out is not None:
        return out
    if run is None:
        raise click.UsageError("--out is required when no run directory is given")
    return run / "analysis"


def _finish(
    ctx: click.Context, kind: str, doc: dict[str, Any], out: Path, as_json: bool, lines: list[str]
) -> None:
    from lvsprobe.analyze.report import write_analysis

    page = write_analysis(out, kind, doc, f"lvsprobe {kind} analysis")
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        for line in lines:
            click.echo(line)
        click.echo(f"report: {page}")
    if doc.get("passed") is False:
        ctx.exit(ExitCode.CHECK_FAILED)


def _mark(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "info"}[passed]


@click.group()
def analyze() -> None:
    """Check a replay run against what the kernel must do.

    \b
    Each command writes RUN/analysis/<kind>.json and a self-contained <kind>.html (charts
    inline, works offline); exit status 3 when a completed check fails.
    """


@analyze.command(short_help="Scheduler splits vs the kernel's algorithms.")
@click.argument("run_dir", type=RUN_DIR)
@click.option("--scheduler", help="Override the scheduler (default: the director snapshot's).")
@click.option("--weights", help="NAME=W,... in KERNEL list order (reverse of ipvsadm -a order).")
@click.option("--snapshot", type=FILE, help="`lvsprobe status --json` of the director.")
@click.option(
    "--flag",
    "flags",
    multiple=True,
    type=click.Choice(["sh-port", "sh-fallback", "mh-port", "mh-fallback"]),
    help="Scheduler flags of the service, if no snapshot gives them.",
)
@click.option(
    "--source",
    type=click.Choice(["flows", "conn-table", "counters"]),
    default="flows",
    show_default=True,
    help="Flow log, the run's connection-table snapshots, or counter deltas.",
)
@click.option("--before", type=FILE, help="Snapshot JSON before the run (--source counters).")
@click.option("--after", type=FILE, help="Snapshot JSON after the run (--source counters).")
@click.option("--service", help="Only this service, ADDRESS:PORT as the flow log names it.")
@click.option(
    "--alpha", type=float, default=0.001, show_default=True, help="Chi-square rejection level."
)
@click.option(
    "--tie-window",
    type=float,
    default=0.0005,
    show_default=True,
    help="Flows started closer than this (s) may reach the director in any order.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write JSON and HTML (default RUN/analysis).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result.")
@click.pass_context
def fairness(
    ctx: click.Context,
    run_dir: Path,
    scheduler: str | None,
    weights: str | None,
    snapshot: Path | None,
    flags: tuple[str, ...],
    source: str,
    before: Path | None,
    after: Path | None,
    service: str | None,
    alpha: float,
    tie_window: float,
    out: Path | None,
    as_json: bool,
) -> None:
    """Did each service's scheduler split connections as its algorithm must?

    \b
    rr, wrr: the pick sequence against the kernel's (wrr 4,3,2 -> AABABCABC...).
    lc, wlc, sed, nq, fo, ovf: each pick against the model, given the open connections.
    sh, mh, dh: each client against the backend the kernel's hash gives it, and
    chi-square against the hash table's real shares; Jain's index and max/min for all.

    \b
    The scheduler, weights and KERNEL list order come from the director:
      lvsprobe status --json > RUN/director.json     (before the run), or --snapshot,
      or --scheduler wrr --weights rs1=4,rs2=3,rs3=2 (list order = reverse add order).
    """
    from lvsprobe.analyze import fairness as fair
    from lvsprobe.analyze import inputs
    from lvsprobe.analyze import sources as alt

    run = inputs.load_run(run_dir) if source == "flows" else _bare_run(run_dir)
    model = inputs.service_model(
        run, scheduler, inputs.parse_weights(weights) if weights else None, snapshot, flags
    )
    names = {b.address: b.name for b in model.backends}
    results = []
    if source == "counters":
        if before is None or after is None:
            raise click.UsageError("--source counters needs --before and --after")
        key = (str(run.target.get("address")), int(run.target.get("port") or 0))
        counts = alt.counter_deltas(before, after, key, names)
        results.append(fair.analyze_counts(counts, model, run.service_label(), alpha))
    else:
        flows = run.flows
        if source == "conn-table":
            flows = alt.flows_from_conns(inputs.read_conn_snapshots(run_dir), names)
        groups = flows.groupby(["protocol", "server_address", "server_port"], sort=True)
        labels = {f"{p.upper()} {a}:{port}": g for (p, a, port), g in groups}
        if service is not None:
            match = [k for k in labels if k.split(" ", 1)[1] == service]
            if not match:
                raise AnalysisError(
                    f"the run never touched service {service} (it has {', '.join(labels)})"
                )
            labels = {k: labels[k] for k in match}
        for label, group in labels.items():
            if source == "conn-table" and model.scheduler not in ("sh", "mh", "dh"):
                counts = group["backend"].value_counts().to_dict()
                results.append(fair.analyze_counts(counts, model, label, alpha))
            else:
                results.append(fair.analyze_fairness(group, model, label, tie_window, 120.0, alpha))
    docs = [r.to_json() for r in results]
    doc = {
        "kind": "fairness",
        "run": str(run_dir),
        "source": source,
        "services": docs,
        "passed": all(d["passed"] for d in docs),
    }
    lines = []
    for r in results:
        lines.append(f"{r.service}  {r.scheduler}  {_mark(r.passed)}")
        for name, n, e in zip(r.backends, r.counts, r.expected_share, strict=True):
            lines.append(f"  {name:<16} {n:>7}  expected share {e:.3f}")
        lines += [f"  [{_mark(c.passed)}] {c.name}: {c.detail}" for c in r.checks]
    _finish(ctx, "fairness", doc, _out(run_dir, out), as_json, lines)


def _bare_run(run_dir: Path) -> Any:
    """A run without a flow log (connection-table or counter sources)."""
    import pandas as pd

    from lvsprobe.analyze import inputs

    try:
        return inputs.load_run(run_dir)
    except AnalysisError:
        target = run_dir / inputs.TARGET_FILE
        doc = json.loads(target.read_text()) if target.is_file() else {}
        return inputs.Run(path=run_dir, flows=pd.DataFrame(), target=doc)


@analyze.command(short_help="Sticky clients, FTP data, TLS resumption.")
@click.argument("run_dir", type=RUN_DIR)
@click.option("--timeout", type=float, help="Persistence timeout (s); default the service's -p.")
@click.option("--prefix", type=int, help="Client netmask as a prefix length (-M).")
@click.option("--snapshot", type=FILE, help="`lvsprobe status --json` of the director.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result.")
@click.pass_context
def persistence(
    ctx: click.Context,
    run_dir: Path,
    timeout: float | None,
    prefix: int | None,
    snapshot: Path | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Did every client (net) stay on one backend, FTP data follow its control connection,
    and resumed TLS sessions stay on their issuing server?"""
    from lvsprobe.analyze import inputs
    from lvsprobe.analyze.persistence import analyze_persistence

    run = inputs.load_run(run_dir)
    try:
        model = inputs.service_model(run, snapshot=snapshot)
    except AnalysisError as exc:
        # Stickiness does not depend on the scheduler or the weights: what is missing here is
        # the service's -p, which --snapshot gives (and --timeout replaces).
        if timeout is None:
            where = snapshot or " or ".join(str(run_dir / n) for n in inputs.DIRECTOR_FILES)
            raise AnalysisError(
                f"the service's persistence timeout (-p) is unknown: no director snapshot "
                f"describes it ({where}); pass --snapshot FILE (`lvsprobe status --json` "
                "of the director) or --timeout SECONDS"
            ) from exc
        model = inputs.ServiceModel("rr", (), source="flags")
    data: list[tuple[str, int, str]] = []
    if (run_dir / inputs.SNAPSHOT_DIR).is_dir():
        names = {b.address: b.name for b in model.backends}
        for _, conns in inputs.read_conn_snapshots(run_dir):
            data += [
                (
                    str(c.client_address),
                    c.client_port,
                    names.get(str(c.dest_address), str(c.dest_address)),
                )
                for c in conns
            ]
    result = analyze_persistence(run.flows, model, run.service_label(), timeout, prefix, data)
    doc = {
        "kind": "persistence",
        "run": str(run_dir),
        "services": [result.to_json()],
        "passed": result.passed,
    }
    lines = [f"{result.service}  timeout {result.timeout_s:g} s  {_mark(result.passed)}"]
    lines += [f"  [{_mark(c['passed'])}] {k}: {c['detail']}" for k, c in result.checks.items()]
    lines += [
        f"  flow {v.flow_id} {v.client_net}: {v.reason} (on {v.backend}, expected {v.expected})"
        for v in result.violations[:20]
    ]
    _finish(ctx, "persistence", doc, _out(run_dir, out), as_json, lines)


@analyze.command(short_help="Connections lost to a director failover, sync on/off.")
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
@click.option(
    "--tolerance",
    "tolerance_s",
    type=click.FloatRange(0, 60),
    default=0.5,
    show_default=True,
    help="Seconds a keepalived timing may miss its prediction by (a loaded lab: more).",
)
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
    from lvsprobe.analyze.failover import (
        HEARTBEAT_S,
        SYNC_MIN_INBOUND_PKTS,
        WHILE_ACTIVE,
        analyze_failover,
        director_table,
        expectation,
        heartbeat_settings,
        read_drill,
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
            f"  [{_mark(r['expectation']['passed'])}] {r['expectation']['detail']}",
        ]
        lines += [
            f"  [{_mark(c['passed'])}] {c['check']}: {c['detail']}"
            for c in r.get("vrrp", {}).get("checks", [])
        ]
    _finish(ctx, "failover", doc, _out(run_dirs[0], out), as_json, lines)


def _keepalived_record(run_dir: Path) -> Any:
    """RUN/events.json's keepalived record (None without keepalived)."""
    from lvsprobe.analyze.failover import EVENTS_FILE
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


@analyze.command(short_help="A real server dies: keepalived's checker vs its settings.")
@click.argument("run_dir", type=RUN_DIR)
@click.option(
    "--tolerance",
    "tolerance_s",
    type=click.FloatRange(0, 60),
    default=0.5,
    show_default=True,
    help="Seconds a checker timing may miss its prediction by (a loaded lab: more).",
)
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
             f"{_mark(doc['passed'])}"]  # fmt: skip
    lines += [f"  [{_mark(c['passed'])}] {c['check']}: {c['detail']}" for c in doc["checks"]]
    _finish(ctx, "health", doc, _out(run_dir, out), as_json, lines)


@analyze.command(short_help="Bytes per connection entry, fit and projection.")
@click.argument("run_dir", type=RUN_DIR, required=False)
@click.option("--samples", type=FILE, help="Memory samples JSON (default RUN/memory-samples.json).")
@click.option(
    "--project",
    "project",
    multiple=True,
    type=int,
    help="Project memory for N connections (repeatable; default 1M and 10M).",
)
@click.option(
    "--sample",
    "take_sample",
    is_flag=True,
    help="Read this host's ip_vs_conn slab and entry count now and append them to the "
    "samples file (root; repeat during a fill run), instead of analyzing.",
)
@click.option("--netns", help="With --sample: count the entries of this network namespace.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the JSON result.")
@click.pass_context
def memory(
    ctx: click.Context,
    run_dir: Path | None,
    samples: Path | None,
    project: tuple[int, ...],
    take_sample: bool,
    netns: str | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Bytes per connection entry: slab figures, a fit over a fill run, projections, and
    how they compare with the LVS paper's 128 bytes.

    \b
    A fill run on a director:
      lvsprobe analyze memory --sample RUN/      before, then during the fill, repeatedly
      lvsprobe analyze memory RUN/               fit and report
    Boot with slab_nomerge so ip_vs_conn keeps its own slab (else the figures are refused).
    """
    from lvsprobe.analyze.memory import (
        SAMPLES_FILE,
        analyze_memory,
        append_sample,
        read_samples,
        sample_from_snapshot,
    )

    path = samples or (run_dir / SAMPLES_FILE if run_dir else None)
    if take_sample:
        from lvsprobe.sources import Target, read_snapshot

        if path is None:
            raise click.UsageError("--sample needs RUN/ or --samples FILE")
        snap = read_snapshot(Target(netns=netns), conns="summary")
        count = append_sample(path, sample_from_snapshot(snap))
        click.echo(f"{path}: {count} samples")
        return
    if path is None or not path.is_file():
        raise AnalysisError(
            f"no memory samples: {path or 'give RUN/ or --samples FILE'} (a fill run records them)"
        )
    result = analyze_memory(read_samples(path), project or (1_000_000, 10_000_000))
    doc = dict(result.to_json(), kind="memory")
    lines = [
        f"fit: {result.fit_bytes_per_entry:.1f} B/entry (r² {result.fit_r2:.4f}) over "
        f"{len(result.samples)} samples; slab object {result.slab_object_size} B, "
        f"{result.per_entry_slab:.1f} B/entry with page overhead; struct {result.object_size} B; "
        f"paper {128} B",
        f"[{_mark(result.passed)}] fit {result.vs_slab_object:+.1%} from the slab object size",
    ] + [f"projection {n:,} conns: {v / 2**20:.1f} MiB" for n, v in result.projections.items()]
    _finish(ctx, "memory", doc, _out(run_dir or path.parent, out), as_json, lines)
