"""`replay run --workers` on a real Dask cluster on loopback: a `dask scheduler` and two
`dask worker` processes on 127.0.0.1 (started here, bounded, always stopped), the loopback
servers of conftest.py, client addresses from 127.0.0.0/8 (each worker a disjoint slice).

One run split across the two workers: every planned flow once in one flows.parquet, the
`worker` column, the start skew recorded, the analyzers and --check on the merged log. A
worker killed mid-run: the failed-shard line, exit 1, the survivor's flows all in the log.
Then the refusals: a worker with none of the pool's addresses, and no [scale] extra."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lvsprobe.replay import flowlog
from lvsprobe.replay.journal import read_journal

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0  # safety bounds only: Dask processes start in seconds
RUN_TIMEOUT_S = 120.0
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@dataclass
class Cluster:
    address: str
    workers: dict[str, subprocess.Popen[bytes]]


def _dask(*argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "dask", *argv],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_for(what: str, done: object, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A `dask scheduler` on 127.0.0.1 (an ephemeral port, read from its scheduler file)."""
    path = tmp_path_factory.mktemp("dask") / "scheduler.json"
    proc = _dask(
        "scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-dashboard",
        "--scheduler-file",
        str(path),
    )
    try:
        _wait_for("the scheduler's file", lambda: path.is_file() and path.stat().st_size > 0)
        yield json.loads(path.read_text())["address"]
    finally:
        _stop(proc)


@pytest.fixture
def cluster(scheduler: str) -> Iterator[Cluster]:
    """Two `dask worker` processes, a and b, one thread each, no nanny (a killed worker
    stays dead), joined to the scheduler; stopped after the test."""
    from distributed import Client

    names = ("a", "b")
    workers = {
        name: _dask(
            "worker",
            scheduler,
            "--name",
            name,
            "--nthreads",
            "1",
            "--no-nanny",
            "--host",
            "127.0.0.1",
            "--no-dashboard",
        )
        for name in names
    }
    try:
        with Client(scheduler, timeout=START_TIMEOUT_S) as client:

            def joined() -> bool:
                info = client.scheduler_info()["workers"].values()
                return sorted(str(w["name"]) for w in info) == list(names)

            _wait_for("both workers joining", joined)
        yield Cluster(scheduler, workers)
    finally:
        for proc in workers.values():
            _stop(proc)
        with Client(scheduler, timeout=START_TIMEOUT_S) as client:  # the next test's two only
            _wait_for("the workers leaving", lambda: not client.scheduler_info()["workers"])


def _scenario(
    tmp_path: Path, port: int, rate: float, flows: int, cidr: str, flow_timeout_s: int = 5
) -> Path:
    path = tmp_path / "scale.yaml"
    path.write_text(
        "name: scale-loopback\n"
        f"target: {{address: 127.0.0.1, port: {port}}}\n"
        f"clients: {{cidr: {cidr}, count: 8}}\n"
        "flows: [{kind: http, path: /}]\n"
        f"arrival: {{model: open, rate: {rate}}}\n"
        f"bounds: {{max_flows: {flows}, max_duration: 20s, flow_timeout: {flow_timeout_s}s}}\n"
        "expect: {all_ok: true}\n"
    )
    return path


def _lvsprobe(*argv: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lvsprobe", *map(str, argv)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return proc.returncode, out, err


def test_one_run_split_across_two_workers_merges_every_flow_once(
    cluster: Cluster, servers: object, tmp_path: Path
) -> None:
    scenario = _scenario(tmp_path, servers.http, rate=100, flows=160, cidr="127.0.0.20/24")  # type: ignore[attr-defined]
    out = tmp_path / "run"
    status, stdout, stderr = _finish(
        _lvsprobe(
            "replay",
            "run",
            scenario,
            "--out",
            out,
            "--workers",
            cluster.address,
            "--no-progress",
            "--check",
        )
    )
    assert status == 0, stderr
    assert "160 flows, 160 ok" in stdout
    flows = pq.read_table(out / flowlog.FLOWS_FILE).to_pandas()
    assert sorted(flows["flow_id"]) == list(range(160))  # every planned flow, once
    assert flows["worker"].value_counts().to_dict() == {"a": 80, "b": 80}
    by_worker = flows.groupby("worker")["client_address"].agg(set)
    assert len(by_worker["a"]) == len(by_worker["b"]) == 4
    assert not by_worker["a"] & by_worker["b"]  # disjoint slices of the pool
    assert not (out / flowlog.JOURNAL_FILE).exists()
    summary = json.loads((out / flowlog.SUMMARY_FILE).read_text())
    assert summary["complete"] and summary["checks"]["passed"]
    scale = summary["scale"]
    assert scale["failed"] == scale["lost"] == scale["dropped"] == 0
    assert [s["worker"] for s in scale["shards"]] == ["a", "b"]
    assert [s["status"] for s in scale["shards"]] == ["done", "done"]
    assert 0 <= scale["start_skew_s"] < 20 and scale["dask_start_skew_s"] is not None
    assert len(scale["dask_time_delay_s"]) == 2
    assert all(0 < s["cpu_s"]["engine"] <= s["cpu_s"]["process"] for s in scale["shards"])
    # the arrivals kept the global schedule: each shard started its flows at their times
    assert (flows["start_s"] >= flows["scheduled_s"] - 1e-3).all()
    status, stdout, stderr = _finish(
        _lvsprobe("analyze", "fairness", out, "--scheduler", "rr", "--weights", "rs1=1", "--json")
    )
    assert status == 0, stderr
    assert json.loads(stdout)["services"][0]["counts"] == [160]


def _journal_workers(run_dir: Path) -> set[str]:
    path = run_dir / flowlog.JOURNAL_FILE
    if not path.is_file():
        return set()
    table = read_journal(path).table
    return set(table.column("worker").to_pylist()) if table.num_rows else set()


def test_a_worker_killed_mid_run_fails_its_shard_and_keeps_the_survivors_flows(
    cluster: Cluster, servers: object, tmp_path: Path
) -> None:
    # The survivor's flows must all succeed: a loaded 2-core host (lab VMs beside the unit lane)
    # stalled some of them past a 5 s flow timeout, so this run allows 15 s.
    scenario = _scenario(
        tmp_path,
        servers.http,  # type: ignore[attr-defined]
        rate=100,
        flows=800,
        cidr="127.0.0.40/24",
        flow_timeout_s=15,
    )
    out = tmp_path / "run"
    run = _lvsprobe(
        "replay", "run", scenario, "--out", out, "--workers", cluster.address, "--no-progress"
    )
    try:
        both = lambda: _journal_workers(out) == {"a", "b"}  # noqa: E731
        _wait_for("flows of both workers in the journal", both, RUN_TIMEOUT_S)
        os.kill(cluster.workers["b"].pid, signal.SIGKILL)
    finally:
        status, _stdout, stderr = _finish(run)
    lines = [line for line in stderr.splitlines() if line]
    assert status == 1, stderr
    assert len(lines) == 1 and lines[0].startswith("lvsprobe: shard 1 on worker 'b' ("), lines
    assert "failed: its worker left the cluster mid-run; " in lines[0]
    summary = json.loads((out / flowlog.SUMMARY_FILE).read_text())
    a, b = summary["scale"]["shards"]
    assert (a["status"], b["status"]) == ("done", "failed")
    assert f"{b['lost']} of its {b['planned']} flows lost, {b['flows']} in the log" in lines[0]
    assert a["flows"] == a["planned"] == 400 and 0 < b["flows"] < 400
    assert b["lost"] == 400 - b["flows"] and summary["complete"] is False
    flows = pq.read_table(out / flowlog.FLOWS_FILE).to_pandas()
    assert flows["flow_id"].is_unique
    assert flows["worker"].value_counts().to_dict() == {"a": 400, "b": b["flows"]}
    assert (flows[flows["worker"] == "a"]["outcome"] == "ok").all(), flows.groupby("worker")[
        "outcome"
    ].value_counts()


def test_a_worker_without_the_pools_addresses_is_refused_by_name(
    cluster: Cluster, tmp_path: Path
) -> None:
    # 192.0.2.0/24 (TEST-NET-1) is on no host here: nothing is sent, the workers say so
    scenario = _scenario(tmp_path, 9, rate=10, flows=4, cidr="192.0.2.10/24")
    scenario.write_text(scenario.read_text().replace("127.0.0.1", "192.0.2.200"))
    status, _out, stderr = _finish(
        _lvsprobe(
            "replay", "run", scenario, "--out", tmp_path / "run", "--workers", cluster.address
        )
    )
    assert status == 1
    assert stderr.startswith("lvsprobe: worker 'a' (tcp://127.0.0.1:")
    assert "'b' (tcp://127.0.0.1:" in stderr and "has none of the run's 4 client addr" in stderr
    assert not (tmp_path / "run").exists()  # refused before the run directory


def test_without_the_scale_extra_a_workers_run_says_what_to_install(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, 9, rate=10, flows=4, cidr="127.0.0.20/24")
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "sys.argv = ['lvsprobe', *sys.argv[1:]]\n"
        "from lvsprobe.cli import main; main()"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "replay",
            "run",
            str(scenario),
            "--out",
            str(tmp_path / "run"),
            "--workers",
            "local:2",
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "lvsprobe replay: needs the [scale] extra: pip install 'lvsprobe[scale]' "
        "(missing module distributed)\n"
    )
