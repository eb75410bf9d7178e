"""Panel and dashboard builders on top of grafana-foundation-sdk, in lvsprobe's house style.

Every panel queries the dashboard's `datasource` variable, carries a description written for
the engineer on call, and gets a stable id from `dashboard()` (its position), so the
generated JSON is the same on every run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import statetimeline as timeline_b
from grafana_foundation_sdk.builders import table as table_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label matchers every query starts from. `netns` is absent when the exporter reads a single
# namespace; `=~` with an empty or `.*` value matches a missing label, so one form fits both.
SCOPE = 'instance=~"$instance",netns=~"$netns"'
# The `service` variable's value is a ready-made matcher list (see variables.py); `:raw`
# keeps Grafana from escaping its quotes.
SERVICE_SCOPE = SCOPE + ",${service:raw}"
RATE_WINDOW = "[$__rate_interval]"

SERVICE_BY = "protocol, address, port, fwmark, family"
SERVICE_DASHBOARD_UID = "lvsprobe-ipvs-service"
DIRECTOR = "instance, netns"
DIRECTOR_SERVICE = f"{DIRECTOR}, {SERVICE_BY}"
DIRECTOR_LEGEND = "{{instance}} {{netns}}"
SERVICE_LEGEND = "{{protocol}} {{address}}:{{port}} fwmark {{fwmark}}"
BACKEND_LEGEND = "{{backend_address}}:{{backend_port}}"


@dataclass(frozen=True, slots=True)
class Query:
    """One PromQL target of a panel. `instant` for tables and single values."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """A titled row of panels; panels flow left to right, 24 grid units wide."""

    title: str
    panels: Sequence[Any] = field(default_factory=tuple)


def sel(metric: str, extra: str = "", *, service: bool = False) -> str:
    """`metric{instance=~…,netns=~…[,service matchers][,extra]}`."""
    scope = SERVICE_SCOPE if service else SCOPE
    return f"{metric}{{{scope}{',' + extra if extra else ''}}}"


def rate(metric: str, extra: str = "", *, service: bool = False) -> str:
    """`rate(metric{…}[$__rate_interval])`: per-second rate of a counter."""
    return f"rate({sel(metric, extra, service=service)}{RATE_WINDOW})"


def sum_by(labels: str, expr: str) -> str:
    """`sum by (labels) (expr)`."""
    return f"sum by ({labels}) ({expr})"


def in_out(unit: str, legend: str, *, service: bool = False) -> list[Query]:
    """Per-director rates of `ipvs[_service]_{incoming,outgoing}_<unit>_total`, legends
    `in …` and `out …`: the two directions of one panel."""
    prefix = "ipvs_service" if service else "ipvs"
    return [
        Query(
            sum_by(DIRECTOR, rate(f"{prefix}_{way}_{unit}_total", service=service)),
            f"{short} {legend}",
        )
        for way, short in (("incoming", "in"), ("outgoing", "out"))
    ]


def max_by(labels: str, expr: str) -> str:
    """`max by (labels) (expr)`: one series per label set (for info series and gauges)."""
    return f"max by ({labels}) ({expr})"


def _targets(builder: Any, queries: Sequence[Query]) -> Any:
    for index, query in enumerate(queries):
        target = prom_b.Dataquery().expr(query.expr).ref_id(chr(ord("A") + index))
        target = target.instant() if query.instant else target.range()
        if query.legend:
            target = target.legend_format(query.legend)
        builder = builder.with_target(target)
    return builder


def _thresholds(steps: Sequence[tuple[float | None, str]]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dash_m.ThresholdsMode.ABSOLUTE)
        .steps([dash_m.Threshold(value=value, color=color) for value, color in steps])
    )


OK_RED: tuple[tuple[float | None, str], ...] = ((None, "green"), (1, "red"))
RED_OK: tuple[tuple[float | None, str], ...] = ((None, "red"), (1, "green"))
NEUTRAL: tuple[tuple[float | None, str], ...] = ((None, "blue"),)


def value_text(mapping: dict[str, tuple[str, str]]) -> list[dash_m.ValueMap]:
    """Value mappings: {"1": ("loaded", "green")}."""
    return [
        dash_m.ValueMap(
            options={
                key: dash_m.ValueMappingResult(text=text, color=color, index=i)
                for i, (key, (text, color)) in enumerate(sorted(mapping.items()))
            }
        )
    ]


def timeseries(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str,
    width: int = 12,
    height: int = 8,
    stack: bool = False,
    thresholds: Sequence[tuple[float | None, str]] | None = None,
    links: Sequence[dash_b.DashboardLink] = (),
) -> ts_b.Panel:
    """A time series with a table legend (last, max) and a shared tooltip."""
    panel = (
        ts_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10 if not stack else 40)
        .show_points(common_m.VisibilityMode.NEVER)
        .legend(
            common_b.VizLegendOptions()
            .display_mode(common_m.LegendDisplayMode.TABLE)
            .placement(common_m.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(
            common_b.VizTooltipOptions()
            .mode(common_m.TooltipDisplayMode.MULTI)
            .sort(common_m.SortOrder.DESCENDING)
        )
    )
    if links:
        panel = panel.data_links(list(links))
    if stack:
        panel = panel.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
    if thresholds:
        panel = panel.thresholds(_thresholds(thresholds)).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common_m.GraphTresholdsStyleMode.DASHED)
        )
    return _targets(panel, queries)


def stat(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    unit: str = "none",
    width: int = 6,
    height: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = NEUTRAL,
    mappings: list[dash_m.ValueMap] | None = None,
) -> stat_b.Panel:
    """A single-value panel per series: last value, coloured by thresholds."""
    panel = (
        stat_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .graph_mode(common_m.BigValueGraphMode.AREA)
        .color_mode(common_m.BigValueColorMode.VALUE)
        .text_mode(common_m.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(_thresholds(thresholds))
    )
    if mappings:
        panel = panel.mappings(list(mappings))
    return _targets(panel, queries)


def table(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    width: int = 24,
    height: int = 8,
    hide: Sequence[str] = ("Time",),
    rename: dict[str, str] | None = None,
    unit: str = "none",
    links: Sequence[dash_b.DashboardLink] = (),
) -> table_b.Panel:
    """An instant table: the queries' series joined on their labels (Grafana's merge)."""
    organize: dict[str, object] = {
        "excludeByName": {name: True for name in hide},
        "renameByName": dict(rename or {}),
    }
    panel = (
        table_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .show_header(True)
        .with_transformation(dash_m.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(dash_m.DataTransformerConfig(id_val="organize", options=organize))
    )
    if links:
        panel = panel.data_links(list(links))
    return _targets(panel, [Query(q.expr, q.legend, instant=True) for q in queries])


def state_timeline(
    title: str,
    description: str,
    queries: Sequence[Query],
    *,
    mappings: list[dash_m.ValueMap],
    thresholds: Sequence[tuple[float | None, str]] = RED_OK,
    width: int = 12,
    height: int = 6,
) -> timeline_b.Panel:
    """One lane per series, coloured by a value mapping (states over time)."""
    panel = (
        timeline_b.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .span(width)
        .height(height)
        .mappings(list(mappings))
        .thresholds(_thresholds(thresholds))
        .show_value(common_m.VisibilityMode.AUTO)
        .merge_values(True)
        .row_height(0.9)
        .fill_opacity(80)
        .line_width(0)
    )
    return _targets(panel, queries)


def dashboard(
    uid: str,
    title: str,
    description: str,
    variables: Sequence[Any],
    rows: Sequence[Row],
    *,
    links: Sequence[Any] = (),
    annotations: Sequence[dash_b.AnnotationQuery] = (),
) -> dash_m.Dashboard:
    """A dashboard with stable panel ids (1, 2, … in layout order), refreshing every 30 s."""
    builder = (
        dash_b.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["lvsprobe", "ipvs", "lvs"])
        .editable()
        .tooltip(dash_m.DashboardCursorSync.CROSSHAIR)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .variables(list(variables))
    )
    for link in links:
        builder = builder.link(link)
    for annotation in annotations:
        builder = builder.annotation(annotation)
    next_id = 1
    for row in rows:
        builder = builder.with_row(dash_b.Row(row.title).id(next_id))
        next_id += 1
        for panel in row.panels:
            builder = builder.with_panel(panel.id(next_id))
            next_id += 1
    return builder.build()


def service_link(source: str) -> dash_b.DashboardLink:
    """A data link to the drill-down for the clicked service, keeping time range, data source,
    director and namespace selections.

    `source` is where the clicked value's labels are: "data.fields" in a table (its columns),
    "field.labels" in a time series. The `service` value is rebuilt from the five labels in
    the order the variable's own options have (Prometheus's sorted label order).
    """

    def value(label: str) -> str:
        return f"${{__{source}.{label}:percentencode}}"

    service = "%2C".join(
        f"{label}%3D%22{value(label)}%22" for label in sorted(SERVICE_BY.split(", "))
    )
    return (
        dash_b.DashboardLink("Drill down: this service")
        .url(
            f"/d/{SERVICE_DASHBOARD_UID}/?${{__url_time_range}}&${{datasource:queryparam}}"
            f"&${{instance:queryparam}}&${{netns:queryparam}}&var-service={service}"
        )
        .target_blank(False)
    )


def dashboards_link() -> dash_b.DashboardLink:
    """A drop-down of the other lvsprobe dashboards, keeping time range and variables."""
    return (
        dash_b.DashboardLink("lvsprobe dashboards")
        .type(dash_m.DashboardLinkType.DASHBOARDS)
        .tags(["lvsprobe"])
        .as_dropdown(True)
        .include_vars(True)
        .keep_time(True)
    )
