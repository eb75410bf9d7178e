"""`lvsprobe report`: one self-contained HTML page from a run's analyses."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the page (default RUN/report.html).",
)
def report(run_dir: Path, output: Path | None) -> None:
    """Render RUN's load over time (from its flow log) and RUN/analysis/*.json (from
    `lvsprobe analyze ...`) as one HTML report.

    The page embeds plotly.js: it opens offline and can be mailed as one file.
    """
    from lvsprobe.analyze.load import load_timeline
    from lvsprobe.analyze.report import ANALYSIS_DIR, load_analyses, render_html
    from lvsprobe.errors import AnalysisError
    from lvsprobe.replay.flowlog import FLOWS_FILE, JOURNAL_FILE

    folder = run_dir / ANALYSIS_DIR if (run_dir / ANALYSIS_DIR).is_dir() else run_dir
    has_flows = any((run_dir / name).is_file() for name in (FLOWS_FILE, JOURNAL_FILE))
    try:
        docs = load_analyses(folder)
    except AnalysisError:
        if not has_flows:
            raise
        docs = {}
    if has_flows:
        docs = {"load": load_timeline(run_dir), **docs}
    page = output or run_dir / "report.html"
    page.write_text(render_html(docs, f"lvsprobe report: {run_dir.name}"))
    click.echo(f"report: {page} ({', '.join(docs)})")
