"""`lvsprobe dashboards`: generate the Grafana dashboards, check them, list their panels."""

from __future__ import annotations

import json
from pathlib import Path

import click

from lvsprobe.cli.exit import ExitCode


@click.group("dashboards")
def dashboards() -> None:
    """Grafana dashboards for `lvsprobe export`, generated from Python.

    \b
    Five dashboards: IPVS overview, service drill-down, connection table and
    memory, sync and failover, and a replay run (`replay run --metrics-listen`
    beside the director). Each comes in two forms:
      DIR/provisioning/*.json   for Grafana file provisioning (+ lvsprobe.yaml)
      DIR/import/*.json         for Dashboards > New > Import (asks for the
                                Prometheus data source)
    """


@dashboards.command("generate")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("dashboards"),
    show_default=True,
    metavar="DIR",
    help="Directory to write (or, with --check, to compare against).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 3 if any file in DIR differs from what the code generates "
    "(for CI: the committed JSON must be regenerated after a change).",
)
@click.pass_context
def generate(ctx: click.Context, out_dir: Path, check: bool) -> None:
    """Write the dashboards' JSON and a provisioning example to DIR.

    \b
    Examples:
      lvsprobe dashboards generate                  # refresh ./dashboards
      lvsprobe dashboards generate --check          # CI: fail if stale
      lvsprobe dashboards generate --out /var/lib/grafana/dashboards/lvsprobe
    """
    from lvsprobe.dashboards.render import render_all, stale_files, write_all

    if check:
        stale = stale_files(out_dir)
        for rel in stale:
            click.echo(f"stale: {out_dir / rel}", err=True)
        if stale:
            click.echo(
                f"{len(stale)} of {len(render_all())} files differ; "
                "run `lvsprobe dashboards generate` and commit the result",
                err=True,
            )
            ctx.exit(ExitCode.CHECK_FAILED)
        click.echo(f"{out_dir}: up to date")
        return
    written = write_all(out_dir)
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(
        f"{out_dir}: {len(written)} file(s) written, {len(render_all()) - len(written)} unchanged"
    )


@dashboards.command("list")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document: dashboards, panels, queries."
)
def list_(as_json: bool) -> None:
    """List every dashboard, panel and PromQL query."""
    from lvsprobe.dashboards.promql import panel_queries
    from lvsprobe.dashboards.render import DASHBOARDS, to_dict

    docs = []
    for d in DASHBOARDS:
        data = to_dict(d.build())
        panels = [
            {"id": p["id"], "type": p["type"], "title": p["title"]}
            for p in data.get("panels", [])
            if p["type"] != "row"
        ]
        queries = [
            {"panel": q.panel_id, "ref": q.ref_id, "expr": q.expr} for q in panel_queries(data)
        ]
        docs.append(
            {
                "uid": data["uid"],
                "title": data["title"],
                "file": d.name,
                "panels": panels,
                "queries": queries,
            }
        )
    if as_json:
        click.echo(json.dumps(docs, indent=2))
        return
    for doc in docs:
        click.echo(
            f"{doc['title']}  (uid {doc['uid']}, "
            f"{len(doc['panels'])} panels, {len(doc['queries'])} queries)"
        )
        for p in doc["panels"]:
            click.echo(f"  {p['id']:>3}  {p['type']:<15} {p['title']}")
