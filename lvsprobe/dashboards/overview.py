"""IPVS overview: is the director healthy, what flows through it, which backends can serve."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dash_m

from lvsprobe.dashboards import variables
from lvsprobe.dashboards.panels import (
    DIRECTOR,
    DIRECTOR_LEGEND,
    DIRECTOR_SERVICE,
    OK_RED,
    RED_OK,
    SERVICE_BY,
    SERVICE_LEGEND,
    Query,
    Row,
    dashboard,
    dashboards_link,
    in_out,
    max_by,
    rate,
    sel,
    service_link,
    stat,
    sum_by,
    table,
    timeseries,
    value_text,
)

UID = "lvsprobe-ipvs-overview"


def _health() -> Row:
    return Row(
        "Health",
        [
            stat(
                "IPVS loaded",
                "1 = the ip_vs module is loaded and was read; 0 = not loaded on this director "
                "(a state, not an exporter failure). A director that should balance and shows "
                "0 has lost its rules: check `lsmod | grep ip_vs` and keepalived.",
                [Query(sel("ipvs_up"), DIRECTOR_LEGEND)],
                mappings=value_text({"0": ("not loaded", "red"), "1": ("loaded", "green")}),
                thresholds=RED_OK,
            ),
            stat(
                "Failing sources",
                "Sources (services, conns, slab, daemons, timeouts, sysctls, stats) the exporter "
                "could not read in the last scrape. Anything above 0: the exporter logged one "
                "line naming the source; the other panels still show what was read.",
                [
                    Query(
                        f"sum by ({DIRECTOR}) (1 - {sel('ipvs_scrape_source_success')})",
                        DIRECTOR_LEGEND,
                    )
                ],
                thresholds=OK_RED,
            ),
            stat(
                "Virtual services",
                "Virtual services configured (ipvsadm -Ln). A sudden drop usually means "
                "keepalived reloaded or a kube-proxy sync removed services.",
                [Query(f"count by ({DIRECTOR}) ({sel('ipvs_service_info')})", DIRECTOR_LEGEND)],
            ),
            stat(
                "Services without a usable backend",
                "Services whose every real server has weight 0 or that have none: new "
                "connections to them fail. Alert ServiceWithoutUsableBackend fires on this.",
                [
                    Query(
                        f"sum by ({DIRECTOR}) ({sel('ipvs_service_usable_backends')} == bool 0)",
                        DIRECTOR_LEGEND,
                    )
                ],
                thresholds=OK_RED,
            ),
        ],
    )


def _traffic() -> Row:
    return Row(
        "Traffic",
        [
            timeseries(
                "New connections/s per director",
                "Connections scheduled per second (rate of ipvs_connections_total). Drops to 0 "
                "on the director that lost the VIP during a failover.",
                [
                    Query(
                        sum_by(DIRECTOR, rate("ipvs_connections_total")),
                        DIRECTOR_LEGEND,
                    )
                ],
                unit="cps",
            ),
            timeseries(
                "New connections/s per service (top 10)",
                "The ten busiest virtual services by connections scheduled per second. Click a "
                "series to open the service drill-down.",
                [
                    Query(
                        f"topk(10, {sum_by(SERVICE_BY, rate('ipvs_service_connections_total'))})",
                        SERVICE_LEGEND,
                    )
                ],
                unit="cps",
                links=[service_link("field.labels")],
            ),
            timeseries(
                "Packets/s",
                "Packets through IPVS. Outgoing counts only replies that pass the director "
                "(NAT); with DR or TUN the real servers answer clients directly, so it stays 0.",
                in_out("packets", "{{instance}} {{netns}}"),
                unit="pps",
            ),
            timeseries(
                "Bytes/s",
                "Bytes through IPVS, client to real server (in) and back (out, NAT only).",
                in_out("bytes", "{{instance}} {{netns}}"),
                unit="Bps",
            ),
        ],
    )


def _connections() -> Row:
    return Row(
        "Connections and backends",
        [
            timeseries(
                "Connection entries by state",
                "Entries in the IPVS connection table (templates excluded) by protocol and "
                "state. Many SYN_RECV: clients reach the director but backends do not answer "
                "(or a SYN flood). Many TIME_WAIT/FIN_WAIT: short connections, normal.",
                [
                    Query(
                        f"sum by (protocol, state) ({sel('ipvs_conn_entries')})",
                        "{{protocol}} {{state}}",
                    )
                ],
                unit="short",
                stack=True,
            ),
            timeseries(
                "Active and inactive connections",
                "Sum over real servers of ActiveConn (TCP ESTABLISHED) and InActConn (every "
                "other state), as ipvsadm -Ln shows them.",
                [
                    Query(
                        sum_by(DIRECTOR, sel("ipvs_backend_active_connections")),
                        "active {{instance}} {{netns}}",
                    ),
                    Query(
                        sum_by(DIRECTOR, sel("ipvs_backend_inactive_connections")),
                        "inactive {{instance}} {{netns}}",
                    ),
                ],
                unit="short",
            ),
            stat(
                "Backends",
                "Real servers that can be scheduled (weight > 0), drained or failed ones "
                "(weight 0: keepalived's inhibit_on_failure or a manual drain), and ones removed "
                "during the selected time range (keepalived deletes a failed real server "
                "unless inhibit_on_failure is set).",
                [
                    Query(f"sum({sel('ipvs_service_usable_backends')})", "usable"),
                    Query(f"sum({sel('ipvs_backend_weight')} == bool 0)", "weight 0"),
                    Query(
                        f"sum(max_over_time({sel('ipvs_service_backends')}[$__range]) "
                        f"- {sel('ipvs_service_backends')})",
                        "removed in range",
                    ),
                ],
                width=12,
            ),
            table(
                "Backends with weight 0",
                "Drained or failed real servers. Connections still active on them are "
                "finishing (weight 0 stops only new ones); alert BackendWeightZeroStillActive "
                "fires when they stay.",
                [
                    Query(sel("ipvs_backend_weight") + " == 0"),
                    Query(
                        f"{sel('ipvs_backend_active_connections')} and on ({DIRECTOR_SERVICE}, "
                        f"backend_address, backend_port) ({sel('ipvs_backend_weight')} == 0)"
                    ),
                ],
                width=12,
                hide=("Time", "__name__", "job", "family", "forward"),
                rename={"Value #A": "weight", "Value #B": "active"},
            ),
            table(
                "Virtual services",
                "Every virtual service with its scheduler, usable/configured real servers and "
                "connections per second over the dashboard's rate window. Click a row to open "
                "the service drill-down.",
                [
                    Query(
                        max_by(f"{DIRECTOR_SERVICE}, scheduler, flags", sel("ipvs_service_info"))
                    ),
                    Query(max_by(DIRECTOR_SERVICE, sel("ipvs_service_usable_backends"))),
                    Query(max_by(DIRECTOR_SERVICE, sel("ipvs_service_backends"))),
                    Query(sum_by(DIRECTOR_SERVICE, rate("ipvs_service_connections_total"))),
                ],
                hide=("Time", "Value #A"),
                rename={"Value #B": "usable", "Value #C": "configured", "Value #D": "conn/s"},
                links=[service_link("data.fields")],
            ),
        ],
    )


def _exporter() -> Row:
    return Row(
        "Exporter",
        [
            stat(
                "Target up",
                "Prometheus's own `up`: 0 means the scrape failed (exporter down, firewall, "
                "TLS or basic-auth mismatch), and every other panel goes stale.",
                [Query('up{instance=~"$instance"}', "{{instance}}")],
                mappings=value_text({"0": ("down", "red"), "1": ("up", "green")}),
                thresholds=RED_OK,
            ),
            timeseries(
                "Read time per source",
                "Time each source took in a scrape. The connection table grows with traffic: "
                "if `conns` nears the scrape timeout, use --collector.conns=per-service or off.",
                [Query(sel("ipvs_scrape_source_duration_seconds"), "{{instance}} {{source}}")],
                unit="s",
                width=9,
            ),
            stat(
                "Dropped backend series/s",
                "Real-server series the exporter left out because of "
                "--collector.backends.max-series (rate of ipvs_exporter_dropped_series_total). "
                "0 unless capped; above 0, raise the cap or filter services.",
                [
                    Query(
                        sum_by(DIRECTOR, rate("ipvs_exporter_dropped_series_total")), "{{instance}}"
                    )
                ],
                thresholds=OK_RED,
            ),
            table(
                "Versions",
                "lvsprobe and IPVS versions, and how IPVS was read (netlink, or procfs when "
                "netlink is not permitted: then persistent-connection and threshold panels "
                "stay empty).",
                [
                    Query(sel("ipvs_exporter_build_info")),
                    Query(sel("ipvs_info")),
                ],
                hide=("Time", "__name__", "Value #A", "Value #B"),
            ),
        ],
    )


def build() -> dash_m.Dashboard:
    return dashboard(
        UID,
        "IPVS overview",
        "Health, traffic, connection states and backends of every IPVS director scraped "
        "from `lvsprobe export`.",
        variables.standard(),
        [_health(), _traffic(), _connections(), _exporter()],
        links=[dashboards_link()],
    )
