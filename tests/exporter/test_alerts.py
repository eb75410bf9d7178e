"""exporters/prometheus/ipvs-alerts.yml against the exporter's metric table: the rules and their
promtool tests name only series `lvsprobe export` serves."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from lvsprobe.exporter.metrics import BY_NAME

PROMETHEUS = Path(__file__).resolve().parents[2] / "exporters" / "prometheus"


_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def test_rules_use_metrics_the_exporter_emits() -> None:
    """Every ipvs_* name in the rules and in their tests' input is one the exporter serves (or a
    series the rules record), so a renamed metric cannot leave a rule silently empty."""
    rules = yaml.safe_load((PROMETHEUS / "ipvs-alerts.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    tests = yaml.safe_load((PROMETHEUS / "ipvs-alerts.test.yml").read_text())
    inputs = [s["series"] for case in tests["tests"] for s in case["input_series"]]
    used = {
        name
        for text in exprs + inputs
        for name in _METRIC_NAME.findall(text)
        if name.startswith("ipvs_")
    }
    assert used - recorded <= set(BY_NAME), sorted(used - recorded - set(BY_NAME))
    assert {"ipvs_service_backends", "ipvs_service_usable_backends"} <= used
