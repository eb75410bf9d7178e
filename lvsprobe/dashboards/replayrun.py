"""Replay run: the load `lvsprobe replay run --metrics-listen` drives, next to what the
director does with it (its metrics: lvsprobe/replay/metricspecs.py)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.models import dashboard as dash_m

from lvsprobe.dashboards import variables
from lvsprobe.dashboards.panels import (
    DATASOURCE,
    DIRECTOR,
    DIRECTOR_LEGEND,
    RATE_WINDOW,
    Query,
    Row,
    dashboard,
    dashboards_link,
    rate,
    stat,
    sum_by,
    timeseries,
)
from lvsprobe.replay.metricspecs import PREFIX

UID = "lvsprobe-replay-run"
REPLAY_QUERY = f"label_values({PREFIX}run_info, instance)"
REPLAY_SCOPE = 'instance=~"$replay"'


def _sel(metric: str, extra: str = "") -> str:
    return f"{PREFIX}{metric}{{{REPLAY_SCOPE}{',' + extra if extra else ''}}}"


def _rate(metric: str, extra: str = "") -> str:
    return f"rate({_sel(metric, extra)}{RATE_WINDOW})"


def _quantile(q: float, by: str, extra: str) -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({_rate('latency_seconds_bucket', extra)}))"


def replay_variable() -> dash_b.QueryVariable:
    return (
        dash_b.QueryVariable("replay")
        .label("Replay run")
        .description("The `lvsprobe replay run --metrics-listen` endpoint(s) Prometheus scrapes.")
        .datasource(DATASOURCE)
        .query(REPLAY_QUERY)
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(variables.ALL)
    )


def _load() -> Row:
    return Row(
        "Load",
        [
            timeseries(
                "Planned vs achieved flows/s",
                "What the rate profile asks for (absent in closed-model stages) and the flows "
                "the engine started over the last seconds. Achieved below planned: the client "
                "cannot keep up (more engine processes, or a smaller rate).",
                [
                    Query(_sel("planned_rate_per_second"), "planned {{instance}}"),
                    Query(_sel("achieved_rate_per_second"), "achieved {{instance}}"),
                ],
                unit="cps",
            ),
            timeseries(
                "New connections/s at the director",
                "Connections the director scheduled (all its services): it should follow the "
                "achieved rate; a gap is flows the director never saw.",
                [Query(sum_by(DIRECTOR, rate("ipvs_connections_total")), DIRECTOR_LEGEND)],
                unit="cps",
            ),
            timeseries(
                "Flows ended/s by outcome",
                "ok, refused, reset, timeout, error:<reason>: a rise in anything but ok is the "
                "service failing under the load (or the director refusing it).",
                [Query(f"sum by (outcome) ({_rate('flows_finished_total')})", "{{outcome}}")],
                unit="cps",
                stack=True,
            ),
            timeseries(
                "Failed flows/s by backend",
                "Flows not ok, by the backend that served them (unknown: no backend named).",
                [Query(f"sum by (backend) ({_rate('flows_failed_total')})", "{{backend}}")],
                unit="cps",
            ),
            stat(
                "In flight",
                "Flows started and not ended yet.",
                [Query(f"sum({_sel('flows_in_flight')})", instant=True)],
            ),
            stat(
                "Stage",
                "The rate profile's stage running now (0 first).",
                [Query(f"max({_sel('stage')})", instant=True)],
            ),
            stat(
                "Flows started",
                "Flows started since the run began.",
                [Query(f"sum({_sel('flows_started_total')})", instant=True)],
            ),
            stat(
                "Error ratio",
                "Flows not ok over flows ended, over the dashboard's range.",
                [
                    Query(
                        f"sum(increase({_sel('flows_failed_total')}[$__range])) / "
                        f"sum(increase({_sel('flows_finished_total')}[$__range]))",
                        instant=True,
                    )
                ],
                unit="percentunit",
            ),
        ],
    )


def _latency() -> Row:
    total = 'phase="total"'
    return Row(
        "Latency",
        [
            timeseries(
                "Total latency p99: corrected vs uncorrected",
                "Corrected: from each flow's scheduled start (wrk2), so a stalled service "
                "shows the wait of every flow queued behind it. Uncorrected: from the actual "
                "start (wrk), which hides that. A gap between the two is queueing.",
                [
                    Query(_quantile(0.99, "timing", total), "p99 {{timing}}"),
                    Query(_quantile(0.5, "timing", total), "p50 {{timing}}"),
                ],
                unit="s",
            ),
            timeseries(
                "p99 by backend (corrected)",
                "One slow backend stands out here while the overall p99 still looks fine.",
                [Query(_quantile(0.99, "backend", f'{total},timing="corrected"'), "{{backend}}")],
                unit="s",
            ),
            timeseries(
                "Connect and first byte p99",
                "The TCP handshake (through the director to the backend) and the first reply "
                "byte, from the actual start.",
                [
                    Query(
                        _quantile(0.99, "phase", 'phase=~"connect|ttfb",timing="uncorrected"'),
                        "{{phase}}",
                    )
                ],
                unit="s",
            ),
            timeseries(
                "Share of flows by backend",
                "Each backend's share of the flows ending now: the scheduler's split as the "
                "client sees it.",
                [
                    Query(
                        f"sum by (backend) ({_rate('flows_finished_total')}) / "
                        f"scalar(sum({_rate('flows_finished_total')}))",
                        "{{backend}}",
                    )
                ],
                unit="percentunit",
                stack=True,
            ),
        ],
    )


def build() -> dash_m.Dashboard:
    return dashboard(
        UID,
        "Replay run",
        "A load test in progress (`lvsprobe replay run --metrics-listen`): planned and achieved "
        "rate, outcomes, latency corrected for coordinated omission, per backend; beside the "
        "director's own new connections.",
        [*variables.standard(), replay_variable()],
        [_load(), _latency()],
        links=[dashboards_link()],
    )
