"""One section of the HTML report per analysis kind: its charts and tables, from the JSON
document its analyzer wrote (the page in `report` puts them together)."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

from lvsprobe.analyze.report_blocks import Figures, table_html, verdict_html


def _fairness(doc: Mapping[str, Any], figs: Figures) -> str:
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
            f"<h3>{html.escape(svc['service'])} — {verdict_html(svc['passed'])}</h3>"
            f"<p>scheduler {html.escape(svc['scheduler'])}, model from "
            f"{html.escape(svc['model_source'])}; Jain's index "
            f"{'n/a' if jain is None else f'{jain:.5f}'}; max/min "
            f"{'n/a' if ratio is None else f'{ratio:.3f}'}</p>"
            + figs.html(fig)
            + table_html(checks, ["check", "verdict", "detail"])
            + _sequences(svc)
            + table_html(
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


def _persistence(doc: Mapping[str, Any], figs: Figures) -> str:
    parts = []
    for svc in doc.get("services", []):
        checks = [
            {"check": k, "verdict": v["passed"], "detail": v["detail"]}
            for k, v in svc["checks"].items()
        ]
        parts.append(
            f"<h3>{html.escape(svc['service'])} — {verdict_html(svc['passed'])}</h3>"
            f"<p>timeout {svc['timeout_s']} s, {svc['client_nets']} client nets, "
            f"{svc['flows_checked']} flows, {svc['violations_total']} violations</p>"
            + table_html(checks, ["check", "verdict", "detail"])
            + table_html(
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
    _predicted(fig, fault_s, window, "predicted takeover", "blue", 0.12)
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


def _failover(doc: Mapping[str, Any], figs: Figures) -> str:
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
        + table_html(rows, cols)
        + table_html(details, ["run", "verdict", "detail"])
        + ("<h3>VRRP (keepalived)</h3>" if vrrp else "")
        + table_html(vrrp, ["run", "check", "verdict", "detail"])
        + ("<h3>Broken connections</h3>" if broken_rows else "")
        + table_html(broken_rows[:200], broken_cols)
    )


def _health(doc: Mapping[str, Any], figs: Figures) -> str:
    """Flows per half second (ok, failed, sent to the victim) with the fault, the checker's
    verdicts and the predicted removal window."""
    import plotly.graph_objects as go

    tl, ev = doc["timeline"], doc["events"]
    fig = go.Figure()
    for key, name in (("ok", "succeeded"), ("failed", "failed"), ("to_victim", "sent to victim")):
        fig.add_scatter(x=tl["t_s"], y=tl[key], mode="lines", name=name, line_shape="hv")
    fault_s, window = doc["fault_s"], doc["predicted_removal_s"]
    _predicted(fig, fault_s, window, "predicted removal", "orange", 0.2)
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
        + table_html(rows, ["figure", "value"])
        + table_html(checks, ["check", "verdict", "detail"])
        + ("<h3>Flows sent to the victim</h3>" if doc.get("victim_flows") else "")
        + table_html(doc.get("victim_flows", []), ["flow_id", "client", "start_s", "fate"])
    )


def _memory(doc: Mapping[str, Any], figs: Figures) -> str:
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
        f"<p>{verdict_html(doc['passed'])} fit within {doc['tolerance']:.0%} of the slab "
        f"object size ({doc['vs_slab_object']:+.1%})</p>"
        + figs.html(fig)
        + table_html(rows, ["figure", "value"])
    )


def _load(doc: Mapping[str, Any], figs: Figures) -> str:
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
        + table_html(backend_latency_rows(summary), cols)
        + table_html(_thresholds(summary), ["threshold", "verdict", "observed"])
    )


def _thresholds(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    results = (summary.get("thresholds") or {}).get("results", [])
    return [{"threshold": r["threshold"], "verdict": r["passed"], "observed": r["observed"]}
            for r in results]  # fmt: skip


# kind -> its section's HTML, from its analyzer's document.
SECTIONS: dict[str, Callable[[Mapping[str, Any], Figures], str]] = {
    "load": _load,
    "fairness": _fairness,
    "persistence": _persistence,
    "failover": _failover,
    "health": _health,
    "memory": _memory,
}


def _predicted(
    fig: Any, fault_s: float, window: Any, label: str, color: str, opacity: float
) -> None:
    """The window keepalived's settings predict after the fault, shaded."""
    fig.add_vrect(
        x0=fault_s + window[0],
        x1=fault_s + window[1] + 0.001,
        fillcolor=color,
        opacity=opacity,
        line_width=0,
        annotation_text=label,
    )
