"""The lazy command group with extras missing: `status` and `export` run on the core install
alone, and a command of a missing extra says in one line which extra to install (exit 1)
instead of a traceback, while staying listed in --help."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from lvsprobe.cli import ANALYZE, REPLAY, SUBCOMMANDS, Subcommand, cli, needs_extra_message

ROOT = Path(__file__).resolve().parents[2]

# argv[1]: comma-separated modules made unimportable (as if not installed), the rest: lvsprobe's.
BLOCKED_RUN = """
import sys
for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None
sys.argv = ["lvsprobe", *sys.argv[2:]]
from lvsprobe.cli import main
main()
"""


def run_blocked(
    blocked: set[str] | tuple[str, ...], *args: str
) -> subprocess.CompletedProcess[str]:
    """`lvsprobe ARGS` in a fresh interpreter that cannot import `blocked`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN, ",".join(sorted(blocked)), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def canonical(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def optional_modules() -> set[str]:
    """Every top-level module a distribution named in any extra (test too) installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {
        canonical(re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0])
        for reqs in project["optional-dependencies"].values()
        for req in reqs
    } - {"lvsprobe"}  # extras made of extras
    return {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if any(canonical(d) in named for d in dists)
    }


def test_status_and_export_run_with_every_optional_module_blocked(nat_proc: Path) -> None:
    blocked = optional_modules()
    assert {"pandas", "pyarrow", "scipy", "scapy", "pyshark", "plotly", "dpkt"} <= blocked
    assert "grafana_foundation_sdk" in blocked and "prometheus_client" in blocked

    status = run_blocked(blocked, "status", "--procfs-root", str(nat_proc))
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("IP Virtual Server version 1.2.1")

    as_json = run_blocked(blocked, "status", "--json", "--procfs-root", str(nat_proc))
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["loaded"] is True

    scrape = run_blocked(
        blocked, "export", "--once", "--procfs-root", str(nat_proc), "--compat", "node-exporter"
    )
    assert scrape.returncode == 0, scrape.stderr
    assert "\nipvs_up 1\n" in scrape.stdout
    assert "node_ipvs_backend_weight{" in scrape.stdout


def test_a_command_of_a_missing_extra_names_the_extra_in_one_line() -> None:
    result = run_blocked({"pandas"}, "analyze", "fairness", "runs/rr", "--snapshot", "x.json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "lvsprobe analyze: needs the [analyze] extra: pip install 'lvsprobe[analyze]' "
        "(missing module pandas)\n"
    )


@pytest.mark.parametrize(
    "name", [name for name, sub in SUBCOMMANDS.items() if sub.extra is not None]
)
def test_every_command_with_an_extra_explains_it_even_for_help(name: str) -> None:
    extra = SUBCOMMANDS[name].extra
    assert extra is not None
    module = extra.modules[-1]
    for args in ((name, "--help"), (name, "run", "--no-such-flag", "x")):
        result = run_blocked({module}, *args)
        assert result.returncode == 1, result.stderr
        assert result.stderr == needs_extra_message(name, extra, module) + "\n"


def test_help_lists_every_command_and_marks_those_whose_extra_is_missing() -> None:
    result = run_blocked({"grafana_foundation_sdk", "pyshark"}, "--help")
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:\n", 1)[1]
    for name in SUBCOMMANDS:
        assert re.search(rf"^  {name} ", commands, re.MULTILINE), name
    marked = re.findall(r"\(needs\s+lvsprobe\[(\w+)\]\)", commands)
    # pyshark is in [replay] and so in [lab]; the Grafana SDK in [dashboards]
    assert sorted(marked) == ["dashboards", "lab", "replay"]


def test_help_marks_nothing_with_everything_installed() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "(needs" not in result.stdout


def _raising(module: str) -> click.Command:
    @click.command("replay")
    def broken() -> None:
        raise ModuleNotFoundError(f"No module named {module!r}", name=module)

    return broken


def test_a_broken_extra_found_but_not_importable_gets_the_same_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """find_spec sees the package, its import fails later (e.g. a submodule or its own
    dependency is gone): still one line naming the extra, not a traceback."""
    monkeypatch.setitem(
        SUBCOMMANDS, "replay", Subcommand(lambda: _raising("pyarrow.parquet"), "x", REPLAY)
    )
    result = CliRunner().invoke(cli, ["replay"])
    assert result.exit_code == 1
    assert result.stderr == needs_extra_message("replay", REPLAY, "pyarrow.parquet") + "\n"
    # a module of another extra is named with that extra
    monkeypatch.setitem(SUBCOMMANDS, "replay", Subcommand(lambda: _raising("scipy"), "x", REPLAY))
    result = CliRunner().invoke(cli, ["replay"])
    assert result.stderr == needs_extra_message("replay", ANALYZE, "scipy") + "\n"


def test_a_missing_module_no_extra_provides_is_a_bug_not_hidden(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(
        SUBCOMMANDS, "replay", Subcommand(lambda: _raising("lvsprobe.nowhere"), "x", REPLAY)
    )
    result = CliRunner().invoke(cli, ["replay"])
    assert isinstance(result.exception, ModuleNotFoundError)
