"""A real `lvsprobe replay run` against a loopback server, killed or interrupted mid-run: the
flows it finished are never lost (SIGKILL, two or three Ctrl-Cs, on both engines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lvsprobe.analyze.inputs import load_run
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.replay import flowlog, flowsummary

BOUND_S = 60.0  # a safety bound on every wait, never an expectation


@pytest.fixture(params=["epoll", "asyncio"])
def engine(request: pytest.FixtureRequest) -> str:
    """Both engines share the journal; tests on one engine name it with indirect params."""
    return str(request.param)


class _Replay:
    """`lvsprobe replay run` in a subprocess: 50 HTTP flows/s on loopback, bounded at 60 s."""

    def __init__(self, tmp_path: Path, port: int, engine: str) -> None:
        scenario = tmp_path / "s.yaml"
        scenario.write_text(
            f"name: signals\ntarget: {{address: 127.0.0.1, port: {port}}}\n"
            "clients: {cidr: 127.0.0.10/24, count: 4}\n"
            "flows: [{kind: http}]\n"
            "arrival: {model: open, rate: 50}\n"
            "bounds: {max_flows: 3000, max_duration: 60s}\n"
        )
        self.out = tmp_path / "run"
        self.stderr_path = tmp_path / "stderr"
        argv = [sys.executable, "-c", "from lvsprobe.cli import main; main()", "replay", "run"]
        argv += [str(scenario), "--out", str(self.out), "--no-progress", "--engine", engine]
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def journaled(self, at_least: int = 1) -> int:
        """Wait until the run's journal holds `at_least` flows (read as any reader would,
        while it is being written); how many it holds then."""
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.stderr()
            if (self.out / flowlog.JOURNAL_FILE).exists():
                rows = flowlog.read_flows(self.out).num_rows
                if rows >= at_least:
                    return rows
            time.sleep(0.05)
        pytest.fail(f"no {at_least} flows journaled within {BOUND_S} s: {self.stderr()}")

    def wait(self) -> int:
        return self.proc.wait(BOUND_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(BOUND_S)


@pytest.fixture
def replay(tmp_path: Path, servers: Any, engine: str) -> Iterator[_Replay]:
    run = _Replay(tmp_path, servers.http, engine)
    try:
        yield run
    finally:
        run.kill()


def _finished_flows(out: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = flowlog.read_flows(out).to_pylist()
    ids = [r["flow_id"] for r in rows]
    assert ids == sorted(set(ids))  # each flow once, in flow order
    return rows


def test_sigkill_keeps_the_finished_flows_and_summary_finishes_the_run(replay: _Replay) -> None:
    seen = replay.journaled(at_least=2)
    replay.proc.send_signal(signal.SIGKILL)
    assert replay.wait() == -signal.SIGKILL
    out = replay.out
    assert not (out / flowlog.FLOWS_FILE).exists() and not (out / flowlog.SUMMARY_FILE).exists()
    rows = _finished_flows(out)
    assert len(rows) >= seen and {r["outcome"] for r in rows} == {"ok"}
    rebuilt = flowsummary.read_summary(out)  # read-only: nothing written yet
    assert rebuilt["flows"] == len(rows) and rebuilt["planned"] == 3000
    assert not (out / flowlog.SUMMARY_FILE).exists()

    result = CliRunner().invoke(cli, ["replay", "summary", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["flows"] == len(rows) and summary["complete"] is False
    assert summary["stopped"] == "unfinished" and summary["scenario"] == "signals"
    assert not (out / flowlog.JOURNAL_FILE).exists()
    assert json.loads((out / flowlog.SUMMARY_FILE).read_text()) == summary
    assert load_run(out).flows["flow_id"].tolist() == [r["flow_id"] for r in rows]
    again = CliRunner().invoke(cli, ["replay", "summary", str(out)])
    assert again.exit_code == 0 and "(unfinished: rebuilt from its journal)" in again.output


@pytest.mark.parametrize("gap_s", [0.05, 0.3])
def test_a_second_ctrl_c_still_writes_the_finished_flows(replay: _Replay, gap_s: float) -> None:
    seen = replay.journaled(at_least=2)
    replay.proc.send_signal(signal.SIGINT)
    time.sleep(gap_s)
    replay.proc.send_signal(signal.SIGINT)
    assert replay.wait() == ExitCode.INTERRUPTED, replay.stderr()
    rows = _finished_flows(replay.out)
    assert len(rows) >= seen
    summary = json.loads((replay.out / flowlog.SUMMARY_FILE).read_text())
    assert summary["flows"] == len(rows) and summary["complete"] is False
    assert summary["stopped"] == "interrupted"
    assert {r["outcome"] for r in rows} <= {"ok", "error:interrupted"}
    assert not (replay.out / flowlog.JOURNAL_FILE).exists()
    assert "Traceback" not in replay.stderr()


@pytest.mark.parametrize("engine", ["asyncio"], indirect=True)
def test_a_third_ctrl_c_quits_and_loses_no_journaled_flow(replay: _Replay) -> None:
    seen = replay.journaled(at_least=2)
    for _ in range(3):  # whichever of them finds it still writing
        replay.proc.send_signal(signal.SIGINT)
        time.sleep(0.01)
    assert replay.wait() == ExitCode.INTERRUPTED, replay.stderr()
    assert len(_finished_flows(replay.out)) >= seen  # written, or still in the journal
    result = CliRunner().invoke(cli, ["replay", "summary", str(replay.out)])
    assert result.exit_code == 0, result.output
    assert (replay.out / flowlog.SUMMARY_FILE).exists()


@pytest.mark.parametrize("engine", ["epoll"], indirect=True)
def test_summary_of_a_run_in_progress_only_reads(replay: _Replay) -> None:
    replay.journaled()
    result = CliRunner().invoke(cli, ["replay", "summary", str(replay.out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["in_progress"] is True
    assert not (replay.out / flowlog.SUMMARY_FILE).exists()
    assert (replay.out / flowlog.JOURNAL_FILE).exists()
    os.kill(replay.proc.pid, signal.SIGINT)
    assert replay.wait() == ExitCode.INTERRUPTED


def test_stop_signals_stop_then_hurry_then_quit() -> None:
    """The escalation itself, in a process of its own (the third signal ends it)."""
    code = """
import os, signal
from pathlib import Path
from lvsprobe.replay.runner import StopSignals
stops = []
with StopSignals(Path("RUN"), 130) as signals:
    signals.on_stop(lambda: stops.append(signals.hurry()))
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)
    print(stops, signals.hurry(), flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    print("not reached", flush=True)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=BOUND_S
    )
    assert proc.returncode == ExitCode.INTERRUPTED, proc.stderr
    assert proc.stdout == "[False, True] True\n"
    assert "interrupted again: writing the finished flows now" in proc.stderr
    assert "quitting now" in proc.stderr and "`lvsprobe replay summary RUN`" in proc.stderr
