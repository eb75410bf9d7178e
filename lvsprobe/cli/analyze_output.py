"""What every `lvsprobe analyze` command shares: its arguments' types, where its report
goes, and how it ends (the report written, the lines or the JSON printed, exit 3 on a failed
check)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from lvsprobe.cli.exit import ExitCode

RUN_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def out_dir(run: Path | None, out: Path | None) -> Path:
    """`--out`, else RUN/analysis."""
    if out is not None:
        return out
    if run is None:
        raise click.UsageError("--out is required when no run directory is given")
    return run / "analysis"


def finish(
    ctx: click.Context, kind: str, doc: dict[str, Any], out: Path, as_json: bool, lines: list[str]
) -> None:
    """Write OUT/<kind>.json and .html, print `lines` (or the JSON), exit 3 if it failed."""
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


def mark(passed: bool | None) -> str:
    """A check's verdict as the text views show it."""
    return {True: "PASS", False: "FAIL", None: "info"}[passed]
