"""The generated dashboards: committed copies current, deterministic, valid SDK models, and
every query naming only what the exporter exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dash_m

from lvsprobe.dashboards import connections, promql, render, variables
from lvsprobe.errors import LvsprobeError
from lvsprobe.exporter import metrics

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "dashboards"
FILES = render.render_all()
DASHBOARD_FILES = sorted(rel for rel in FILES if rel.endswith(".json"))


def _load(rel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FILES[rel])
    return data


def test_committed_files_match_the_generator() -> None:
    stale = render.stale_files(COMMITTED)
    assert not stale, f"run `lvsprobe dashboards generate` and commit: {stale}"


def test_generation_is_deterministic() -> None:
    assert render.render_all() == FILES


@pytest.mark.parametrize("rel", DASHBOARD_FILES)
def test_round_trips_through_the_sdk_models(rel: str) -> None:
    """Every key is one the SDK's Dashboard model knows (from_json drops unknown keys)."""
    plugins.register_default_plugins()
    data = {k: v for k, v in _load(rel).items() if not k.startswith("__")}
    model = dash_m.Dashboard.from_json(data)
    assert json.loads(json.dumps(model, cls=JSONEncoder)) == data


@pytest.mark.parametrize("rel", DASHBOARD_FILES)
def test_panels_are_documented_and_have_stable_unique_ids(rel: str) -> None:
    data = _load(rel)
    ids = [p["id"] for p in data["panels"]]
    assert ids == list(range(1, len(ids) + 1))
    for panel in data["panels"]:
        if panel["type"] == "row":
            continue
        assert len(panel.get("description", "")) > 30, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs)


@pytest.mark.parametrize("rel", DASHBOARD_FILES)
def test_variables(rel: str) -> None:
    data = _load(rel)
    names = [v["name"] for v in data["templating"]["list"]]
    assert names[:3] == ["datasource", "instance", "netns"]
    if "ipvs-service" in rel:
        assert names[3:] == ["service"]
        exprs = [q.expr for q in promql.panel_queries(data)]
        assert all(
            "${service:raw}" in e for e in exprs if "ipvs_service_" in e or "ipvs_backend_" in e
        )


def test_import_form_asks_for_the_data_source_and_provisioning_form_does_not() -> None:
    for d in render.DASHBOARDS:
        imp = _load(f"import/{d.name}.json")
        prov = _load(f"provisioning/{d.name}.json")
        assert [i["name"] for i in imp["__inputs"]] == ["DS_PROMETHEUS"]
        ds_var = imp["templating"]["list"][0]
        assert ds_var["current"]["value"] == "${DS_PROMETHEUS}"
        assert "DS_PROMETHEUS" not in FILES[f"provisioning/{d.name}.json"]
        assert imp["panels"] == prov["panels"]
        required_panels = {r["id"] for r in imp["__requires"] if r["type"] == "panel"}
        assert required_panels == {p["type"] for p in prov["panels"]} - {"row"}


def _all_exprs() -> list[tuple[str, str]]:
    out = []
    for d in render.DASHBOARDS:
        data = _load(f"provisioning/{d.name}.json")
        out += [(q.where, q.expr) for q in promql.panel_queries(data)]
        for var in data["templating"]["list"]:
            if var["type"] == "query":
                out.append((f"{data['uid']} ${var['name']}", promql.variable_expr(var["query"])[0]))
    return out


@pytest.mark.parametrize(("where", "expr"), _all_exprs())
def test_queries_name_only_exported_metrics_and_labels(where: str, expr: str) -> None:
    assert promql.problems(expr, promql.exporter_catalog()) == [], where


def test_generate_refuses_queries_the_exporter_cannot_answer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert render.query_problems() == []
    catalog = promql.exporter_catalog()
    shrunk = dict(catalog.labels_of)
    del shrunk["ipvs_conn_templates"]
    monkeypatch.setattr(
        promql,
        "exporter_catalog",
        lambda: promql.Catalog(shrunk, catalog.always, catalog.placeholders),
    )
    with pytest.raises(LvsprobeError, match="unknown metric 'ipvs_conn_templates'"):
        render.write_all(tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_renamed_metric_breaks_the_name_check() -> None:
    catalog = promql.exporter_catalog()
    renamed = dict(catalog.labels_of)
    renamed["ipvs_backend_weight_renamed"] = renamed.pop("ipvs_backend_weight")
    broken = promql.Catalog(renamed, catalog.always, catalog.placeholders)
    failures = [w for w, e in _all_exprs() if promql.problems(e, broken)]
    assert failures
    assert all("ipvs_backend_weight" in e for w, e in _all_exprs() if w in failures)


def test_every_dashboard_queries_rates_of_counters_not_kernel_rate_gauges() -> None:
    """rate()/increase() on `_total` counters; the estimator's gauges only where said so."""
    counters = {s.name for s in metrics.SPECS if s.type is metrics.MetricType.COUNTER}
    for where, expr in _all_exprs():
        found = promql.names(expr).metrics
        for name in found & counters:
            assert f"rate({name}" in expr or f"increase({name}" in expr, where
        gauges = {m for m in found if m.endswith("_per_second") and m.startswith("ipvs_")}
        if gauges:
            assert "Kernel rate estimate" in where, where


ALERT_RULES = REPO / "exporters" / "prometheus" / "ipvs-alerts.yml"


def _alert_rules() -> dict[str, str]:
    """alert name -> expr, from the exporter's rule file."""
    data = yaml.safe_load(ALERT_RULES.read_text())
    return {r["alert"]: r["expr"] for g in data["groups"] for r in g["rules"] if "alert" in r}


def test_memory_threshold_is_the_alert_rules() -> None:
    """The dashed line on the memory panel is ConnTableMemoryHigh's threshold."""
    expr = _alert_rules()["ConnTableMemoryHigh"]
    m = re.fullmatch(r"\s*ipvs_conn_table_memory_bytes\s*>\s*([0-9.e+]+)\s*", expr)
    assert m, f"rule changed shape: {expr!r}"
    assert float(m.group(1)) == connections.MEMORY_ALERT_BYTES


def test_alerts_named_in_descriptions_exist() -> None:
    known = set(_alert_rules())
    for rel in DASHBOARD_FILES:
        for panel in _load(rel)["panels"]:
            for name in re.findall(
                r"\b(?:alert|Alert) ([A-Z][A-Za-z]+)", panel.get("description", "")
            ):
                assert name in known, (rel, panel["title"], name)
            for name in re.findall(
                r"\b([A-Z][a-z]+(?:[A-Z][a-z]+)+)'s threshold", panel.get("description", "")
            ):
                assert name in known, (rel, panel["title"], name)


def _data_links() -> list[tuple[str, str]]:
    out = []
    for rel in DASHBOARD_FILES:
        for panel in _load(rel)["panels"]:
            for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
                out.append((f"{rel} {panel['title']}", link["url"]))
    return out


def test_drill_down_links_carry_the_clicked_service_as_the_variable_value() -> None:
    """Interpolated as Grafana does, a link sets var-service to exactly the option value the
    drill-down's `service` variable lists for that service."""
    from urllib.parse import parse_qs, quote, urlsplit

    labels = {
        "address": "2001:2:0:1::100",
        "family": "inet6",
        "fwmark": "0",
        "port": "80",
        "protocol": "tcp",
    }
    option = promql.grafana_regex(variables.SERVICE_REGEX).search(
        promql.query_result_text({"metric": {**labels, "vip": "x"}, "value": [0, "1"]})
    )
    assert option is not None
    links = _data_links()
    assert len(links) == 2 * 2  # two panels of the overview, in both forms
    for where, url in links:
        assert url.startswith("/d/lvsprobe-ipvs-service/"), where
        filled = re.sub(
            r"\$\{__(?:data\.fields|field\.labels)\.(\w+):percentencode\}",
            lambda m: quote(labels[m.group(1)], safe=""),
            url,
        )
        query = parse_qs(urlsplit(filled).query)
        assert query["var-service"] == [option.group("value")], where


def test_provisioning_example_is_a_grafana_file_provider() -> None:
    data = yaml.safe_load(FILES["provisioning/lvsprobe.yaml"])
    assert data["apiVersion"] == 1
    (provider,) = data["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
