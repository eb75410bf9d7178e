"""`lvsprobe dashboards generate [--check]` and `lvsprobe dashboards list`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.dashboards import render


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_generate_then_check_passes(tmp_path: Path) -> None:
    code, out, _ = _run("dashboards", "generate", "--out", str(tmp_path))
    assert code == 0
    assert f"{len(render.render_all())} file(s) written" in out
    assert (tmp_path / "provisioning" / "lvsprobe.yaml").is_file()
    assert _run("dashboards", "generate", "--out", str(tmp_path), "--check")[0] == 0
    code, out, _ = _run("dashboards", "generate", "--out", str(tmp_path))
    assert code == 0 and "0 file(s) written" in out


def test_check_exits_3_naming_stale_and_missing_files(tmp_path: Path) -> None:
    _run("dashboards", "generate", "--out", str(tmp_path))
    edited = tmp_path / "import" / "ipvs-overview.json"
    edited.write_text(edited.read_text().replace("IPVS overview", "IPVS overvieW"))
    (tmp_path / "provisioning" / "ipvs-service.json").unlink()
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, _, err = _run("dashboards", "generate", "--out", str(tmp_path), "--check")
    assert code == 3
    assert "import/ipvs-overview.json" in err and "provisioning/ipvs-service.json" in err
    assert "2 of" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # --check writes nothing


def test_check_of_an_empty_directory_fails(tmp_path: Path) -> None:
    assert _run("dashboards", "generate", "--out", str(tmp_path / "none"), "--check")[0] == 3


def test_list_json_names_every_panel_and_query() -> None:
    code, out, _ = _run("dashboards", "list", "--json")
    assert code == 0
    docs = json.loads(out)
    assert [d["uid"] for d in docs] == [
        "lvsprobe-ipvs-overview",
        "lvsprobe-ipvs-service",
        "lvsprobe-ipvs-conntable",
        "lvsprobe-ipvs-sync",
        "lvsprobe-replay-run",
    ]
    assert all(d["panels"] and d["queries"] for d in docs)
    code, out, _ = _run("dashboards", "list")
    assert code == 0 and "Share of new connections vs weight share" in out


def test_help_teaches() -> None:
    code, out, _ = _run("dashboards", "generate", "--help")
    assert code == 0 and "--check" in out and "exit 3" in out
