"""Packaging: pyproject's extras agree with the CLI's, and the wheel, installed without extras
into a fresh venv, holds none of the optional packages and runs the sidecar (`status`, and
`export` scraped once over loopback with basic auth, which needs bcrypt)."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import re
import select
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from lvsprobe.cli import EXTRAS, SUBCOMMANDS

ROOT = Path(__file__).resolve().parents[1]
PROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# Generous safety bounds (pip may download on a cold cache); nothing asserts on speed.
PIP_TIMEOUT_S = 600
RUN_TIMEOUT_S = 120


def canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def requirement(text: str) -> tuple[str, set[str]]:
    """A requirement's canonical distribution name and the extras it asks for."""
    match = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", text)
    assert match, text
    extras = {e.strip() for e in (match[2] or "").split(",") if e.strip()}
    return canonical(match[1]), extras


def extra_distributions(extra: str) -> set[str]:
    """The distributions an extra installs, through `lvsprobe[...]` extras of extras."""
    out: set[str] = set()
    for text in PROJECT["optional-dependencies"][extra]:
        name, extras = requirement(text)
        if name == "lvsprobe":
            out |= set().union(*(extra_distributions(e) for e in extras))
        else:
            out.add(name)
    return out


def modules_of(distribution: str) -> set[str]:
    """Top-level modules an installed distribution provides."""
    return {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if distribution in {canonical(d) for d in dists}
    }


def test_extras_of_pyproject_and_of_the_cli_are_the_same() -> None:
    assert set(PROJECT["optional-dependencies"]) == {e.name for e in EXTRAS} | {"all", "test"}
    everything = set().union(*(extra_distributions(e.name) for e in EXTRAS))
    assert extra_distributions("all") == everything


@pytest.mark.parametrize("extra", EXTRAS, ids=lambda e: e.name)
def test_each_extra_installs_exactly_the_modules_its_commands_look_for(extra: Any) -> None:
    by_distribution = {
        d: modules_of(d) & set(extra.modules) for d in extra_distributions(extra.name)
    }
    assert all(by_distribution.values()), f"provides none of {extra.modules}: {by_distribution}"
    assert set().union(*by_distribution.values()) == set(extra.modules)


def test_the_core_shares_no_distribution_with_an_extra() -> None:
    core = {requirement(text)[0] for text in PROJECT["dependencies"]}
    assert core == {"click", "pyyaml", "bcrypt", "numpy", "h11", "isal"}
    for extra in [*(e.name for e in EXTRAS), "test"]:
        assert not core & extra_distributions(extra), extra


def test_the_commands_of_the_core_install_need_no_extra() -> None:
    core_commands = {name for name, sub in SUBCOMMANDS.items() if sub.extra is None}
    assert {"status", "export"} <= core_commands


# --- the wheel in a clean venv -------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH: the venv runs its own copy of lvsprobe (and the
    commands run in "/", so `python -c` does not find the checkout in its directory either)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        env=_clean_env(),
        cwd="/",
    )
    assert result.returncode == 0, f"{argv}: exit {result.returncode}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built once per session the way a release is: sdist first, wheel from it."""
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    (built,) = out.glob("lvsprobe-*.whl")
    return built


@pytest.fixture(scope="session")
def core_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and no extras (pip from this interpreter, pip's cache)."""
    venv = tmp_path_factory.mktemp("core-venv")
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "-q", wheel)
    return venv


@pytest.mark.wheel
def test_the_core_venv_has_no_optional_package(core_venv: Path) -> None:
    listed = _run(
        sys.executable, "-m", "pip", "--python", core_venv / "bin/python", "list", "--format=json"
    )
    installed = {canonical(p["name"]) for p in json.loads(listed.stdout)}
    optional = set().union(*(extra_distributions(e) for e in PROJECT["optional-dependencies"]))
    assert {"lvsprobe", "click", "pyyaml", "bcrypt", "numpy", "h11"} <= installed
    assert not installed & optional, (
        f"optional packages in the core install: {installed & optional}"
    )
    where = _run(core_venv / "bin/python", "-c", "import lvsprobe; print(lvsprobe.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(core_venv), "ran the checkout, not the wheel"


@pytest.mark.wheel
def test_status_runs_from_the_core_venv(core_venv: Path, nat_proc: Path) -> None:
    lvsprobe = core_venv / "bin/lvsprobe"
    text = _run(lvsprobe, "status", "--procfs-root", nat_proc)
    assert text.stdout.startswith("IP Virtual Server version 1.2.1")
    as_json = _run(lvsprobe, "status", "--json", "--procfs-root", nat_proc)
    assert json.loads(as_json.stdout)["loaded"] is True


@pytest.mark.wheel
def test_a_command_of_an_extra_says_what_to_install_from_the_core_venv(core_venv: Path) -> None:
    result = subprocess.run(
        [core_venv / "bin/lvsprobe", "analyze", "memory", "runs/fill"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd="/",
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "lvsprobe analyze: needs the [analyze] extra: pip install 'lvsprobe[analyze]'"
    )


@pytest.fixture
def exporter(core_venv: Path, nat_proc: Path, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`lvsprobe export` from the core venv on 127.0.0.1 (a port the kernel picks), with basic
    auth; yields its URL and the Authorization header, and stops it."""
    hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(f"basic_auth_users:\n  prometheus: '{hashed}'\n")
    proc = subprocess.Popen(
        [
            core_venv / "bin/lvsprobe",
            *("export", "--procfs-root", nat_proc, "--web.config.file", config),
            *("--web.listen-address", "127.0.0.1:0"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_clean_env(),
        cwd="/",
    )
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        log = ""
        while "listening:" not in log and proc.poll() is None and time.monotonic() < deadline:
            if select.select([proc.stderr], [], [], 1.0)[0]:
                log += proc.stderr.readline()
        address = re.search(r"listening: address=(127\.0\.0\.1:\d+)", log)
        if address is None:
            log += proc.stderr.read() if proc.poll() is not None else ""
            pytest.fail(f"the exporter did not say where it listens:\n{log}")
        credentials = base64.b64encode(b"prometheus:secret").decode()
        yield f"http://{address[1]}/metrics", f"Basic {credentials}"
    finally:
        proc.terminate()
        proc.wait(timeout=RUN_TIMEOUT_S)


@pytest.mark.wheel
def test_export_from_the_core_venv_serves_metrics(exporter: tuple[str, str]) -> None:
    url, authorization = exporter
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    with urllib.request.urlopen(request, timeout=RUN_TIMEOUT_S) as response:
        assert response.status == 200
        body = response.read().decode()
    assert "\nipvs_up 1\n" in body
    assert "ipvs_backend_weight{" in body
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=RUN_TIMEOUT_S)
    assert refused.value.code == 401
