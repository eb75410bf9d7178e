"""Ctrl-C on `replay run --workers local:2`: sent to the whole process group, as a terminal
sends it (the LocalCluster's worker processes get it too). The run stops within a bounded
time, its shards are cancelled, what it has is written and marked interrupted as a
single-process run's is, it exits 130, and no Dask process is left behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lvsprobe.cli.exit import ExitCode
from lvsprobe.replay import flowlog

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 120.0  # safety bound on every wait, never an expectation


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_on_a_workers_run_writes_what_it_has_and_leaves_no_worker(
    tmp_path: Path, servers: Any
) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        f"name: scale-signals\ntarget: {{address: 127.0.0.1, port: {servers.http}}}\n"
        "clients: {cidr: 127.0.0.60/24, count: 4}\n"
        "flows: [{kind: http}]\n"
        "arrival: {model: open, rate: 50}\n"
        "bounds: {max_flows: 3000, max_duration: 60s}\n"
    )
    out, stderr_path = tmp_path / "run", tmp_path / "stderr"
    argv = [sys.executable, "-c", "from lvsprobe.cli import main; main()", "replay", "run"]
    argv += [str(scenario), "--out", str(out), "--no-progress", "--workers", "local:2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + BOUND_S
        while not (out / flowlog.JOURNAL_FILE).exists() or not flowlog.read_flows(out).num_rows:
            assert proc.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "no flow journaled within the bound"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole group
        assert proc.wait(BOUND_S) == ExitCode.INTERRUPTED, stderr_path.read_text()
        gone_by = time.monotonic() + 30
        while _group_alive(proc.pid) and time.monotonic() < gone_by:
            time.sleep(0.1)
        assert not _group_alive(proc.pid), "a Dask worker process outlived the run"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    text = stderr_path.read_text()
    assert "Traceback" not in text, text
    summary = json.loads((out / flowlog.SUMMARY_FILE).read_text())
    assert summary["stopped"] == "interrupted" and summary["complete"] is False
    rows = flowlog.read_flows(out).to_pylist()
    ids = [r["flow_id"] for r in rows]
    assert ids == sorted(set(ids)) and summary["flows"] == len(rows) < 3000
    assert {r["outcome"] for r in rows} <= {"ok", "error:interrupted"}
    assert all(r["worker"] for r in rows)  # the merged log names each flow's worker
    assert not (out / flowlog.JOURNAL_FILE).exists()
