"""`lvsprobe analyze persistence` asks only for options it has (it said "pass --scheduler")."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.cli.analyze import persistence
from lvsprobe.cli.exit import ExitCode
from lvsprobe.replay.flowlog import FLOWS_FILE, FlowLogWriter, FlowRecord
from lvsprobe.replay.flowsummary import summarize, write_summary


def _run_dir(tmp_path: Path) -> Path:
    """A run with flows but no director snapshot and no scheduler in target.json."""
    run = tmp_path / "run"
    run.mkdir()
    records = [
        FlowRecord(
            flow_id=k,
            kind="tcp",
            client_address=f"198.18.16.{k % 3 + 1}",
            client_port=40000 + k,
            server_address="198.18.1.100",
            server_port=80,
            protocol="tcp",
            scheduled_s=float(k),
            start_s=float(k),
            start_unix=1_700_000_000.0 + k,
            connect_s=0.001,
            end_s=k + 0.01,
            outcome="ok",
            backend=f"rs{k % 3 + 1}",
        )
        for k in range(6)
    ]
    writer = FlowLogWriter(run / FLOWS_FILE)
    for record in records:
        writer.add(record)
    writer.close()
    write_summary(run, summarize(records))
    (run / "target.json").write_text(json.dumps({"address": "198.18.1.100", "port": 80}))
    return run


def _options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", ())}


def test_unknown_timeout_names_only_options_the_command_has(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["analyze", "persistence", str(_run_dir(tmp_path))])
    assert res.exit_code == ExitCode.ERROR
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "persistence timeout (-p) is unknown" in res.stderr
    # the flags it asks for (a quoted command such as `lvsprobe status --json` is not one)
    asked = set(re.findall(r"--[a-z][a-z-]*", re.sub(r"`[^`]*`", "", res.stderr)))
    assert asked == {"--snapshot", "--timeout"}
    assert asked <= _options(persistence)


def test_the_options_the_message_names_work(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    res = CliRunner().invoke(cli, ["analyze", "persistence", str(run), "--timeout", "300"])
    assert res.exit_code == ExitCode.OK, res.output
    snapshot = tmp_path / "director.json"
    service = {
        "protocol": "TCP",
        "address": "198.18.1.100",
        "port": 80,
        "fwmark": 0,
        "scheduler": "rr",
        "flags": 0,
        "persistent": {"timeout_s": 300, "timeout_jiffies": None, "prefix_len": 32},
        "backends": [{"address": f"10.0.0.{i}", "port": 80, "weight": 1} for i in (1, 2, 3)],
    }
    snapshot.write_text(json.dumps({"services": [service]}))
    res = CliRunner().invoke(cli, ["analyze", "persistence", str(run), "--snapshot", str(snapshot)])
    assert res.exit_code == ExitCode.OK, res.output
