"""Send every dashboard query to a real Prometheus, variables substituted as Grafana would.

A panel query passes when Prometheus parses it and returns at least one series. Variables get
real values: the directors Prometheus scrapes (a multi-value selection, regex-escaped), every
namespace, and a service chosen from what the `service` variable's own query returns.

The keepalived queries need a lab that runs keepalived (tests/lab/test_keepalived.py proves
them); the rest need the IPVS cluster of tests/dashboards/test_lab_proof.py. `needs_keepalived`
splits them, so between the two every query is proven.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lvsprobe.dashboards import promql, render, variables
from lvsprobe.dashboards.prometheus import Prometheus, PrometheusError

# Every series of --collector.keepalived is named so (lvsprobe/exporter/metrics.py).
KEEPALIVED_METRIC_PREFIX = "ipvs_keepalived_"
# Its queries read a replay's metrics (`replay run --metrics-port`), not an exporter's.
REPLAY_DASHBOARD = "replay-run"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What Prometheus answered to one panel query."""

    query: promql.PanelQuery
    sent: str
    series: int
    error: str = ""
    result: tuple[dict[str, Any], ...] = ()  # the series as Prometheus returned them

    @property
    def ok(self) -> bool:
        return not self.error and self.series > 0

    def describe(self) -> str:
        what = f"error: {self.error}" if self.error else f"{self.series} series"
        return f"{self.query.where}: {what}\n    {self.sent}"


def grafana_values(
    instances: Sequence[str],
    service: str,
    *,
    range_s: int,
    rate_interval: str = "10s",
) -> dict[str, str]:
    """Variable values as Grafana formats them for a multi-value `instance` selection, `All`
    namespaces (its allValue) and one service; plus the built-in interval variables."""
    escaped = [promql.regex_escape(i) for i in instances]
    return {
        "instance": escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")",
        "netns": variables.ALL,
        "service": service,
        "__rate_interval": rate_interval,
        "__interval": "1s",
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
    }


def service_options(prom: Prometheus, values: Mapping[str, str]) -> dict[str, str]:
    """The `service` drop-down: text -> value, from its query_result() and regex."""
    expr, _ = promql.variable_expr(variables.SERVICE_QUERY)
    regex = promql.grafana_regex(variables.SERVICE_REGEX)
    options: dict[str, str] = {}
    for series in prom.query(promql.interpolate(expr, values)):
        m = regex.search(promql.query_result_text(series))
        if m:
            options[m.group("text")] = m.group("value")
    return options


def label_values(prom: Prometheus, query: str, values: Mapping[str, str]) -> list[str]:
    """A `label_values(selector, label)` variable's options."""
    selector, label = promql.variable_expr(query)
    assert label is not None
    series = prom.query(promql.interpolate(selector, values))
    return sorted({s["metric"][label] for s in series if label in s["metric"]})


def exporter_dashboards() -> list[dict[str, Any]]:
    """The provisioned dashboards that chart `lvsprobe export` (every one but the replay's)."""
    files = render.render_all()
    return [
        json.loads(files[f"provisioning/{d.name}.json"])
        for d in render.DASHBOARDS
        if d.name != REPLAY_DASHBOARD
    ]


def needs_keepalived(query: promql.PanelQuery) -> bool:
    """Whether the query reads a --collector.keepalived series (empty without keepalived)."""
    return KEEPALIVED_METRIC_PREFIX in query.expr


def prove(
    prom: Prometheus,
    dashboards: Iterable[Mapping[str, Any]],
    values: Mapping[str, str],
    *,
    range_s: int,
    only: Callable[[promql.PanelQuery], bool] | None = None,
) -> list[Outcome]:
    """Run every panel query (or those `only` selects): instant ones as instant queries, the
    rest over `range_s`."""
    out: list[Outcome] = []
    for dashboard in dashboards:
        for query in promql.panel_queries(dashboard):
            if only is not None and not only(query):
                continue
            sent = promql.interpolate(query.expr, values)
            try:
                result = prom.query(sent) if query.instant else prom.query_range(sent, range_s)
            except PrometheusError as exc:
                out.append(Outcome(query, sent, 0, str(exc)))
                continue
            out.append(Outcome(query, sent, len(result), result=tuple(result)))
    return out
