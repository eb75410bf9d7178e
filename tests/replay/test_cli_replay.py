"""`lvsprobe replay run`: dry run, a real run into a run directory, errors, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.replay import flowlog


def _scenario(
    tmp_path: Path,
    port: int,
    flows: int = 12,
    rate: int = 200,
    duration: str = "20s",
    extra: str = "",
) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: cli\ntarget: {{address: 127.0.0.1, port: {port}}}\n"
        "clients: {cidr: 127.0.0.10/24, count: 4}\n"
        f"flows: [{{kind: http{extra}}}]\n"
        f"arrival: {{model: open, rate: {rate}}}\n"
        f"bounds: {{max_flows: {flows}, max_duration: {duration}}}\n"
    )
    return path


def test_dry_run_prints_plan(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["replay", "run", str(_scenario(tmp_path, 80)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "flows: 12" in result.output and "127.0.0.10" in result.output
    result = CliRunner().invoke(
        cli, ["replay", "run", str(_scenario(tmp_path, 80)), "--dry-run", "--json"]
    )
    assert json.loads(result.output)["clients_used"] == 4


@pytest.mark.parametrize("engine", ["auto", "asyncio"])
def test_run_writes_run_directory(tmp_path: Path, servers: Any, engine: str) -> None:
    out = tmp_path / "run"
    conn = tmp_path / "ip_vs_conn"
    conn.write_text(
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
    )
    result = CliRunner().invoke(
        cli,
        [
            "replay",
            "run",
            str(_scenario(tmp_path, servers.http)),
            "--out",
            str(out),
            "--json",
            "--conn-table",
            str(conn),
            "--snapshot-every",
            "0.1",
            "--engine",
            engine,
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["flows"] == 12 and summary["ok"] == 12 and summary["complete"] is True
    assert summary["backends"] == {"rs1": 12}
    frame = pd.read_parquet(out / flowlog.FLOWS_FILE)
    assert len(frame) == 12 and set(frame["outcome"]) == {"ok"}
    assert (out / flowlog.SCENARIO_FILE).read_text().startswith("name: cli")
    assert json.loads((out / flowlog.TARGET_FILE).read_text())["port"] == servers.http
    snapshots = json.loads((out / flowlog.SNAPSHOT_DIR / flowlog.SNAPSHOT_INDEX).read_text())
    assert len(snapshots) >= 1
    assert summary["conn_table_matched"] == 0  # an empty table matches nothing


def test_errors_are_one_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("target: {address: 127.0.0.1, port: 80}\nclients: {cidr: 10.0.0.0/8}\n")
    result = CliRunner().invoke(cli, ["replay", "run", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == ExitCode.ERROR
    assert "bad.yaml" in result.stderr and "Traceback" not in result.stderr
    missing = _scenario(tmp_path, 80).read_text().replace("127.0.0.10/24", "198.18.250.1/24")
    bad.write_text(missing)
    result = CliRunner().invoke(cli, ["replay", "run", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == ExitCode.ERROR
    assert "not configured on this host: 198.18.250.1" in result.stderr
    result = CliRunner().invoke(cli, ["replay", "run", str(bad)])
    assert result.exit_code == ExitCode.USAGE and "--out" in result.stderr


def test_epoll_engine_refuses_kinds_it_cannot_drive(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, 443).read_text().replace("kind: http", "kind: tls")
    (tmp_path / "tls.yaml").write_text(scenario)
    argv = ["replay", "run", str(tmp_path / "tls.yaml"), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*argv, "--engine", "epoll", "--skip-pool-check"])
    assert result.exit_code == ExitCode.USAGE
    assert "--engine epoll cannot drive tls flows" in result.stderr


def test_ctrl_c_leaves_a_valid_partial_log(tmp_path: Path, servers: Any) -> None:
    scenario = _scenario(tmp_path, servers.http, flows=100000, rate=20, duration="10m")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from lvsprobe.cli import main; main()",
            "replay",
            "run",
            str(scenario),
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    # wait for the first progress line: the run is under way (bounded: it reports every 5 s)
    first = proc.stderr.readline()
    assert b"flows" in first
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    frame = pd.read_parquet(out / flowlog.FLOWS_FILE)
    summary = json.loads((out / flowlog.SUMMARY_FILE).read_text())
    assert 0 < len(frame) < 100000 and summary["complete"] is False
    assert summary["stopped"] == "interrupted" and summary["flows"] == len(frame)
    assert set(frame["outcome"]) <= {"ok", "error:interrupted"}


def test_timed_commands_land_in_events_json(tmp_path: Path, servers: Any) -> None:
    """`--at` runs commands during the replay (a real cluster's failover trigger) and records
    when, for `lvsprobe analyze failover`; failures and commands past the end are warned of."""
    out = tmp_path / "run"
    scenario = tmp_path / "held.yaml"
    scenario.write_text(
        f"name: held\ntarget: {{address: 127.0.0.1, port: {servers.tcp}}}\n"
        "clients: {cidr: 127.0.0.10/24, count: 4}\n"
        "flows: [{kind: tcp, hold: 1500ms, heartbeat: 100ms, payload_bytes: 16}]\n"
        "arrival: {model: open, rate: 20}\n"
        "bounds: {max_flows: 4, max_duration: 20s}\n"
    )
    result = CliRunner().invoke(
        cli,
        [
            "replay",
            "run",
            str(scenario),
            "--out",
            str(out),
            "--no-progress",
            "--at",
            f"0.8:failover:touch {tmp_path / 'moved'}",
            "--at",
            "1.0:failback:echo no route >&2; exit 3",
            "--at",
            "3600:never:true",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "moved").exists()
    events = json.loads((out / "events.json").read_text())["events"]
    assert [e["event"] for e in events] == ["failover", "failback"]
    assert [e["exit_status"] for e in events] == [0, 3]
    assert events[0]["t_s"] <= events[0]["done_s"] <= events[1]["t_s"] <= events[1]["done_s"]
    assert "--at 1:failback: no route" in result.stderr
    assert "--at 3600:never: not run, the replay had ended" in result.stderr
    analysed = CliRunner().invoke(
        cli, ["analyze", "failover", str(out), "--sync", "off", "--out", str(tmp_path / "a")]
    )
    assert analysed.exit_code in (ExitCode.OK, ExitCode.CHECK_FAILED), analysed.output
    assert "failover" in analysed.output


@pytest.mark.parametrize(
    "bad", ["30", "x:failover:true", "30::true", "30:failover:", "-1:failover:true"]
)
def test_timed_command_errors_name_the_value(tmp_path: Path, bad: str) -> None:
    argv = ["replay", "run", str(_scenario(tmp_path, 80)), "--out", str(tmp_path / "o")]
    result = CliRunner().invoke(cli, [*argv, "--at", bad])
    assert result.exit_code == ExitCode.USAGE
    assert "--at" in result.output and repr(bad) in result.output


def test_the_cli_process_ends_without_a_last_walk_over_its_heap() -> None:
    """main() freezes the heap as it returns: the interpreter's last full collection would
    otherwise walk every flow record and planned flow of a long run (half a second and more)."""
    code = (
        "import gc, sys\nfrom lvsprobe.cli import main\nsys.argv = ['lvsprobe', '--version']\n"
        "kept = [[] for _ in range(1000)]\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(gc.get_freeze_count() >= 1000)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("True")


def test_a_run_without_metrics_listen_does_not_import_the_http_server(
    tmp_path: Path, servers: Any
) -> None:
    """The exporter's HTTP server (55 ms of an engine process's start-up) serves
    --metrics-listen only."""
    scenario = _scenario(tmp_path, servers.http, flows=2)
    code = (
        "import atexit, sys\nfrom lvsprobe.cli import main\n"
        "atexit.register(lambda: print('lvsprobe.exporter.server' in sys.modules))\nmain()\n"
    )
    argv = ["replay", "run", str(scenario), "--out", str(tmp_path / "run"), "--no-progress",
            "--engine", "epoll", "--skip-pool-check"]  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("False"), out.stdout
