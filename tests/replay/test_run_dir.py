"""`replay run --out`: a run directory that cannot be written is refused before any packet is
sent; one holding a run is refused unless --force; --snapshot-every is a sane interval."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.replay import flowlog
from lvsprobe.replay.rundir import lock_run_dir


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback server that only counts: a connection it could accept means traffic."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        yield sock


def _no_traffic(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


def _scenario(tmp_path: Path, port: int, flows: int = 3) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: out\ntarget: {{address: 127.0.0.1, port: {port}}}\n"
        "clients: {cidr: 127.0.0.10/24, count: 2}\n"
        "flows: [{kind: tcp, payload_bytes: 4}]\n"
        "arrival: {model: open, rate: 100}\n"
        f"bounds: {{max_flows: {flows}, max_duration: 20s, flow_timeout: 2s}}\n"
    )
    return path


def _run(scenario: Path, out: Path, *extra: str) -> object:
    argv = ["replay", "run", str(scenario), "--out", str(out), "--no-progress", *extra]
    return CliRunner().invoke(cli, argv)


@pytest.mark.parametrize(
    ("out", "reason"),
    [
        ("/proc/lvsprobe-x", "cannot create the run directory"),
        ("afile/sub", "cannot create the run directory: Not a directory"),
        # sysfs takes no regular files, not even root's: a read-only directory for any user
        ("/sys/kernel", "not writable"),
    ],
)
def test_an_unwritable_out_is_refused_before_any_packet(
    tmp_path: Path, listener: socket.socket, out: str, reason: str
) -> None:
    (tmp_path / "afile").write_text("")
    target = tmp_path / out if not out.startswith("/") else Path(out)
    result = _run(_scenario(tmp_path, listener.getsockname()[1]), target)
    assert result.exit_code == ExitCode.ERROR, result.output  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    assert err.startswith(f"lvsprobe: --out {target}: {reason}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _no_traffic(listener)


def _old_run(out: Path) -> None:
    """What a finished, analysed run leaves, and a file of the user's beside it."""
    (out / flowlog.SNAPSHOT_DIR).mkdir(parents=True)
    (out / flowlog.SNAPSHOT_DIR / "0000.txt").write_text("old")
    (out / "analysis").mkdir()
    (out / "analysis" / "fairness.json").write_text("{}")
    for name in (flowlog.FLOWS_FILE, flowlog.SUMMARY_FILE, "events.json", "report.html"):
        (out / name).write_text("old")
    (out / "notes.txt").write_text("mine")


def test_a_directory_holding_a_run_is_refused_unless_force(tmp_path: Path, servers: object) -> None:
    out = tmp_path / "run"
    _old_run(out)
    scenario = _scenario(tmp_path, servers.tcp)  # type: ignore[attr-defined]
    result = _run(scenario, out)
    assert result.exit_code == ExitCode.ERROR  # type: ignore[attr-defined]
    err = result.stderr  # type: ignore[attr-defined]
    assert "already holds a run (flows.parquet, summary.json" in err and "--force" in err
    assert (out / flowlog.FLOWS_FILE).read_text() == "old"  # untouched
    result = _run(scenario, out, "--force", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert json.loads(result.stdout)["flows"] == 3  # type: ignore[attr-defined]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            flowlog.FLOWS_FILE,
            flowlog.SCENARIO_FILE,
            flowlog.SUMMARY_FILE,
            flowlog.TARGET_FILE,
            "notes.txt",  # not lvsprobe's: kept
        ]
    )
    assert flowlog.read_flows(out).num_rows == 3


def test_pre_run_files_of_other_tools_are_not_a_run(tmp_path: Path, servers: object) -> None:
    """`lvsprobe demo` writes director.json into the run directory before the replay."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "director.json").write_text("{}")
    result = _run(_scenario(tmp_path, servers.tcp), out)  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert (out / "director.json").read_text() == "{}"


def test_a_directory_being_written_is_refused_even_with_force(
    tmp_path: Path, listener: socket.socket
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    held = lock_run_dir(out)  # what a running `replay run` holds
    assert held is not None
    try:
        result = _run(_scenario(tmp_path, listener.getsockname()[1]), out, "--force")
        assert result.exit_code == ExitCode.ERROR  # type: ignore[attr-defined]
        assert "a running `lvsprobe replay run` is writing it" in result.stderr  # type: ignore[attr-defined]
        attributed = CliRunner().invoke(cli, ["replay", "attribute", str(out)])
        assert attributed.exit_code == ExitCode.ERROR
    finally:
        os.close(held)
    assert _no_traffic(listener)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "0.05"])
def test_snapshot_every_must_be_a_sane_interval(tmp_path: Path, value: str) -> None:
    out = tmp_path / "run"
    result = _run(_scenario(tmp_path, 9), out, "--snapshot-every", value)
    assert result.exit_code == ExitCode.USAGE  # type: ignore[attr-defined]
    assert "--snapshot-every" in result.stderr and ">= 0.1" in result.stderr  # type: ignore[attr-defined]
    assert not out.exists()
