"""`lvsprobe lab` without booting: help that teaches, clear errors."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from lvsprobe.cli import cli


def test_help_shows_examples() -> None:
    result = CliRunner().invoke(cli, ["lab", "--help"])
    assert result.exit_code == 0
    assert "lvsprobe lab run --ns lvs1 -- ipvsadm -Ln --stats" in result.output
    for sub in ("prepare", "check", "run", "shell"):
        assert CliRunner().invoke(cli, ["lab", sub, "--help"]).exit_code == 0


def test_run_needs_a_command() -> None:
    result = CliRunner().invoke(cli, ["lab", "run"])
    assert result.exit_code == 2 and "COMMAND" in result.output


def test_bad_topology_file_is_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("mode: bridge\n")
    result = CliRunner().invoke(cli, ["lab", "run", "--topology", str(path), "--", "true"])
    assert result.exit_code == 1
    assert "mode: must be nat, dr or tun" in result.output and "Traceback" not in result.output
