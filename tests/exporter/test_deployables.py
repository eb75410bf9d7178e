"""exporters/: alert rules pass their promtool unit tests, configs and manifests are valid and
use only flags `lvsprobe export` has, on its default port."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lvsprobe.cli.export import DEFAULT_PORT, export
from lvsprobe.exporter.webconfig import read_web_config

EXPORTERS = Path(__file__).resolve().parents[2] / "exporters"
PROMETHEUS = EXPORTERS / "prometheus"


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )


def test_alert_rules_unit_tests(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", "ipvs-alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_check(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", "ipvs-alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    rules = yaml.safe_load((PROMETHEUS / "ipvs-alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "ipvs-alerts.test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]}
    assert alerts == tested
    assert {
        "ServiceWithoutUsableBackend",
        "BackendWeightZeroStillActive",
        "BackendImbalance",
        "ConnTableMemoryHigh",
        "SyncDaemonDown",
        "ExporterSourceFailing",
    } <= alerts


def test_scrape_config(promtool: str) -> None:
    result = _promtool(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f":{DEFAULT_PORT}" in (PROMETHEUS / "prometheus.yml").read_text()


def _known_flags() -> set[str]:
    return {opt for param in export.params for opt in (*param.opts, *param.secondary_opts)}


def _check_args(args: list[str]) -> None:
    known = _known_flags()
    for arg in args:
        if arg.startswith("--"):
            assert arg.split("=", 1)[0] in known, arg
        if arg.startswith("--web.listen-address="):
            assert arg.endswith(f":{DEFAULT_PORT}")


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    spec = spec.get("template", {}).get("spec", spec)
    return [c for c in spec.get("containers", []) if c["name"] == "lvsprobe-export"]


@pytest.mark.parametrize("name", ["daemonset.yaml", "sidecar.yaml", "podmonitor.yaml"])
def test_kubernetes_manifests(name: str) -> None:
    docs = [d for d in yaml.safe_load_all((EXPORTERS / "kubernetes" / name).read_text()) if d]
    assert docs and all("apiVersion" in d and "kind" in d for d in docs)
    for doc in docs:
        for container in _containers(doc):
            _check_args(container["args"])
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True
            assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
            assert container["ports"][0]["containerPort"] == DEFAULT_PORT


def test_systemd_unit() -> None:
    text = (EXPORTERS / "systemd" / "lvsprobe-export.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.M)
    assert exec_start is not None
    argv = shlex.split(exec_start.group(1))
    assert argv[1] == "export"
    _check_args(argv[2:])
    for line in (
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "DynamicUser=yes",
        "ProtectSystem=strict",
    ):
        assert f"\n{line}\n" in text


def test_containerfile() -> None:
    """No base image, a fixed non-root user, and no file capabilities (they need privilege
    escalation): CAP_NET_ADMIN comes from the runtime."""
    text = (EXPORTERS / "Containerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line[:1].isalpha()]
    assert instructions[0] == ["FROM", "scratch"]
    assert ["USER", "65532:65532"] in instructions
    assert ["EXPOSE", str(DEFAULT_PORT)] in instructions
    assert ["ENTRYPOINT", '["/opt/lvsprobe/bin/lvsprobe", "export"]'] in instructions
    assert not {"RUN"} & {keyword for keyword, *_ in instructions}
    assert "setcap" not in (EXPORTERS / "build-image.sh").read_text()


def test_example_web_config_keys(tmp_path: Path) -> None:
    data = yaml.safe_load((EXPORTERS / "web-config.example.yml").read_text())
    assert set(data) == {"tls_server_config", "http_server_config", "basic_auth_users"}
    del data["tls_server_config"]  # its files are the user's
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump(data))
    web = read_web_config(path)
    assert web.auth is not None and "prometheus" in web.auth.users
