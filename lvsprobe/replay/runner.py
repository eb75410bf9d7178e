"""One replay run: schedule the plan (open loop, closed loop, bursts), take conn-table
snapshots, stop at the bounds or on request, and write the run directory.

A stop request (Ctrl-C) ends the run early but cleanly: flows still in flight are recorded as
`error:interrupted`, the flow log and summary are written, `complete` is false.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsprobe.errors import LvsprobeError
from lvsprobe.replay import flowlog
from lvsprobe.replay.attribution import ConnSnapshot, attribute, save_snapshots
from lvsprobe.replay.driver import FlowContext, drive_flow, new_record
from lvsprobe.replay.expect import check_expectations
from lvsprobe.replay.flowlog import FlowLogWriter, FlowRecord
from lvsprobe.replay.plan import PlannedFlow
from lvsprobe.replay.scenario import Scenario


@dataclass(slots=True)
class Progress:
    started: int = 0
    done: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    total: int = 0


@dataclass
class RunOptions:
    conn_table: Callable[[], bytes] | None = None
    snapshot_every_s: float = 1.0
    on_progress: Callable[[Progress], None] | None = None
    progress_every_s: float = 0.5


@dataclass
class RunResult:
    records: list[FlowRecord]
    summary: dict[str, Any]
    interrupted: bool
    snapshots: list[ConnSnapshot] = field(default_factory=list)


class Runner:
    def __init__(self, scenario: Scenario, plan: list[PlannedFlow], options: RunOptions):
        self.scenario, self.plan, self.options = scenario, plan, options
        self.records: list[FlowRecord] = []
        self.progress = Progress(total=len(plan))
        self.snapshots: list[ConnSnapshot] = []
        self.stop_reason: str | None = None
        self._stop = asyncio.Event()
        self._t0 = 0.0
        self._unix0 = 0.0
        self._ctx = FlowContext(scenario)

    def stop(self, reason: str = "interrupted") -> None:
        """Ask the run to end now (safe to call from a signal handler on the loop)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def clock(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    async def _one(self, planned: PlannedFlow) -> None:
        start = self.clock()
        record = new_record(planned, start, self._unix0 + start, self.scenario.target.protocol)
        self.records.append(record)
        self.progress.started += 1
        try:
            if planned.kind == "syn":
                from lvsprobe.replay.synflow import send_syn

                await send_syn(planned, record, self.clock, self.scenario.seed)
            else:
                await drive_flow(planned, record, self.clock, self._ctx)
        except asyncio.CancelledError:
            record.outcome = f"error:{self.stop_reason or 'run-ended'}"
            record.end_s = self.clock()
            raise
        finally:
            self.progress.done += 1
            if record.outcome != "ok":
                self.progress.errors += 1

    async def _sleep_until(self, at_s: float) -> bool:
        """Wait until run time `at_s`; False if the run was stopped meanwhile."""
        delay = at_s - self.clock()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        return not self._stop.is_set()

    async def _open_loop(self, tasks: set[asyncio.Task[None]]) -> None:
        limit = self.scenario.bounds.max_duration_s
        for planned in self.plan:
            if not await self._sleep_until(planned.at_s or 0.0) or self.clock() >= limit:
                return  # stopped, or late: a busy loop must not stretch the bound
            task = asyncio.ensure_future(self._one(planned))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _closed_loop(self) -> None:
        pending = iter(self.plan)

        async def worker() -> None:
            for planned in pending:
                if self._stop.is_set() or self.clock() >= self.scenario.bounds.max_duration_s:
                    return
                await self._one(planned)
                if planned.mix.think_s > 0 and not await self._sleep_until(
                    self.clock() + planned.mix.think_s
                ):
                    return

        await asyncio.gather(*(worker() for _ in range(self.scenario.arrival.concurrency)))

    async def _snapshot_loop(self) -> None:
        reader = self.options.conn_table
        assert reader is not None
        while True:
            data = await asyncio.to_thread(reader)
            self.snapshots.append(ConnSnapshot(self.clock(), data))
            await asyncio.sleep(self.options.snapshot_every_s)

    async def _progress_loop(self) -> None:
        callback = self.options.on_progress
        assert callback is not None
        while True:
            self.progress.elapsed_s = self.clock()
            callback(self.progress)
            await asyncio.sleep(self.options.progress_every_s)

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        self._t0, self._unix0 = loop.time(), time.time()
        helpers = []
        if self.options.conn_table is not None:
            helpers.append(asyncio.ensure_future(self._snapshot_loop()))
        if self.options.on_progress is not None:
            helpers.append(asyncio.ensure_future(self._progress_loop()))
        tasks: set[asyncio.Task[None]] = set()
        if self.scenario.arrival.model == "closed":
            driver = asyncio.ensure_future(self._closed_loop())
        else:
            driver = asyncio.ensure_future(self._open_loop(tasks))
        limit = self.scenario.bounds.max_duration_s
        stopper = asyncio.ensure_future(self._stop.wait())
        await asyncio.wait([driver, stopper], timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        if not driver.done() and not self._stop.is_set():
            self.stop("run-ended")
        if tasks and not self._stop.is_set():
            remaining = max(0.0, limit - self.clock())
            waiter = asyncio.ensure_future(asyncio.wait(set(tasks), timeout=remaining))
            await asyncio.wait([waiter, stopper], return_when=asyncio.FIRST_COMPLETED)
            if tasks and not self._stop.is_set():
                self.stop("run-ended")
        for task in [driver, *tasks]:
            task.cancel()
        await asyncio.gather(driver, *tasks, return_exceptions=True)
        stopper.cancel()
        for helper in helpers:
            helper.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        if self.options.conn_table is not None:
            data = await asyncio.to_thread(self.options.conn_table)
            self.snapshots.append(ConnSnapshot(self.clock(), data))
        if self.options.on_progress is not None:
            self.progress.elapsed_s = self.clock()
            self.options.on_progress(self.progress)
        self.records.sort(key=lambda r: r.flow_id)
        return RunResult(self.records, {}, self.stop_reason == "interrupted", self.snapshots)


def write_run(
    run_dir: Path,
    scenario: Scenario,
    scenario_path: Path | None,
    result: RunResult,
    stop_reason: str | None,
    planned: int,
    check: bool = False,
) -> dict[str, Any]:
    """Attribute, then write flows.parquet, summary.json, scenario.yaml, target.json and the
    conn-table snapshots into `run_dir`; returns the summary."""
    import json

    run_dir.mkdir(parents=True, exist_ok=True)
    matched = 0
    conn_error = None
    if result.snapshots:
        save_snapshots(run_dir, result.snapshots)
        try:
            matched = attribute(result.records, result.snapshots, scenario.target.backends)
        except (LvsprobeError, ImportError) as exc:
            # the flows are still worth writing: say why the join is missing
            conn_error = f"conn-table attribution failed: {exc}"
    checks = None
    if check:
        failures = check_expectations(scenario.expect, result.records)
        checks = {"passed": not failures, "failures": failures}
    writer = FlowLogWriter(run_dir / flowlog.FLOWS_FILE)
    for record in result.records:
        writer.add(record)
    writer.close()
    if scenario_path is not None:
        shutil.copyfile(scenario_path, run_dir / flowlog.SCENARIO_FILE)
    target = scenario.target
    (run_dir / flowlog.TARGET_FILE).write_text(
        json.dumps(
            {
                "address": target.address,
                "port": target.port,
                "protocol": target.protocol,
                "fwmark": target.fwmark,
                "backends": dict(target.backends),
                "seed": scenario.seed,
                "scenario": scenario.name,
            },
            indent=2,
        )
        + "\n"
    )
    summary = flowlog.summarize(
        result.records,
        scenario=scenario.name,
        planned=planned,
        complete=stop_reason is None and len(result.records) == planned,
        stopped=stop_reason,
        snapshots=len(result.snapshots),
        conn_table_matched=matched,
        conn_table_error=conn_error,
        checks=checks,
    )
    flowlog.write_summary(run_dir, summary)
    result.summary = summary
    return summary
