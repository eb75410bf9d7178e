"""Self-contained HTML reports from the analyzers' JSON: plotly charts with the JS inlined
(the lab and many directors are offline), tables of checks and violations."""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return '<span class="info">info</span>'
    return '<span class="pass">PASS</span>' if passed else '<span class="fail">FAIL</span>'


def _cell(column: str, value: Any) -> str:
    """A table cell; verdicts (True/False/None) read PASS/FAIL/info, like the headings."""
    if column == "verdict" and (value is None or isinstance(value, bool)):
        return _verdict(value)
    return html.escape(str(value))


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c, r.get(c, ''))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


class _Figures:
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


def _fairness(doc: Mapping[str, Any], figs: _Figures) -> str:
    import plotly.graph_objects as go

    parts = []
    for svc in doc.get("services", []):
        fig = go.Figure()
        fig.add_bar(name="expected", x=svc["backends"], y=svc["expected_share"])
        fig.add_bar(name="observed", x=svc["backends"], y=svc["observed_share"])
        fig.update_layout(
            title=f"{svc['service']} ({svc['scheduler']}): share per backend",
            barmode="group",
            yaxis_title="share of connections",
            height=380,
        )
        checks = [
            {"check": c["name"], "verdict": c["passed"], "detail": c["detail"]}
            for c in svc["checks"]
        ]
        jain = svc.get("jain_index")
        ratio = svc.get("max_min_ratio")
        parts.append(
            f"<h3>{html.escape(svc['service'])} — {_verdict(svc['passed'])}</h3>"
            f"<p>scheduler {html.escape(svc['scheduler'])}, model from "
            f"{html.escape(svc['model_source'])}; Jain's index "
            f"{'n/a' if jain is None else f'{jain:.5f}'}; max/min "
            f"{'n/a' if ratio is None else f'{ratio:.3f}'}</p>"
            + figs.html(fig)
            + _table(checks, ["check", "verdict", "detail"])
            + _sequences(svc)
            + _table(
                svc.get("mismatches", []), ["position", "flow_id", "client", "observed", "expected"]
            )
        )
    return "".join(parts)


def _sequences(svc: Mapping[str, Any]) -> str:
    """The first picks, observed over predicted; differences in bold."""
    observed = svc.get("observed_sequence") or []
    predicted = svc.get("predicted_sequence") or []
    if not observed:
        return ""
    cells_o = []
    cells_p = []
    for k, o in enumerate(observed):
        p = predicted[k] if k < len(predicted) else None
        style = ' style="background:#fdd"' if p != o else ""
        cells_o.append(f"<td{style}>{html.escape(str(o))}</td>")
        cells_p.append(f"<td{style}>{html.escape(str(p))}</td>")
    return (
        "<details><summary>pick sequence (observed / model)</summary>"
        f"<div style='overflow-x:auto'><table><tr><th>observed</th>{''.join(cells_o)}</tr>"
        f"<tr><th>model</th>{''.join(cells_p)}</tr></table></div></details>"
    )


def _persistence(doc: Mapping[str, Any], figs: _Figures) -> str:
    parts = []
    for svc in doc.get("services", []):
        checks = [
            {"check": k, "verdict": v["passed"], "detail": v["detail"]}
            for k, v in svc["checks"].items()
        ]
        parts.append(
            f"<h3>{html.escape(svc['service'])} — {_verdict(svc['passed'])}</h3>"
            f"<p>timeout {svc['timeout_s']} s, {svc['client_nets']} client nets, "
            f"{svc['flows_checked']} flows, {svc['violations_total']} violations</p>"
            + _table(checks, ["check", "verdict", "detail"])
            + _table(
                svc["violations"],
                ["check", "client_net", "flow_id", "start_s", "backend", "expected", "reason"],
            )
        )
    return "".join(parts)


def _vrrp_marks(fig: Any, run: Mapping[str, Any]) -> None:
    """keepalived's takeover: the predicted window shaded, the measured moment marked."""
    vrrp = run.get("vrrp") or {}
    fault_s, window = vrrp.get("fault_s"), vrrp.get("predicted_s")
    if fault_s is None or not window:
        return
    fig.add_vrect(
        x0=fault_s + window[0],
        x1=fault_s + window[1] + 0.001,
        fillcolor="blue",
        opacity=0.12,
        line_width=0,
        annotation_text="predicted takeover",
    )
    if vrrp.get("takeover_s") is not None:
        fig.add_vline(
            x=fault_s + vrrp["takeover_s"],
            line_color="blue",
            annotation_text=f"{vrrp['backup']} MASTER",
            annotation_position="top left",
        )


def _failover_marks(fig: Any, run: Mapping[str, Any]) -> None:
    """Failover and fail-back lines, the move itself shaded, the recovery of new connections,
    and each broken long-lived connection where it broke (by class)."""
    label = run["label"]
    for name, t in (("failover", run["failover_s"]), ("fail-back", run["failback_s"])):
        if t is not None:
            fig.add_vline(x=t, line_dash="dash", annotation_text=f"{name} ({label})")
    done = run.get("failover_done_s")
    if done is not None and done > run["failover_s"]:
        fig.add_vrect(x0=run["failover_s"], x1=done, fillcolor="orange", opacity=0.2, line_width=0)
    if run.get("recovery_s") is not None:
        fig.add_vline(
            x=run["failover_s"] + run["recovery_s"],
            line_dash="dot",
            line_color="green",
            annotation_text=f"new conns recovered ({label})",
            annotation_position="bottom right",
        )
    by_fate: dict[str, list[float]] = {}
    for c in run.get("broken", []):
        when = c.get("broke_at_s")
        by_fate.setdefault(c["fate"], []).append(c["end_s"] if when is None else when)
    for fate, xs in sorted(by_fate.items()):
        fig.add_scatter(
            x=xs, y=[0] * len(xs), mode="markers", name=f"broken: {fate} ({label})",
            marker={"symbol": "x", "size": 9},
        )  # fmt: skip


def _failover(doc: Mapping[str, Any], figs: _Figures) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    rows = []
    broken_rows = []
    for run in doc.get("runs", []):
        tl = run["timeline"]
        fig.add_scatter(x=tl["t_s"], y=tl["open"], mode="lines", name=run["label"])
        _failover_marks(fig, run)
        _vrrp_marks(fig, run)
        recovery = run["recovery_s"]
        worst = run.get("worst_connect_s")
        rows.append(
            {
                "run": run["label"],
                "sync": run["sync"],
                "long-lived": run["long_lived"],
                "broken": run["broken_total"],
                "loss": f"{run['loss_ratio']:.1%}",
                "fates": run["fates"],
                "lost at": run.get("lost_at"),
                "sync evidence": f"{run['gaps']} ({run.get('evidence', 'estimate')})",
                "time to recover": "n/a"
                if recovery is None
                else f"{recovery:.2f} s ({run.get('recovery_evidence', 'flow-log')})",
                "new conns": f"{run.get('new_total', '?')} ({run['new_failed']} failed; "
                f"slowest connect {'n/a' if worst is None else f'{worst:.2f} s'})",
                "verdict": run.get("expectation", {}).get("passed"),
            }
        )
        broken_rows += [dict(c, run=run["label"]) for c in run.get("broken", [])]
    fig.update_layout(
        title="Open connections over time",
        xaxis_title="seconds since start",
        yaxis_title="open connections",
        height=420,
    )
    details = [
        {"run": r["label"], "verdict": r.get("expectation", {}).get("passed"),
         "detail": r.get("expectation", {}).get("detail", "")}
        for r in doc.get("runs", [])
    ]  # fmt: skip
    cols = ["run", "sync", "long-lived", "broken", "loss", "fates", "lost at", "sync evidence",
            "time to recover", "new conns", "verdict"]  # fmt: skip
    broken_cols = ["run", "flow_id", "client", "fate", "lost_at", "sync", "broke_at_s", "detail"]
    vrrp = [
        {"run": r["label"], "check": c["check"], "verdict": c["passed"], "detail": c["detail"]}
        for r in doc.get("runs", [])
        for c in r.get("vrrp", {}).get("checks", [])
    ]
    return (
        figs.html(fig)
        + _table(rows, cols)
        + _table(details, ["run", "verdict", "detail"])
        + ("<h3>VRRP (keepalived)</h3>" if vrrp else "")
        + _table(vrrp, ["run", "check", "verdict", "detail"])
        + ("<h3>Broken connections</h3>" if broken_rows else "")
        + _table(broken_rows[:200], broken_cols)
    )


def _health(doc: Mapping[str, Any], figs: _Figures) -> str:
    """Flows per half second (ok, failed, sent to the victim) with the fault, the checker's
    verdicts and the predicted removal window."""
    import plotly.graph_objects as go

    tl, ev = doc["timeline"], doc["events"]
    fig = go.Figure()
    for key, name in (("ok", "succeeded"), ("failed", "failed"), ("to_victim", "sent to victim")):
        fig.add_scatter(x=tl["t_s"], y=tl[key], mode="lines", name=name, line_shape="hv")
    fault_s, window = doc["fault_s"], doc["predicted_removal_s"]
    fig.add_vrect(
        x0=fault_s + window[0],
        x1=fault_s + window[1] + 0.001,
        fillcolor="orange",
        opacity=0.2,
        line_width=0,
        annotation_text="predicted removal",
    )
    marks = (
        ("fault", fault_s, "red"),
        ("checker: down", ev.get("down_s"), "black"),
        ("recovered", ev.get("undo_s"), "green"),
        ("checker: up", ev.get("up_s"), "black"),
    )
    for name, t, colour in marks:
        if t is not None:
            fig.add_vline(x=t, line_dash="dash", line_color=colour, annotation_text=name)
    fig.update_layout(
        title=f"{doc['fault']} on {doc['victim']['name']}: flows started per 0.5 s",
        xaxis_title="seconds since start",
        yaxis_title="flows",
        height=420,
    )
    win = doc["window"]
    rows = [
        {"figure": "removal after the fault", "value": doc.get("removal_s", "never")},
        {"figure": "predicted removal", "value": f"{window[0]:.3f}..{window[1]:.3f} s"},
        {"figure": "flows in the window", "value": f"{win['flows']} {win['fates']}"},
        {
            "figure": "sent to the victim in it",
            "value": f"{win['to_victim']} {win['victim_fates']}",
        },
        {"figure": "back up after recovery", "value": doc.get("readd_s", "never")},
        {"figure": "inhibit_on_failure", "value": doc["inhibit_on_failure"]},
    ]
    checks = [
        {"check": c["check"], "verdict": c["passed"], "detail": c["detail"]} for c in doc["checks"]
    ]
    return (
        figs.html(fig)
        + _table(rows, ["figure", "value"])
        + _table(checks, ["check", "verdict", "detail"])
        + ("<h3>Flows sent to the victim</h3>" if doc.get("victim_flows") else "")
        + _table(doc.get("victim_flows", []), ["flow_id", "client", "start_s", "fate"])
    )


def _memory(doc: Mapping[str, Any], figs: _Figures) -> str:
    import plotly.graph_objects as go

    xs = [s["entries"] + s["templates"] for s in doc["samples"]]
    ys = [s["slab_bytes"] for s in doc["samples"]]
    fig = go.Figure()
    fig.add_scatter(x=xs, y=ys, mode="markers", name="slab bytes")
    lo, hi = min(xs), max(xs)
    b, a = doc["fit_bytes_per_entry"], doc["fit_intercept"]
    fig.add_scatter(
        x=[lo, hi], y=[a + b * lo, a + b * hi], mode="lines", name=f"fit: {b:.1f} B/entry"
    )
    fig.update_layout(
        title="ip_vs_conn slab memory against entries",
        height=420,
        xaxis_title="entries (connections + templates)",
        yaxis_title="bytes",
    )
    rows: list[dict[str, Any]] = [
        {"figure": "fit bytes/entry", "value": f"{b:.1f} (r² {doc['fit_r2']:.4f})"},
        {"figure": "sizeof(struct ip_vs_conn)", "value": doc.get("object_size")},
        {"figure": "slab object", "value": doc["slab_object_size"]},
        {"figure": "slab bytes per entry (page/objs)", "value": f"{doc['per_entry_slab']:.1f}"},
        {"figure": "LVS paper", "value": f"{doc['paper_bytes']} ({doc['vs_paper']:.2f}x)"},
        {"figure": "hash buckets", "value": f"{doc.get('buckets')} ({doc.get('bucket_bytes')} B)"},
    ]
    rows += [
        {"figure": f"projection {int(n):,} conns", "value": f"{v / 2**20:.1f} MiB"}
        for n, v in doc["projections"].items()
    ]
    return (
        f"<p>{_verdict(doc['passed'])} fit within {doc['tolerance']:.0%} of the slab "
        f"object size ({doc['vs_slab_object']:+.1%})</p>"
        + figs.html(fig)
        + _table(rows, ["figure", "value"])
    )


def _load(doc: Mapping[str, Any], figs: _Figures) -> str:
    """Rate, errors, latency and shares over the run; latency per backend."""
    import plotly.graph_objects as go

    from lvsprobe.analyze.load import backend_latency_rows

    t = doc["t_s"]
    rate = go.Figure()
    rate.add_scatter(x=t, y=doc.get("planned_per_s", []), mode="lines", name="planned",
                     line={"dash": "dash"})  # fmt: skip
    rate.add_scatter(x=t, y=doc.get("achieved_per_s", []), mode="lines", name="achieved")
    for outcome, ys in doc.get("errors_per_s", {}).items():
        rate.add_bar(x=t, y=ys, name=f"errors: {outcome}")
    rate.update_layout(title="Flows per second: planned vs achieved, and errors", height=380,
                       xaxis_title="seconds since start", yaxis_title="flows/s")  # fmt: skip
    latency = go.Figure()
    for timing, by_q in doc.get("latency_s", {}).items():
        for q, ys in by_q.items():
            dash = None if timing == "corrected" else "dot"
            latency.add_scatter(x=t, y=ys, mode="lines", name=f"{q} {timing}",
                                line={"dash": dash})  # fmt: skip
    latency.update_layout(
        title="Total latency over time (corrected: from the scheduled start)",
        height=380, xaxis_title="seconds since start", yaxis_title="seconds",
    )  # fmt: skip
    shares = go.Figure()
    for name, ys in doc.get("shares", {}).items():
        shares.add_scatter(x=t, y=ys, mode="lines", name=name, stackgroup="shares")
    shares.update_layout(
        title="Backend shares over time", height=340,
        xaxis_title="seconds since start", yaxis_title="share of flows ended",
    )  # fmt: skip
    summary = doc.get("summary", {})
    rates = summary.get("rates") or {}
    cols = ["backend", "timing", "flows", "p50", "p90", "p99", "p99.9", "max", "mean"]
    return (
        f"<p>{summary.get('flows', 0)} flows, {summary.get('errors', 0)} not ok; planned "
        f"{rates.get('planned_per_s')} flows/s, achieved {rates.get('achieved_per_s')} "
        f"(bins of {doc['bin_s']:g} s)</p>"
        + "".join(figs.html(f) for f in (rate, latency, shares) if t)
        + "<h3>Total latency per backend (ms)</h3>"
        + _table(backend_latency_rows(summary), cols)
        + _table(_thresholds(summary), ["threshold", "verdict", "observed"])
    )


def _thresholds(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    results = (summary.get("thresholds") or {}).get("results", [])
    return [{"threshold": r["threshold"], "verdict": r["passed"], "observed": r["observed"]}
            for r in results]  # fmt: skip


_RENDER = {
    "load": _load,
    "fairness": _fairness,
    "persistence": _persistence,
    "failover": _failover,
    "health": _health,
    "memory": _memory,
}


def render_html(docs: Mapping[str, Mapping[str, Any]], title: str) -> str:
    """One self-contained HTML page for the given analyses (kind -> JSON document)."""
    figs = _Figures()
    sections = []
    for kind in KINDS:
        if kind in docs:
            doc = docs[kind]
            sections.append(
                f"<h2>{kind.capitalize()} — {_verdict(doc.get('passed'))}</h2>"
                + _RENDER[kind](doc, figs)
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
