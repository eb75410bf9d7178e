"""The VRRP failovers annotation on promtool's PromQL engine: a failover keepalived counted, and
a restarted keepalived taking its instance back (its counter starts again at 1)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lvsprobe.dashboards import promql
from lvsprobe.dashboards.proof import grafana_values
from lvsprobe.dashboards.sync import failover_annotation

pytestmark = pytest.mark.needs_bin("promtool")

# 15 s steps. lvs1: MASTER, keepalived stopped at 2m15s (the scrape says stale), back as MASTER
# at 3m45s with its counter at 1 again. lvs2: BACKUP, MASTER from 2m30s to 3m45s (counted).
SERIES = {
    ("lvs1", "ipvs_keepalived_vrrp_become_master_total"): "1x8 stale _x4 1x16",
    ("lvs1", "ipvs_keepalived_vrrp_state"): "1x8 stale _x4 1x16",
    ("lvs2", "ipvs_keepalived_vrrp_become_master_total"): "0x9 1x20",
    ("lvs2", "ipvs_keepalived_vrrp_state"): "0x9 1x4 0x15",
}


def _input_series() -> list[dict[str, str]]:
    out = []
    for (director, metric), values in SERIES.items():
        state = ',vrrp_state="master"' if metric.endswith("_state") else ""
        labels = f'instance="{director}",netns="",vrrp_instance="VI_1"{state}'
        out.append({"series": f"{metric}{{{labels}}}", "values": values})
    return out


def _sample(director: str) -> dict[str, object]:
    """A marked instance as promtool prints it (netns="" is no label)."""
    return {"labels": f'{{instance="{director}",vrrp_instance="VI_1"}}', "value": 1}


@pytest.mark.parametrize(
    ("eval_time", "marked"),
    [
        ("1m30s", []),  # steady: nothing became MASTER within the minute before
        ("3m", ["lvs2"]),  # lvs2's counted takeover
        ("4m", ["lvs1"]),  # lvs1 back after a restart: MASTER now, absent a minute ago
        ("5m30s", []),  # both steady again
    ],
)
def test_the_annotation_marks_each_time_an_instance_became_master(
    tmp_path: Path, eval_time: str, marked: list[str]
) -> None:
    expr = promql.interpolate(
        failover_annotation().build().expr or "",
        grafana_values(["lvs1", "lvs2"], "", range_s=600),
    )
    samples = [_sample(director) for director in marked]
    test = {
        "interval": "15s",
        "input_series": _input_series(),
        "promql_expr_test": [{"expr": expr, "eval_time": eval_time, "exp_samples": samples}],
    }
    path = tmp_path / "annotation.test.yml"
    path.write_text(json.dumps({"rule_files": [], "tests": [test]}))  # YAML is a superset
    done = subprocess.run(
        ["promtool", "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
