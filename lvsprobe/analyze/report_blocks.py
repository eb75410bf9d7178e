"""The blocks every report section is built of: a verdict, a table, and plotly figures that
share one inlined copy of plotly.js (the lab and many directors are offline)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any


def verdict_html(passed: bool | None) -> str:
    """PASS, FAIL or info (None: a figure with no verdict), styled by the page's CSS."""
    if passed is None:
        return '<span class="info">info</span>'
    return '<span class="pass">PASS</span>' if passed else '<span class="fail">FAIL</span>'


def _cell(column: str, value: Any) -> str:
    """A table cell; verdicts (True/False/None) read PASS/FAIL/info, like the headings."""
    if column == "verdict" and (value is None or isinstance(value, bool)):
        return verdict_html(value)
    return html.escape(str(value))


def table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """The rows' given columns as a table; nothing for no rows."""
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c, r.get(c, ''))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class Figures:
    """Renders figures; the first carries plotly.js inline, the rest reuse it."""

    def __init__(self) -> None:
        self.count = 0

    def html(self, fig: Any) -> str:
        import plotly.io as pio

        self.count += 1
        return str(
            pio.to_html(
                fig,
                include_plotlyjs=self.count == 1,
                full_html=False,
                div_id=f"plot-{self.count}",
                config={"displaylogo": False, "responsive": True},
            )
        )
