"""`replay run --workers` on the real kernel: a Dask scheduler in the client namespace
(198.18.0.2:8786), one `dask worker` (1 process, 1 thread, no nanny) in each of two client
namespaces, each owning half of the client pool (Topology(client_namespaces=2)). The run's
client (in `client`) reads the director's conn table once for attribution.

Started once per module (Dask imports take tens of seconds under TCG), every wait bounded."""

from __future__ import annotations

import io
import json
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from lvsprobe.replay import flowlog
from lvsprobe.replay.journal import read_journal

pytestmark = pytest.mark.lab

REPLAYS = Path(__file__).resolve().parents[2] / "replays"
CLI = [sys.executable, "-c", "from lvsprobe.cli import main; main()"]
SCHEDULER = "tcp://198.18.0.2:8786"
WORKERS = {"a": ("client", "198.18.0.2"), "b": ("client2", "198.18.3.2")}
START_TIMEOUT_S = 300.0  # safety bound: three Dask imports under TCG on 2 shared cores
RUN_TIMEOUT_S = 600.0
# Dask's defaults assume a fast host: a TCG guest needs longer connects, and no profiler
DASK_ENV = {
    "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "120s",
    "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
}


def _wait_for(what: str, done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s"
        time.sleep(1.0)


@pytest.fixture(scope="module")
def dask_lab(lab: Any) -> Iterator[dict[str, Any]]:
    """The two-namespace cluster with a scheduler and the workers a and b (their Processes)."""
    from lvsprobe.lab.topology import Topology

    lab.ensure(Topology(client_namespaces=2))
    dask = [sys.executable, "-m", "dask"]
    scheduler = lab.spawn(
        "client",
        [*dask, "scheduler", "--host", "198.18.0.2", "--port", "8786", "--no-dashboard"],
        env=DASK_ENV,
    )
    workers: dict[str, Any] = {}
    try:
        _wait_for(
            "the scheduler", lambda: "Scheduler at:" in scheduler.output()[1], START_TIMEOUT_S
        )
        for name, (ns, host) in WORKERS.items():
            argv = [*dask, "worker", SCHEDULER, "--name", name, "--nthreads", "1"]
            argv += ["--no-nanny", "--host", host, "--no-dashboard"]
            workers[name] = lab.spawn(ns, argv, env=DASK_ENV)
        for name, worker in workers.items():
            _wait_for(
                f"worker {name} registered",
                lambda w=worker: "Registered to:" in w.output()[1],
                START_TIMEOUT_S,
            )
        yield workers
    finally:
        for worker in workers.values():
            worker.stop()
        scheduler.stop()
        lab.mark_dirty()  # the next test gets the default topology back


def _run(lab: Any, scenario: Path, out: Path, *extra: str) -> Any:
    argv = [*CLI, "replay", "run", str(scenario), "--out", str(out), "--workers", SCHEDULER]
    argv += ["--conn-table", "netns:lvs1", "--no-progress", *extra]
    return lab.spawn("client", argv, env=DASK_ENV)


def _finish(process: Any) -> Any:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (result := process.poll()) is None:
        if time.monotonic() > deadline:
            return process.stop()
        time.sleep(2.0)
    return result


def _flows(out: Path) -> Any:
    return pq.read_table(io.BytesIO((out / flowlog.FLOWS_FILE).read_bytes())).to_pandas()


def _why(lab: Any, workers: dict[str, Any], stderr: str) -> str:
    """What a failed run said, with the workers' last words and the kernel's (OOM kills)."""
    tails = {name: w.output()[1][-1500:] for name, w in workers.items()}
    kernel = lab.sh(None, "dmesg | tail -n 8; free -m").stdout
    return f"{stderr[-2000:]}\nworkers: {tails}\nkernel: {kernel}"


def test_rr_fairness_split_across_two_namespaces(lab: Any, dask_lab: dict[str, Any]) -> None:
    out = Path(lab.shared_dir) / f"dask-rr-{time.monotonic_ns()}"
    result = _finish(_run(lab, REPLAYS / "rr-fairness.yaml", out, "--json", "--check"))
    assert result.returncode == 0, _why(lab, dask_lab, result.stderr)
    summary = json.loads(result.stdout)
    assert summary["backends"] == {"rs1": 33, "rs2": 33, "rs3": 33}
    flows = _flows(out)
    assert sorted(flows["flow_id"]) == list(range(99))  # each planned flow exactly once
    assert set(flows["worker"]) == {"a", "b"}
    assert flows["attribution_agrees"].eq(True).all(), flows[
        ["flow_id", "worker", "backend", "conn_backend"]
    ].head()
    pools = lab.plan.client_pools
    by_worker = flows.groupby("worker")["client_address"].agg(set)
    assert by_worker["a"] <= set(pools["client"]) and by_worker["b"] <= set(pools["client2"])


def test_a_worker_killed_mid_run_keeps_the_survivors_flows(
    lab: Any, dask_lab: dict[str, Any]
) -> None:
    shared = Path(lab.shared_dir)
    scenario = shared / f"dask-long-{time.monotonic_ns()}.yaml"
    text = (REPLAYS / "rr-fairness.yaml").read_text()
    text = text.replace("rate: 20", "rate: 10").replace("max_flows: 99", "max_flows: 240")
    scenario.write_text(text.replace("  shares: {rs1: 33, rs2: 33, rs3: 33}\n", ""))
    out = shared / f"dask-kill-{time.monotonic_ns()}"
    run = _run(lab, scenario, out)

    def both_in_journal() -> bool:
        path = out / flowlog.JOURNAL_FILE
        if run.poll() is not None or not path.is_file():
            return run.poll() is not None
        table = read_journal(path).table
        return table.num_rows > 0 and set(table.column("worker").to_pylist()) == {"a", "b"}

    _wait_for("flows of both workers in the journal", both_in_journal, RUN_TIMEOUT_S)
    assert run.poll() is None, "the run ended before a worker could be killed"
    lab.run(None, ["kill", "-KILL", str(dask_lab["b"].pid)]).check()
    result = _finish(run)
    lines = [line for line in result.stderr.splitlines() if line]
    assert result.returncode == 1, _why(lab, dask_lab, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("lvsprobe: shard 1 on worker 'b' ("), lines
    assert "failed: its worker left the cluster mid-run; " in lines[0]
    summary = json.loads((out / flowlog.SUMMARY_FILE).read_text())
    a, b = summary["scale"]["shards"]
    assert (a["status"], b["status"]) == ("done", "failed")
    assert a["flows"] == a["planned"] and 0 < b["flows"] < b["planned"]
    flows = _flows(out)
    assert flows["flow_id"].is_unique
    assert flows["worker"].value_counts().to_dict() == {"a": a["planned"], "b": b["flows"]}
    assert (flows[flows["worker"] == "a"]["outcome"] == "ok").all()
