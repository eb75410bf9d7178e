"""Dashboard variables: datasource, instance (director), netns, service.

`service` is one drop-down for one virtual service although a service is identified by five
labels (protocol, address, port, fwmark, family). Its value is the matcher list itself,
e.g. `address="198.18.0.100",family="inet",fwmark="0",port="80",protocol="tcp"`, cut by a
regex out of Grafana's `query_result()` text; panels splice it in with `${service:raw}`. Its
text is a readable `tcp 198.18.0.100:80`, `tcp [2001:2::100]:80` or `fwmark 1 inet`,
assembled in PromQL with label_join/label_replace (label_replace regexes are anchored, and a
non-matching one leaves the series unchanged, so the three rewrites do not interfere).
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.models import dashboard as dash_m

from lvsprobe.dashboards.panels import DATASOURCE, SCOPE
from lvsprobe.exporter.metrics import SERVICE_LABELS

ALL = ".*"

INSTANCE_QUERY = "label_values(ipvs_up, instance)"
NETNS_QUERY = 'label_values(ipvs_up{instance=~"$instance"}, netns)'

_SERVICE_KEYS = f"count by ({', '.join(SERVICE_LABELS)}) (ipvs_service_info{{{SCOPE}}})"
_JOINED = (
    f'label_join({_SERVICE_KEYS}, "vip", "|", "protocol", "address", "port", "fwmark", "family")'
)
# protocol|address|port|fwmark|family, with a colon in the address for IPv6, else fwmark > 0.
_V6_KEY = "([a-z]+)[|]([^|]*:[^|]*)[|]([0-9]+)[|]0[|].*"
_V4_KEY = "([a-z]+)[|]([^|:]+)[|]([0-9]+)[|]0[|].*"
_FWMARK_KEY = "[|][|][0-9]+[|]([0-9]+)[|](.*)"
_V6 = f'label_replace({_JOINED}, "vip", "$1 [$2]:$3", "vip", "{_V6_KEY}")'
_V4 = f'label_replace({_V6}, "vip", "$1 $2:$3", "vip", "{_V4_KEY}")'
_FWMARK = f'label_replace({_V4}, "vip", "fwmark $1 $2", "vip", "{_FWMARK_KEY}")'
SERVICE_QUERY = f"query_result({_FWMARK})"
# Grafana renders a query_result() series as `{a="x",b="y"} value timestamp` with the labels
# in Prometheus's (sorted) order, so `vip` comes last and everything before it is the key.
SERVICE_REGEX = r'/\{(?<value>.*),vip="(?<text>[^"]*)"\}/'


def datasource() -> dash_b.DatasourceVariable:
    return (
        dash_b.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("The Prometheus that scrapes `lvsprobe export`.")
    )


def _query(name: str, label: str, description: str, query: str) -> dash_b.QueryVariable:
    """A variable filled from Prometheus, refreshed with the time range, sorted A→Z."""
    return (
        dash_b.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(dash_m.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dash_m.VariableSort.ALPHABETICAL_ASC)
    )


def instance(*, multi: bool = True) -> dash_b.QueryVariable:
    return (
        _query(
            "instance",
            "Director",
            "Scrape target (director) running `lvsprobe export`.",
            INSTANCE_QUERY,
        )
        .multi(multi)
        .include_all(True)
        .all_value(ALL)
    )


def netns() -> dash_b.QueryVariable:
    return (
        _query(
            "netns",
            "Namespace",
            "Network namespace (`--netns`); empty when the exporter reads only one, "
            "which then matches every series.",
            NETNS_QUERY,
        )
        .multi(True)
        .include_all(True)
        .all_value(ALL)
    )


def service() -> dash_b.QueryVariable:
    return (
        _query(
            "service",
            "Virtual service",
            "One virtual service (VIP:port/protocol or firewall mark).",
            SERVICE_QUERY,
        )
        .regex(SERVICE_REGEX)
        .multi(False)
        .include_all(False)
    )


def standard(*, with_service: bool = False, multi_instance: bool = True) -> list[Any]:
    """The variables every lvsprobe dashboard has, in display order."""
    out: list[Any] = [datasource(), instance(multi=multi_instance), netns()]
    if with_service:
        out.append(service())
    return out
