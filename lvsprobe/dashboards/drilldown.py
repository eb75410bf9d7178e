"""Service drill-down: one virtual service, its real servers, and whether the split is fair."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dash_m

from lvsprobe.dashboards import variables
from lvsprobe.dashboards.panels import (
    BACKEND_LEGEND,
    DIRECTOR,
    SERVICE_DASHBOARD_UID,
    Query,
    Row,
    dashboard,
    dashboards_link,
    in_out,
    max_by,
    rate,
    sel,
    stat,
    state_timeline,
    sum_by,
    table,
    timeseries,
    value_text,
)

UID = SERVICE_DASHBOARD_UID
BACKEND = "instance, netns, backend_address, backend_port"
INFO_LABELS = "scheduler, flags, persistent, pe_name"


def _share(numerator: str) -> str:
    """Each backend's part of the service total, per director: x / on(director) sum(x)."""
    return (
        f"{sum_by(BACKEND, numerator)} / on ({DIRECTOR}) group_left {sum_by(DIRECTOR, numerator)}"
    )


CONN_RATE = rate("ipvs_backend_connections_total", service=True)
WEIGHT = sel("ipvs_backend_weight", service=True)


def _service() -> Row:
    return Row(
        "Service",
        [
            table(
                "Configuration",
                "Scheduler, flags (persistent, ops, sh-port…), persistence engine and timeout, "
                "as the director reports them. Compare both directors: a difference means the "
                "backup would schedule differently after a failover.",
                [
                    Query(
                        max_by(f"{DIRECTOR}, {INFO_LABELS}", sel("ipvs_service_info", service=True))
                    ),
                    Query(max_by(DIRECTOR, sel("ipvs_service_backends", service=True))),
                    Query(max_by(DIRECTOR, sel("ipvs_service_usable_backends", service=True))),
                ],
                width=12,
                height=6,
                hide=("Time", "Value #A"),
                rename={"Value #B": "backends", "Value #C": "usable"},
            ),
            stat(
                "Persistence timeout",
                "ipvsadm -p: how long a client sticks to its real server after its last "
                "connection. Only persistent services have it.",
                [
                    Query(
                        sel("ipvs_service_persistence_timeout_seconds", service=True),
                        "{{instance}}",
                    )
                ],
                unit="s",
                height=6,
            ),
            stat(
                "Persistence templates",
                "Templates (one per client, or client netmask) pinning clients to real "
                "servers. Grows with distinct clients, shrinks after the timeout.",
                [
                    Query(
                        sum_by(DIRECTOR, sel("ipvs_conn_templates", service=True)),
                        "{{instance}}",
                    )
                ],
                height=6,
            ),
            timeseries(
                "New connections/s",
                "Connections scheduled per second for this service (rate of its counter).",
                [
                    Query(
                        sum_by(DIRECTOR, rate("ipvs_service_connections_total", service=True)),
                        "{{instance}} {{netns}}",
                    )
                ],
                unit="cps",
                width=8,
            ),
            timeseries(
                "Packets/s",
                "Packets to (in) and from (out, NAT only) the service's real servers.",
                in_out("packets", "{{instance}}", service=True),
                unit="pps",
                width=8,
            ),
            timeseries(
                "Bytes/s",
                "Bytes to (in) and from (out, NAT only) the service's real servers.",
                in_out("bytes", "{{instance}}", service=True),
                unit="Bps",
                width=8,
            ),
        ],
    )


def _backends() -> Row:
    return Row(
        "Real servers",
        [
            timeseries(
                "Share of new connections vs weight share",
                "Solid: each real server's share of the service's new connections. Weight "
                "share: its weight over the sum of weights. With rr/wrr/wlc the two converge "
                "under load; persistence, sh/mh hashing and few clients make them diverge. A "
                "server far below its weight share is failing health checks or refusing.",
                [
                    Query(_share(CONN_RATE), "conns " + BACKEND_LEGEND),
                    Query(_share(WEIGHT), "weight " + BACKEND_LEGEND),
                ],
                unit="percentunit",
                width=12,
            ),
            timeseries(
                "Connections/s per real server",
                "New connections per second scheduled to each real server.",
                [Query(f"sum by ({BACKEND}) ({CONN_RATE})", BACKEND_LEGEND)],
                unit="cps",
                width=12,
            ),
            timeseries(
                "Active connections per real server",
                "ActiveConn: TCP connections in ESTABLISHED. What lc/wlc balance on.",
                [Query(sel("ipvs_backend_active_connections", service=True), BACKEND_LEGEND)],
                unit="short",
                width=8,
            ),
            timeseries(
                "Inactive connections per real server",
                "InActConn: every other state (SYN_RECV, FIN_WAIT, TIME_WAIT, UDP). Many "
                "SYN_RECV on one server: it does not answer.",
                [Query(sel("ipvs_backend_inactive_connections", service=True), BACKEND_LEGEND)],
                unit="short",
                width=8,
            ),
            timeseries(
                "Persistent connections per real server",
                "Persistence templates pointing at each real server (netlink only: empty when "
                "the exporter falls back to procfs).",
                [Query(sel("ipvs_backend_persistent_connections", service=True), BACKEND_LEGEND)],
                unit="short",
                width=8,
            ),
            timeseries(
                "Bytes/s per real server",
                "Bytes to (in) and from (out, NAT only) each real server.",
                [
                    Query(
                        sum_by(BACKEND, rate("ipvs_backend_incoming_bytes_total", service=True)),
                        "in " + BACKEND_LEGEND,
                    ),
                    Query(
                        sum_by(BACKEND, rate("ipvs_backend_outgoing_bytes_total", service=True)),
                        "out " + BACKEND_LEGEND,
                    ),
                ],
                unit="Bps",
                width=12,
            ),
            timeseries(
                "Connection entries by state",
                "This service's connection-table entries by state (templates excluded).",
                [
                    Query(
                        f"sum by ({DIRECTOR}, state) ({sel('ipvs_conn_entries', service=True)})",
                        "{{instance}} {{state}}",
                    )
                ],
                unit="short",
                width=12,
                stack=True,
            ),
            state_timeline(
                "Health checker verdict (keepalived)",
                "keepalived's checkers per real server (--collector.keepalived): down means "
                "keepalived took it out (weight 0 with inhibit_on_failure, else removed from "
                "IPVS). Down with weight > 0 in IPVS, or up with weight 0, alerts after 2 "
                "minutes (KeepalivedDownBackendStillInIPVS, KeepalivedUpBackendNotInIPVS).",
                [
                    Query(
                        sel("ipvs_keepalived_backend_up", service=True),
                        "{{instance}} " + BACKEND_LEGEND,
                    )
                ],
                mappings=value_text({"0": ("down", "red"), "1": ("up", "green")}),
                width=24,
            ),
            table(
                "Real servers",
                "Weight, forwarding method, connections and thresholds of each real server, and "
                "keepalived's checker verdict (1 up, 0 down; with --collector.keepalived). "
                "Upper/lower thresholds are 0 when unset (netlink only). Conn share/weight "
                "share near 1 is a fair split; 0 means the server gets nothing.",
                [
                    Query(WEIGHT),
                    Query(sel("ipvs_backend_active_connections", service=True)),
                    Query(sel("ipvs_backend_inactive_connections", service=True)),
                    Query(sel("ipvs_backend_upper_threshold_connections", service=True)),
                    Query(f"{_share(CONN_RATE)} / {_share(WEIGHT)}"),
                    Query(sel("ipvs_keepalived_backend_up", service=True)),
                ],
                hide=("Time", "__name__", "job", "protocol", "address", "port", "fwmark", "family"),
                rename={
                    "Value #A": "weight",
                    "Value #B": "active",
                    "Value #C": "inactive",
                    "Value #D": "upper threshold",
                    "Value #E": "conn share / weight share",
                    "Value #F": "keepalived checker up",
                },
            ),
        ],
    )


def _estimator() -> Row:
    return Row(
        "Kernel estimator",
        [
            timeseries(
                "Kernel rate estimate vs counter rate",
                "The kernel's own rate estimator (ipvsadm --rate: EWMA over ~8 s, refreshed "
                "every 2 s) next to rate() of the counter. They agree in steady state; the "
                "estimator lags bursts and misses nothing between scrapes.",
                [
                    Query(
                        sum_by(DIRECTOR, sel("ipvs_service_connections_per_second", service=True)),
                        "kernel {{instance}}",
                    ),
                    Query(
                        sum_by(DIRECTOR, rate("ipvs_service_connections_total", service=True)),
                        "rate() {{instance}}",
                    ),
                ],
                unit="cps",
                width=24,
            ),
        ],
    )


def build() -> dash_m.Dashboard:
    return dashboard(
        UID,
        "IPVS service drill-down",
        "One virtual service: configuration, traffic, and each real server's share of new "
        "connections against its weight.",
        variables.standard(with_service=True),
        [_service(), _backends(), _estimator()],
        links=[dashboards_link()],
    )
