"""exporters/: alert rules pass their promtool unit tests, configs and manifests are valid and
use only flags `lvsprobe export` has, on its default port."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lvsprobe.cli.export import DEFAULT_PORT, export
from lvsprobe.errors import ParseError
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
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS / "ipvs-alerts.test.yml").read_text())
    tested = {t["alertname"] for case in tests["tests"] for t in case["alert_rule_test"]}
    assert alerts == tested
    assert {
        "ExporterDown",
        "ExporterAbsent",
        "ServiceWithoutUsableBackend",
        "NamedServiceWithoutBackends",
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


SYSTEMD_UNIT = EXPORTERS / "systemd" / "lvsprobe-export.service"
# systemd-analyze security's exposure, 0-100 (1.7 shown as 17); up to 20 is its "OK" band.
MAX_EXPOSURE = 20


def test_systemd_unit() -> None:
    text = SYSTEMD_UNIT.read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.M)
    assert exec_start is not None
    argv = shlex.split(exec_start.group(1))
    assert argv[:2] == ["/usr/local/bin/lvsprobe", "export"]
    _check_args(argv[2:])
    for line in (
        "AmbientCapabilities=CAP_NET_ADMIN",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "NoNewPrivileges=yes",
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
    ):
        assert f"\n{line}\n" in text
    readme = (EXPORTERS / "README.md").read_text()
    assert "ln -s /opt/lvsprobe/bin/lvsprobe /usr/local/bin/lvsprobe" in readme


@pytest.fixture
def systemd_root(tmp_path: Path) -> Path:
    """A root for `systemd-analyze --root`: the host's system units, the unit, and a stand-in
    /usr/local/bin/lvsprobe (verify checks that ExecStart= is executable)."""
    systemd_analyze = shutil.which("systemd-analyze")
    if systemd_analyze is None:
        pytest.skip("systemd-analyze missing: make test installs systemd")
    units = Path("/usr/lib/systemd/system")
    shutil.copytree(units, tmp_path / units.relative_to("/"), symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(SYSTEMD_UNIT, tmp_path / "etc/systemd/system")
    program = tmp_path / "usr/local/bin/lvsprobe"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return tmp_path


def _systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_systemd_unit_verifies(systemd_root: Path) -> None:
    """No error and no warning (an unknown key is only a warning: it must fail here too)."""
    result = _systemd_analyze("verify", f"--root={systemd_root}", SYSTEMD_UNIT.name)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_systemd_unit_exposure(systemd_root: Path) -> None:
    result = _systemd_analyze(
        "security",
        "--offline=true",
        f"--threshold={MAX_EXPOSURE}",
        f"--root={systemd_root}",
        SYSTEMD_UNIT.name,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


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
    with pytest.raises(ParseError, match=r"basic_auth_users\.prometheus: .*placeholder.*htpasswd"):
        read_web_config(path)  # the placeholder hash is refused, not a silent 401 per scrape
    data["basic_auth_users"]["prometheus"] = "$2y$10$" + "." * 53
    path.write_text(yaml.safe_dump(data))
    web = read_web_config(path)
    assert web.auth is not None and "prometheus" in web.auth.users
