"""One replay run on asyncio (every flow kind): schedule the plan (open loop, closed loop,
bursts), take conn-table snapshots, stop at the bounds or on request (rundir.py writes the run
directory; runparts.py holds what the epoll engine shares with this one).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterable

from lvsprobe.replay.attribution import ConnSnapshot
from lvsprobe.replay.driver import FlowContext, drive_flow, new_record
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.journal import Batcher
from lvsprobe.replay.plan import PlannedFlow, stages_of
from lvsprobe.replay.profile import windows
from lvsprobe.replay.runparts import (
    Progress,
    RunOptions,
    RunResult,
    StopSignals,
)
from lvsprobe.replay.scenario import Scenario

# what a caller of this engine takes from here (the parts it shares with the epoll engine)
__all__ = [
    "Progress",
    "RunOptions",
    "RunResult",
    "Runner",
    "StopSignals",
]


class Runner:
    """The asyncio engine: every flow kind; open and closed stages (not the pool model)."""

    def __init__(self, scenario: Scenario, plan: list[PlannedFlow], options: RunOptions):
        self.scenario, self.plan, self.options = scenario, plan, options
        self.records: list[FlowRecord] = []
        self.progress = Progress(total=len(plan))
        self.snapshots: list[ConnSnapshot] = []
        self.stop_reason: str | None = None
        self.skipped = 0
        self._windows = windows(stages_of(scenario))
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
        if self.options.live is not None:
            self.options.live.started(planned.kind, start)
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
            record.settle()
            self.progress.done += 1
            if record.outcome != "ok":
                self.progress.errors += 1
            if self.options.journal is not None:
                self.options.journal.add(record)
            if self.options.live is not None:
                self.options.live.finished(record)

    async def _sleep_until(self, at_s: float) -> bool:
        """Wait until run time `at_s`; False if the run was stopped meanwhile."""
        delay = at_s - self.clock()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
        return not self._stop.is_set()

    async def _open_block(
        self, block: Iterable[PlannedFlow], tasks: set[asyncio.Task[None]]
    ) -> bool:
        """Start each flow at its time; False once the run is stopped or past its bound."""
        limit = self.scenario.bounds.max_duration_s
        for planned in block:
            if not await self._sleep_until(planned.at_s or 0.0) or self.clock() >= limit:
                return False  # stopped, or late: a busy loop must not stretch the bound
            task = asyncio.ensure_future(self._one(planned))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return True

    async def _closed_block(self, block: list[PlannedFlow]) -> bool:
        """A closed stage: its `concurrency` loops from its start until its end (a flow still
        going then ends first); the flows it had no time for are skipped."""
        stage = block[0].stage
        start, end = self._windows[stage]
        if not await self._sleep_until(start):
            return False
        pending = iter(block)
        end = min(end, self.scenario.bounds.max_duration_s)

        async def worker() -> None:
            for planned in pending:
                if self._stop.is_set() or self.clock() >= end:
                    self.skipped += 1
                    continue
                await self._one(planned)
                if planned.mix.think_s > 0 and not await self._sleep_until(
                    self.clock() + planned.mix.think_s
                ):
                    return

        await asyncio.gather(
            *(worker() for _ in range(stages_of(self.scenario)[stage].concurrency))
        )
        return not self._stop.is_set()

    async def _drive(self, tasks: set[asyncio.Task[None]]) -> None:
        """The plan block by block: runs of open flows, and each closed stage's flows."""
        for (_, closed), group in itertools.groupby(self.plan, lambda p: (p.stage, p.at_s is None)):
            if closed:
                going = await self._closed_block(list(group))
            else:
                going = await self._open_block(group, tasks)
            if not going:
                return

    async def _snapshot_loop(self) -> None:
        reader = self.options.conn_table
        assert reader is not None
        while True:
            data = await asyncio.to_thread(reader)
            self.snapshots.append(ConnSnapshot(self.clock(), data))
            await asyncio.sleep(self.options.snapshot_every_s)

    async def _journal_loop(self, journal: Batcher[FlowRecord]) -> None:
        """Flush flows that have waited their time while none finish to flush them."""
        while True:
            await asyncio.sleep(journal.flush_every_s / 4)
            journal.tick()

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
        if self.options.journal is not None:
            helpers.append(asyncio.ensure_future(self._journal_loop(self.options.journal)))
        tasks: set[asyncio.Task[None]] = set()
        driver = asyncio.ensure_future(self._drive(tasks))
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
        if self.options.conn_table is not None and not self.options.hurry():
            data = await asyncio.to_thread(self.options.conn_table)
            self.snapshots.append(ConnSnapshot(self.clock(), data))
        if self.options.on_progress is not None:
            self.progress.elapsed_s = self.clock()
            self.options.on_progress(self.progress)
        self.records.sort(key=lambda r: r.flow_id)
        return RunResult(
            self.records, {}, self.stop_reason == "interrupted", self.snapshots, self.skipped
        )
