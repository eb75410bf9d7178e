"""Self-contained HTML reports from the analyzers' JSON: one page of their sections (charts
with plotly.js inlined, tables of checks and violations), and each analysis's files."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lvsprobe.analyze.report_blocks import Figures, verdict_html
from lvsprobe.analyze.report_sections import SECTIONS
from lvsprobe.errors import AnalysisError

ANALYSIS_DIR = "analysis"
KINDS = ("load", "fairness", "persistence", "failover", "health", "memory")

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:left;font-size:.9em}.pass{color:#176f2c;font-weight:bold}.fail{color:#b00020;
font-weight:bold}.info{color:#555}
"""


def render_html(docs: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """One self-contained HTML page for the given analyses (kind -> JSON document)."""
    figs = Figures()
    sections = []
    for kind in KINDS:
        if kind in docs:
            doc = docs[kind]
            sections.append(
                f"<h2>{kind.capitalize()} — {verdict_html(doc.get('passed'))}</h2>"
                + SECTIONS[kind](doc, figs)
            )
    if not sections:
        raise AnalysisError("nothing to report: no analysis results")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )


def write_analysis(out_dir: Path, kind: str, doc: Mapping[str, Any], title: str) -> Path:
    """OUT/kind.json and OUT/kind.html; returns the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{kind}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    page = out_dir / f"{kind}.html"
    page.write_text(render_html({kind: doc}, title))
    return page


def load_analyses(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Every OUT/<kind>.json an analyzer wrote."""
    docs: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        path = out_dir / f"{kind}.json"
        if path.is_file():
            try:
                docs[kind] = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise AnalysisError(f"{path}: unreadable analysis result: {exc}") from exc
    if not docs:
        raise AnalysisError(
            f"{out_dir}: no analysis results ({', '.join(k + '.json' for k in KINDS)}); "
            "run `lvsprobe analyze fairness|persistence|failover|health|memory` first"
        )
    return docs
