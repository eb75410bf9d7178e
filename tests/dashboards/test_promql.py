"""The PromQL reader and Grafana's interpolation, as the dashboards and proof tests use them."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsprobe.dashboards import promql, variables


def test_names_tell_metrics_from_functions_keywords_and_labels() -> None:
    expr = (
        'topk(10, sum by (a, b) (rate(x_total{c="1",d=~"$v"}[$__rate_interval]))) '
        "> bool 0 unless on (e) group_left (f) up offset 5m"
    )
    found = promql.names(expr)
    assert found.selectors == [promql.Selector("x_total", ("c", "d")), promql.Selector("up", ())]
    assert found.grouping_labels == {"a", "b", "e", "f"}


def test_names_keep_spliced_variables_as_placeholders() -> None:
    found = promql.names('m{instance=~"$instance",${service:raw}}')
    assert found.selectors == [promql.Selector("m", ("instance",), ("${service:raw}",))]


@pytest.mark.parametrize("expr", ["m{a=", '{a="1"}', "m # comment", 'm{a="1"'])
def test_unreadable_expressions_raise(expr: str) -> None:
    with pytest.raises(promql.PromQLSyntaxError):
        promql.names(expr)


def test_problems_name_unknown_metrics_labels_and_groupings() -> None:
    catalog = promql.Catalog(
        {"m": ("a",), "s": ("protocol", "address")}, ("instance",), {"service": ("protocol",)}
    )
    assert promql.problems('sum by (a) (m{a="1",instance="x"})', catalog) == []
    assert promql.problems('sum by (zz) (m{b="1"}) + n', catalog) == [
        "m has no label 'b'",
        "unknown metric 'n'",
        "grouping label 'zz' is on none of the metrics",
    ]
    assert promql.problems("m{${service:raw}}", catalog) == [
        "m lacks ['protocol'] of ${service:raw}"
    ]
    assert promql.problems("s{${service:raw}}", catalog) == []
    assert promql.problems("s{$other}", catalog) == [
        "$other in s{} is not a known matcher variable"
    ]


def test_interpolate_like_grafana() -> None:
    expr = 'rate(m{instance=~"$instance",netns=~"${netns}",${service:raw}}[$__rate_interval]) $1'
    out = promql.interpolate(
        expr,
        {
            "instance": "127.0.0.1:9954",
            "netns": ".*",
            "service": 'port="80"',
            "__rate_interval": "15s",
        },
        regex={"instance", "service"},
    )
    assert out == r'rate(m{instance=~"127\\.0\\.0\\.1:9954",netns=~".*",port="80"}[15s]) $1'


def test_variable_expr_unwraps_grafana_functions() -> None:
    assert promql.variable_expr(variables.INSTANCE_QUERY) == ("ipvs_up", "instance")
    assert promql.variable_expr(variables.NETNS_QUERY)[1] == "netns"
    expr, label = promql.variable_expr(variables.SERVICE_QUERY)
    assert label is None and expr.startswith("label_replace(")
    with pytest.raises(promql.PromQLSyntaxError):
        promql.variable_expr("metrics(ipvs_.*)")


def test_service_variable_regex_on_grafanas_query_result_text() -> None:
    """Value = the matcher list, text = readable; for IPv4, IPv6 and fwmark services."""
    regex = promql.grafana_regex(variables.SERVICE_REGEX)
    cases = [
        (
            {
                "address": "198.18.0.100",
                "family": "inet",
                "fwmark": "0",
                "port": "80",
                "protocol": "tcp",
                "vip": "tcp 198.18.0.100:80",
            },
            'address="198.18.0.100",family="inet",fwmark="0",port="80",protocol="tcp"',
            "tcp 198.18.0.100:80",
        ),
        (
            {"family": "inet6", "fwmark": "1", "port": "0", "vip": "fwmark 1 inet6"},
            'family="inet6",fwmark="1",port="0"',
            "fwmark 1 inet6",
        ),
    ]
    for labels, value, text in cases:
        line = promql.query_result_text({"metric": labels, "value": [1700000000.5, "1"]})
        m = regex.search(line)
        assert m is not None, line
        assert (m.group("value"), m.group("text")) == (value, text)


@given(st.text(max_size=60))
def test_names_never_raise_anything_but_syntax_errors(text: str) -> None:
    with contextlib.suppress(promql.PromQLSyntaxError):
        promql.names(text)


@given(st.text(alphabet="ab.*+?()[]{}|^$\\:", max_size=20))
def test_regex_escape_round_trips_through_promql_string_and_regex(value: str) -> None:
    """Grafana's escape, unquoted as a PromQL string, is a regex matching exactly `value`."""
    import re

    escaped = promql.regex_escape(value)
    as_string = escaped.encode().decode("unicode_escape")  # PromQL "…" unescaping
    assert re.fullmatch(as_string, value)
