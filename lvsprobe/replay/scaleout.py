"""`replay run --workers`: one run spread over the workers of a Dask cluster, seen from the
client (the workers' side is shardrun.py, the sharding shard.py, the merge merge.py).

The client asks every worker which client addresses its host has, splits the plan into one
shard per worker, submits each shard pinned to its worker (never re-run elsewhere: a shard
sends traffic from its host's addresses), waits until every shard has rebuilt its plan, then
publishes one wall-clock start instant. While the shards run it merges their chunks of flows
into the run's journal, takes the conn-table snapshots (once, here), and watches the
scheduler: a worker that leaves before its shard's last message fails that shard.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsprobe import __version__
from lvsprobe.errors import LvsprobeError, ScenarioError
from lvsprobe.replay.attribution import ConnSnapshot
from lvsprobe.replay.merge import Merge, ShardStatus
from lvsprobe.replay.plan import PlannedFlow
from lvsprobe.replay.runparts import Progress, RunOptions, RunResult
from lvsprobe.replay.scenario import Scenario
from lvsprobe.replay.shard import Shard, WorkerClients, shard_scenario, split_plan
from lvsprobe.replay.shardrun import ShardSpec, report_host, run_shard

CONNECT_TIMEOUT_S = 30.0  # to reach the scheduler, and for local:N's workers to come up
READY_TIMEOUT_S = 300.0  # for every shard to rebuild its plan (a million flows: seconds)
START_LEAD_S = 1.0  # from publishing the start instant to it: the shards' wake-up margin
END_GRACE_S = 30.0  # past the scenario's bounds, before the shards are told to stop
STOP_GRACE_S = 15.0  # after that, before a shard still not done is failed
POLL_S = 0.25  # the client's loop: messages, the scheduler's worker list, progress
LOCAL_RE = re.compile(r"local:([0-9]+)")
MAX_LOCAL_WORKERS = 256


@dataclass(frozen=True)
class WorkersSpec:
    """`--workers`: `local:N`, a scheduler address (tcp://HOST:PORT, tls://...) or a
    scheduler file (what `dask scheduler --scheduler-file` writes)."""

    text: str
    local_workers: int | None = None
    address: str | None = None
    scheduler_file: Path | None = None


def parse_workers(text: str) -> WorkersSpec:
    """A WorkersSpec; ValueError says what is wrong."""
    if match := LOCAL_RE.fullmatch(text):
        count = int(match[1])
        if not 1 <= count <= MAX_LOCAL_WORKERS:
            raise ValueError(f"{text!r}: local:N needs 1 <= N <= {MAX_LOCAL_WORKERS}")
        return WorkersSpec(text, local_workers=count)
    if text.startswith("local"):
        raise ValueError(f"{text!r}: expected local:N, e.g. local:4")
    if "://" in text:
        return WorkersSpec(text, address=text)
    path = Path(text)
    if not path.is_file():
        raise ValueError(
            f"{text!r} is neither local:N, a scheduler address (tcp://HOST:PORT) nor a "
            "scheduler file"
        )
    return WorkersSpec(text, scheduler_file=path)


@contextlib.contextmanager
def open_cluster(spec: WorkersSpec) -> Iterator[Any]:
    """A Dask client of the cluster `spec` names (local:N: started here, one thread per
    worker process, and stopped on exit); LvsprobeError naming --workers if unreachable."""
    import dask.config
    from distributed import Client, LocalCluster

    # distributed logs its own life (workers starting, a closed comm) on stderr: a run
    # prints one progress line and one result, the failures lvsprobe reports itself.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with contextlib.ExitStack() as stack:
        try:
            if spec.local_workers is not None:
                # Dask's statistical profiler samples every worker thread each 10 ms: CPU
                # taken from the shard's engine, to profile one long task
                stack.enter_context(dask.config.set({"distributed.worker.profile.enabled": False}))
                with _sigint_ignored():  # inherited: a terminal's Ctrl-C stops the run here
                    cluster = LocalCluster(
                        n_workers=spec.local_workers,
                        threads_per_worker=1,
                        processes=True,
                        host="127.0.0.1",
                        dashboard_address=None,
                    )
                stack.enter_context(cluster)
                client = stack.enter_context(Client(cluster, timeout=CONNECT_TIMEOUT_S))
                client.wait_for_workers(spec.local_workers, timeout=CONNECT_TIMEOUT_S)
            elif spec.scheduler_file is not None:
                client = stack.enter_context(
                    Client(scheduler_file=str(spec.scheduler_file), timeout=CONNECT_TIMEOUT_S)
                )
            else:
                client = stack.enter_context(Client(spec.address, timeout=CONNECT_TIMEOUT_S))
        except (OSError, TimeoutError, ValueError) as exc:
            raise LvsprobeError(f"--workers {spec.text}: no Dask cluster there: {exc}") from exc
        yield client


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while local:N starts its worker processes, which keep it ignored.

    A terminal's Ctrl-C reaches the whole process group: the workers would die of it mid-run
    (their shards failed, tracebacks on stderr) instead of being told to stop by the client,
    which ends the shards, writes what they sent and exits as an interrupted run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def cluster_workers(client: Any) -> dict[str, Any]:
    """The scheduler's workers now (address -> identity), asked directly.

    Not `Client.scheduler_info()`: it returns an attribute that the client's own periodic
    refresh (every 2 s, asking for zero workers) may overwrite between its update and its
    return, so a slow host sees every worker vanish and fails their shards.
    """
    identity: dict[str, Any] = client.sync(client.scheduler.identity, n_workers=-1)
    return dict(identity["workers"])


def worker_clients(
    client: Any, addresses: tuple[str, ...], skip_check: bool
) -> list[WorkerClients]:
    """Ask every worker which of `addresses` its host has (see shardrun.report_host)."""
    try:
        reports = client.run(report_host, addresses, skip_check)
    except ModuleNotFoundError as exc:
        raise LvsprobeError(
            f"a Dask worker cannot import {exc.name}: install lvsprobe[replay,scale] on every "
            "worker's host"
        ) from exc
    except ScenarioError:
        raise
    except Exception as exc:  # whatever a worker raised, or a comm that broke
        raise LvsprobeError(f"asking the Dask workers for their addresses: {exc}") from exc
    names = {a: str(w.get("name", a)) for a, w in cluster_workers(client).items()}
    other = sorted({r["version"] for r in reports.values()} - {__version__})
    if other:
        raise LvsprobeError(
            f"the Dask workers run lvsprobe {', '.join(other)}, this client {__version__}: "
            "run the same lvsprobe on every host"
        )
    return [
        WorkerClients(address, names.get(address, address), frozenset(report["clients"]))
        for address, report in sorted(reports.items())
    ]


def plan_shards(
    client: Any, plan: list[PlannedFlow], skip_pool_check: bool
) -> tuple[list[Shard], dict[str, float]]:
    """The run's shards, and each worker's clock offset behind the client's (by address)."""
    addresses = tuple(dict.fromkeys(p.client_address for p in plan))
    shards = split_plan(plan, worker_clients(client, addresses, skip_pool_check))
    return shards, time_delays(client, shards)


def time_delays(client: Any, shards: list[Shard]) -> dict[str, float]:
    """Each shard worker's clock offset behind the client's (s): the client's midpoint of one
    `time.time` round trip minus the worker's answer; 0 when the answer fell inside the round
    trip (the clocks agree as far as it can tell). Dask's own `time-delay` is not in
    `scheduler_info()`, and is against the scheduler's clock."""
    addresses = sorted({s.worker_address for s in shards})
    before = time.time()
    remote = client.run(time.time, workers=addresses)
    after = time.time()
    midpoint = (before + after) / 2
    return {
        address: 0.0 if before <= remote[address] <= after else midpoint - float(remote[address])
        for address in addresses
    }


@dataclass
class ScaledRun:
    """What the client gathered: the merge (records and shard states), snapshots, why the
    run stopped early (None: it did not), and when it started."""

    merge: Merge
    snapshots: list[ConnSnapshot] = field(default_factory=list)
    stop_reason: str | None = None
    start_unix: float | None = None

    def result(self) -> RunResult:
        records = sorted(self.merge.records, key=lambda r: r.flow_id)
        return RunResult(records, {}, self.stop_reason == "interrupted", self.snapshots)


class _Snapshots:
    """Conn-table snapshots taken by the client every `every_s`, timed from the start
    instant (the shards' records are timed from it too)."""

    def __init__(self, read: Callable[[], bytes], every_s: float, start_unix: float) -> None:
        self.taken: list[ConnSnapshot] = []
        self._read, self._every_s, self._start = read, every_s, start_unix
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._work, name="lvsprobe-snap", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        self._halt.wait(max(0.0, self._start - time.time()))
        while not self._halt.is_set():
            try:
                self.take()
            except LvsprobeError:  # the final snapshot, taken by the run itself, reports it
                return
            self._halt.wait(self._every_s)

    def take(self) -> None:
        data = self._read()
        self.taken.append(ConnSnapshot(time.time() - self._start, data))

    def stop(self) -> None:
        self._halt.set()
        self._thread.join()


def run_shards(
    client: Any,
    scenario: Scenario,
    shards: list[Shard],
    max_flows: int | None,
    fast: bool,
    options: RunOptions,
    stop_requested: threading.Event,
    time_delay_s: Mapping[str, float],
    on_start: Callable[[float], None] = lambda _start: None,
) -> ScaledRun:
    """Drive the shards to their end, merging their flows into `options.journal`, their times
    put on the client's clock by `time_delay_s` (from `plan_shards`)."""
    from distributed import Event, Queue, Variable

    run_id = uuid.uuid4().hex[:12]
    names = {k: f"lvsprobe-{k}-{run_id}" for k in ("rows", "go", "stop")}
    queue, go, stop = Queue(names["rows"]), Variable(names["go"]), Event(names["stop"])
    specs = [
        ShardSpec(s.index, shard_scenario(scenario, len(shards), s.index), max_flows,
                  s.clients, s.flows, s.digest, fast, names["rows"], names["go"], names["stop"])
        for s in shards
    ]  # fmt: skip
    futures = [
        client.submit(run_shard, spec, key=f"lvsprobe-shard-{run_id}-{spec.index}",
                      workers=[shard.worker_address], allow_other_workers=False, pure=False)
        for spec, shard in zip(specs, shards, strict=True)
    ]  # fmt: skip
    loop = _ClientLoop(client, scenario, Merge(shards, time_delay_s), options, queue, futures)
    try:
        return loop.drive(go, stop, stop_requested, on_start)
    finally:
        stop.set()  # a shard still running (the client is failing) stops within seconds
        client.cancel(futures, force=True)
        queue.close()
        go.delete()


class _ClientLoop:
    """The client's side of a run, from submitted shards to their last message."""

    def __init__(
        self,
        client: Any,
        scenario: Scenario,
        merge: Merge,
        options: RunOptions,
        queue: Any,
        futures: list[Any],
    ) -> None:
        self.client, self.scenario, self.options = client, scenario, options
        self.queue, self.futures, self.merge = queue, futures, merge
        self.shards = [state.shard for state in merge.states.values()]
        self.progress = Progress(total=sum(s.flows for s in self.shards))

    def drive(
        self, go: Any, stop: Any, stop_requested: threading.Event, on_start: Callable[[float], None]
    ) -> ScaledRun:
        states = self.merge.states.values()
        ready_by = time.monotonic() + READY_TIMEOUT_S
        run = ScaledRun(self.merge)
        end_by = stop_by = float("inf")
        snapshots = None
        next_check = next_progress = 0.0
        try:
            while not all(s.finished for s in states):
                self._drain(POLL_S)
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + 2 * POLL_S
                    self._check_workers(started=run.start_unix is not None)
                if run.start_unix is None:
                    if self.merge.failed:
                        raise LvsprobeError(f"the run did not start: {self.merge.failure_line()}")
                    if stop_requested.is_set():
                        stop.set()  # before the start instant: the shards end at once
                    elif not all(s.status is ShardStatus.READY for s in states):
                        if now > ready_by:
                            raise LvsprobeError(
                                f"the shards were not ready within {READY_TIMEOUT_S:g} s"
                            )
                        continue
                    run.start_unix = time.time() + START_LEAD_S
                    go.set(run.start_unix)
                    on_start(run.start_unix)
                    bounds = self.scenario.bounds
                    end_by = now + START_LEAD_S + bounds.max_duration_s + bounds.flow_timeout_s
                    end_by += END_GRACE_S
                    if self.options.conn_table is not None:
                        read, every_s = self.options.conn_table, self.options.snapshot_every_s
                        snapshots = _Snapshots(read, every_s, run.start_unix)
                    continue
                if stop_by == float("inf") and (stop_requested.is_set() or now > end_by):
                    run.stop_reason = "interrupted" if stop_requested.is_set() else "run-ended"
                    stop.set()
                    stop_by = now + STOP_GRACE_S
                elif now > stop_by:
                    for state in states:
                        self.merge.fail(state.shard.index, f"no end within {STOP_GRACE_S:g} s")
                if self.options.journal is not None:
                    self.options.journal.tick()
                if self.options.on_progress is not None and now >= next_progress:
                    next_progress = now + self.options.progress_every_s
                    self._report(run.start_unix)
        finally:
            if snapshots is not None:
                snapshots.stop()
        if snapshots is not None:
            if not self.options.hurry():
                snapshots.take()
            run.snapshots = snapshots.taken
        if self.options.on_progress is not None and run.start_unix is not None:
            self._report(run.start_unix)
        if run.stop_reason is None:
            shard_reasons = [s.stop_reason for s in states if s.stop_reason]
            run.stop_reason = (
                "shard-failed" if self.merge.failed else next(iter(shard_reasons), None)
            )
        return run

    def _drain(self, wait_s: float) -> None:
        """Take every message waiting, after waiting `wait_s` if there was none. (No
        blocking get with a timeout: the scheduler logs each one that times out as an error.)"""
        messages = self.queue.get(batch=True)
        if not messages and wait_s > 0:
            time.sleep(wait_s)
            messages = self.queue.get(batch=True)
        journal = self.options.journal
        for message in messages:
            for record in self.merge.take(message):
                if journal is not None:
                    journal.add(record)
                if record.outcome != "ok":
                    self.progress.errors += 1

    def _check_workers(self, started: bool) -> None:
        """Fail the shards whose worker left the cluster, or whose task raised."""
        alive = set(cluster_workers(self.client))
        open_states = [s for s in self.merge.states.values() if not s.finished]
        gone = [s for s in open_states if s.shard.worker_address not in alive]
        erred = [
            (self.merge.states[shard.index], future)
            for shard, future in zip(self.shards, self.futures, strict=True)
            if future.status == "error"
        ]
        if gone or erred:
            self._drain(0)  # what they sent before that is queued ahead of this
        when = "mid-run" if started else "before the start"
        for state in gone:
            self.merge.fail(state.shard.index, f"its worker left the cluster {when}")
        for state, future in erred:
            self.merge.fail(state.shard.index, f"the shard failed: {future.exception()}")

    def _report(self, start_unix: float) -> None:
        self.progress.done = len(self.merge.records)
        self.progress.started = sum(s.started for s in self.merge.states.values())
        self.progress.elapsed_s = max(0.0, time.time() - start_unix)
        assert self.options.on_progress is not None
        self.options.on_progress(self.progress)
