"""One replay run: schedule the plan (open loop, closed loop, bursts), take conn-table
snapshots, stop at the bounds or on request (rundir.py writes the run directory).

A stop request (Ctrl-C) ends the run early but cleanly: flows still in flight are recorded as
`error:interrupted`, the flow log and summary are written, `complete` is false. Each flow is
handed to the run's journal (`RunOptions.journal`) as it finishes, so a run killed before its
end keeps the flows it finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from lvsprobe.replay.attribution import ConnSnapshot
from lvsprobe.replay.driver import FlowContext, drive_flow, new_record
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.journal import Batcher
from lvsprobe.replay.plan import PlannedFlow, stages_of
from lvsprobe.replay.profile import windows
from lvsprobe.replay.scenario import Scenario

# Below this, snapshots of a busy director's table (megabytes each) would be taken back to
# back: 0 wrote 18k files in a one-second run.
MIN_SNAPSHOT_EVERY_S = 0.1


def check_snapshot_every(seconds: float) -> float:
    """`seconds` if it is a sane interval between conn-table snapshots, else ValueError."""
    if not MIN_SNAPSHOT_EVERY_S <= seconds < float("inf"):  # false for nan too
        raise ValueError(f"{seconds} is not a number of seconds >= {MIN_SNAPSHOT_EVERY_S}")
    return seconds


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
    journal: Batcher[FlowRecord] | None = None  # where each flow goes as it finishes
    live: Watcher | None = None  # told of each flow as it starts and ends (live.py)
    hurry: Callable[[], bool] = lambda: False  # true: skip the final conn-table snapshot

    def __post_init__(self) -> None:
        check_snapshot_every(self.snapshot_every_s)


@dataclass
class RunResult:
    records: list[FlowRecord]
    summary: dict[str, Any]
    interrupted: bool
    snapshots: list[ConnSnapshot] = field(default_factory=list)
    skipped: int = 0  # planned flows of closed stages that ended before they could start


class StopSignals:
    """SIGINT and SIGTERM from a run's start until its directory is written.

    The first asks the run to stop: flows in flight become error:interrupted, all is written.
    The second also skips the slow steps left (the final conn-table snapshot, attribution,
    waiting for a running --at command). A third quits at once with `quit_status`: the journal
    keeps the flows finished up to its last flush, and `lvsprobe replay summary RUN` finishes
    the directory. Installed for the whole run, not only the engine's part, so a signal never
    lands as a KeyboardInterrupt in the middle of writing the log.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, run_dir: Path, quit_status: int) -> None:
        self.received = 0
        self._run_dir, self._quit_status = run_dir, quit_status
        self._stop: Callable[[], object] = lambda: None
        self._saved: dict[int, Any] = {}

    def on_stop(self, stop: Callable[[], object]) -> None:
        """What a signal calls (the engine's `stop`, made safe for its loop); called at once
        if a signal came before the engine was there to stop."""
        self._stop = stop
        if self.received:
            stop()

    def hurry(self) -> bool:
        return self.received >= 2

    def __enter__(self) -> StopSignals:
        for signum in self.SIGNALS:
            self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._saved.items():
            # Interrupted, the command is ending in 130 with all written: a late Ctrl-C is
            # ignored, not a traceback or a death by SIGINT (Python restores the default
            # handler while it exits, but leaves an ignored signal ignored).
            signal.signal(signum, signal.SIG_IGN if self.received else handler)

    def _say(self, text: str) -> None:
        # os.write: the signal may have interrupted a write to sys.stderr (the progress line)
        os.write(sys.stderr.fileno(), f"\nlvsprobe: {text}\n".encode())

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.received += 1
        if self.received >= 3:
            self._say(
                "quitting now: the flows finished up to the last second are in the journal; "
                f"`lvsprobe replay summary {self._run_dir}` finishes the run directory"
            )
            os._exit(self._quit_status)
        if self.received == 2:
            self._say("interrupted again: writing the finished flows now (again to quit at once)")
        self._stop()


class Watcher(Protocol):
    """What an engine tells as the run goes (the live metrics and progress, live.py)."""

    def started(self, kind: str, now_s: float) -> None: ...

    def finished(self, record: FlowRecord) -> None: ...


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
