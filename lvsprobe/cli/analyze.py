"""`lvsprobe analyze`: check what a replay run shows against the kernel's own algorithms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lvsprobe.cli.analyze_ha import failover, health
from lvsprobe.cli.analyze_output import FILE, RUN_DIR, finish, mark, out_dir
from lvsprobe.errors import AnalysisError


@click.group()
def analyze() -> None:
    """Check a replay run against what the kernel must do.

    \b
    Each command writes RUN/analysis/<kind>.json and a self-contained <kind>.html (charts
    inline, works offline); exit status 3 when a completed check fails.
    """


analyze.add_command(failover)
analyze.add_command(health)


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
        lines.append(f"{r.service}  {r.scheduler}  {mark(r.passed)}")
        for name, n, e in zip(r.backends, r.counts, r.expected_share, strict=True):
            lines.append(f"  {name:<16} {n:>7}  expected share {e:.3f}")
        lines += [f"  [{mark(c.passed)}] {c.name}: {c.detail}" for c in r.checks]
    finish(ctx, "fairness", doc, out_dir(run_dir, out), as_json, lines)


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
    lines = [f"{result.service}  timeout {result.timeout_s:g} s  {mark(result.passed)}"]
    lines += [f"  [{mark(c['passed'])}] {k}: {c['detail']}" for k, c in result.checks.items()]
    lines += [
        f"  flow {v.flow_id} {v.client_net}: {v.reason} (on {v.backend}, expected {v.expected})"
        for v in result.violations[:20]
    ]
    finish(ctx, "persistence", doc, out_dir(run_dir, out), as_json, lines)


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
        f"[{mark(result.passed)}] fit {result.vs_slab_object:+.1%} from the slab object size",
    ] + [f"projection {n:,} conns: {v / 2**20:.1f} MiB" for n, v in result.projections.items()]
    finish(ctx, "memory", doc, out_dir(run_dir or path.parent, out), as_json, lines)
