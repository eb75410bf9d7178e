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


def test_drill_help_and_flags_without_booting(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["lab", "drill", "--help"])
    assert res.exit_code == 0 and "lvsprobe lab drill health --out runs/nanny" in res.output
    for sub in ("failover", "health"):
        assert CliRunner().invoke(cli, ["lab", "drill", sub, "--help"]).exit_code == 0
    out = str(tmp_path / "run")
    res = CliRunner().invoke(cli, ["lab", "drill", "health", "--victim", "rs9", "--out", out])
    assert res.exit_code == 2 and "--victim" in res.output and "rs1..rs3" in res.output
    manual = tmp_path / "manual.yaml"
    manual.write_text("ha: manual\n")
    args = ["lab", "drill", "failover", "--topology", str(manual), "--fault", "freeze"]
    res = CliRunner().invoke(cli, [*args, "--out", out])
    assert res.exit_code == 2 and "needs keepalived" in res.output
