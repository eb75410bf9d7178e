"""Cardinality by design: what one real server costs, and that the default set is what the
dashboards and alert rules query (README, "Series per real server")."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml
from click.testing import CliRunner

from lvsprobe import sources
from lvsprobe.cli import cli
from lvsprobe.dashboards import promql, render
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.model import Snapshot

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
ALERT_RULES = REPO / "exporters" / "prometheus" / "ipvs-alerts.yml"
# Families of the services collector labelled by real server (the connection table's
# per-state entries and keepalived's checker verdicts are their own collectors' choice).
_SAMPLE = re.compile(r'^(ipvs_backend_\w+)\{[^}]*backend_address="')
_OTHER_COLLECTORS = ("ipvs_backend_conn_entries",)


def _series_per_backend(text: bytes) -> tuple[Counter[str], int]:
    """Samples per real-server family, and the number of real servers (weight samples)."""
    counts: Counter[str] = Counter()
    for line in text.decode().splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) not in _OTHER_COLLECTORS:
            counts[match.group(1)] += 1
    return counts, counts["ipvs_backend_weight"]


def _per_backend(text: bytes) -> int:
    counts, backends = _series_per_backend(text)
    assert backends and all(n == backends for n in counts.values()), counts
    return len(counts)


def _netlink(make: Callable[..., Snapshot], **opts: object) -> bytes:
    return Scraper(ExportOptions(**opts), read=lambda t, **kw: make()).scrape()  # type: ignore[arg-type]


def _procfs(root: Path) -> bytes:
    options = ExportOptions(targets=(sources.Target(procfs_root=root),), netlink=False)
    return Scraper(options).scrape()


def _readme_figures() -> tuple[int, int, int, int, int]:
    """(netlink default, what --collector.backends.extra adds, what --collector.backends.rates
    adds, netlink with both, /proc) as README states."""
    text = README.read_text()
    found = re.search(
        r"\*\*(\d+) series per real server\*\* by default.*?"
        r"`--collector\.backends\.extra` adds the \*\*(\d+)\*\*.*?"
        r"`--collector\.backends\.rates` adds \*\*(\d+)\*\*.*?"
        r"With both, a real server costs \*\*(\d+)\*\*.*?"
        r"from /proc.*?\*\*(\d+)\*\*",
        text,
        re.S,
    )
    assert found, "README: the 'Series per real server' figures are missing"
    default, extra, rates, full, procfs = map(int, found.groups())
    return default, extra, rates, full, procfs


def test_readme_states_what_one_real_server_costs(
    make_snapshot: Callable[..., Snapshot], nat_proc: Path
) -> None:
    default = _per_backend(_netlink(make_snapshot))
    extra = _per_backend(_netlink(make_snapshot, backend_extra=True))
    rates = _per_backend(_netlink(make_snapshot, backend_rates=True))
    full = _per_backend(_netlink(make_snapshot, backend_rates=True, backend_extra=True))
    procfs = _per_backend(_procfs(nat_proc))
    figures = (default, extra - default, rates - default, full, procfs)
    assert figures == _readme_figures()


def test_rates_and_extras_are_behind_their_flags(
    make_snapshot: Callable[..., Snapshot],
) -> None:
    default, _ = _series_per_backend(_netlink(make_snapshot))
    rates, _ = _series_per_backend(_netlink(make_snapshot, backend_rates=True))
    extra, _ = _series_per_backend(_netlink(make_snapshot, backend_extra=True))
    assert not [name for name in default if name.endswith("_per_second")]
    counters = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes")
    assert set(rates) - set(default) == {
        f"ipvs_backend_{name}_per_second" for name in (*counters, "outgoing_bytes")
    }
    assert set(extra) - set(default) == {
        "ipvs_backend_incoming_packets_total",
        "ipvs_backend_outgoing_packets_total",
        "ipvs_backend_lower_threshold_connections",
    }
    # Services keep their rates: a handful of series per service, not per real server.
    assert "ipvs_service_connections_per_second{" in _netlink(make_snapshot).decode()


def _queried_backend_metrics() -> dict[str, str]:
    """Every ipvs_backend_* metric a dashboard panel, variable or alert rule queries: where."""
    found: dict[str, str] = {}
    files = render.render_all()
    for dashboard in render.DASHBOARDS:
        data = yaml.safe_load(files[f"provisioning/{dashboard.name}.json"])
        exprs = [(q.where, q.expr) for q in promql.panel_queries(data)]
        exprs += [
            (f"{data['uid']} ${var['name']}", promql.variable_expr(var["query"])[0])
            for var in data["templating"]["list"]
            if var["type"] == "query"
        ]
        for where, expr in exprs:
            for metric in promql.names(expr).metrics:
                found.setdefault(metric, where)
    rules = yaml.safe_load(ALERT_RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            for metric in promql.names(rule["expr"]).metrics:
                found.setdefault(metric, f"rule {rule.get('alert') or rule.get('record')}")
    return {
        metric: where
        for metric, where in found.items()
        if metric.startswith("ipvs_backend_") and metric not in _OTHER_COLLECTORS
    }


def test_the_default_series_are_what_dashboards_and_alerts_query(
    make_snapshot: Callable[..., Snapshot],
) -> None:
    """Both ways: every queried family is there by default, and nothing else is."""
    queried = _queried_backend_metrics()
    assert "ipvs_backend_weight" in queried  # the walk found the queries
    default, _ = _series_per_backend(_netlink(make_snapshot))
    missing = {metric: where for metric, where in queried.items() if metric not in default}
    assert not missing, f"queried but not exported by default: {missing}"
    assert set(default) == set(queried), (
        f"exported by default, never queried: {set(default) - set(queried)}"
    )


def test_export_help_teaches_the_flag() -> None:
    result = CliRunner().invoke(cli, ["export", "--help"], terminal_width=200)
    assert "--collector.backends.rates" in result.output
    assert "--collector.backends.extra" in result.output
    assert "rate()" in result.output
