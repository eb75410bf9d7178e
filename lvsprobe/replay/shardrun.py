"""What a Dask worker runs for `replay run --workers`: its report of the client addresses its
host has, and its shard of the run (client side: scaleout.py).

A shard rebuilds the run's plan from the scenario (deterministic by seed: only the scenario
travels, never a million planned flows), keeps its flows, checks them against the client's
digest, says it is ready, waits for the run's start instant, drives them with the same
engines as a single-process run, and sends its finished flows to the client in chunks as it
goes (merge.py's messages), so a worker lost mid-run costs only its last chunk.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lvsprobe import __version__
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.journal import FLUSH_EVERY_S, FLUSH_ROWS, Batcher
from lvsprobe.replay.merge import encode_rows
from lvsprobe.replay.plan import check_pool, make_plan
from lvsprobe.replay.scenario import Scenario
from lvsprobe.replay.shard import plan_digest, shard_flows

STOP_POLL_S = 0.5  # a stop asked by the client reaches the engine within about this
GO_TIMEOUT_S = 600.0  # a shard waits this long for the start instant, then gives up


@dataclass(frozen=True)
class ShardSpec:
    """Everything a worker needs for its shard; the Dask names are the run's queue (the
    flows back), variable (the start instant) and event (stop)."""

    index: int
    scenario: Scenario
    max_flows: int | None
    clients: tuple[str, ...]
    flows: int
    digest: str
    fast: bool
    queue: str
    go: str
    stop: str
    flush_rows: int = FLUSH_ROWS
    flush_every_s: float = FLUSH_EVERY_S


def report_host(addresses: tuple[str, ...], skip_check: bool = False) -> dict[str, Any]:
    """Run on every worker (`Client.run`): which of `addresses` this host can bind (the
    kernel's own answer: it covers 127.0.0.0/8 and AnyIP routes, which a list of the
    interfaces' addresses does not), with lvsprobe's version and the host's name."""
    missing = set() if skip_check else set(check_pool(addresses))
    return {
        "clients": [a for a in addresses if a not in missing],
        "version": __version__,
        "host": socket.gethostname(),
    }


class RowSink(Batcher[FlowRecord]):
    """Where a shard's engine puts each finished flow: batched as a run's journal batches
    them (`Batcher`), each batch sent as one chunk."""

    def __init__(
        self,
        send: Callable[[dict[str, Any]], None],
        index: int,
        flush_rows: int = FLUSH_ROWS,
        flush_every_s: float = FLUSH_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(flush_rows, flush_every_s, clock)
        self.index, self.sent = index, 0
        self.started: Callable[[], int] = lambda: 0
        self.start: dict[str, float] = {}  # start_unix and late_s, sent with the first chunk
        self._send = send

    def _write(self, rows: list[FlowRecord]) -> None:
        message = {"shard": self.index, "kind": "rows", "rows": encode_rows(rows)}
        self._send({**message, "started": self.started(), **self._first()})
        self.sent += len(rows)

    def close(self) -> None:
        self.flush()

    def done(self, stop_reason: str | None) -> dict[str, Any]:
        """The shard's last message."""
        self.flush()
        message = {"shard": self.index, "kind": "done", "sent": self.sent}
        return {**message, "stop_reason": stop_reason, **self._first()}

    def _first(self) -> dict[str, float]:
        start, self.start = self.start, {}
        return start


def run_shard(spec: ShardSpec) -> dict[str, Any]:
    """The Dask task of one shard; returns its last message (also sent on the queue)."""
    from distributed import Queue

    queue = Queue(spec.queue)
    try:
        return _run(spec, queue)
    finally:
        queue.close()  # the client's handle keeps the queue until it has read it


def _run(spec: ShardSpec, queue: Any) -> dict[str, Any]:
    from distributed import Event, Variable

    try:
        plan = shard_flows(make_plan(spec.scenario, spec.max_flows), spec.clients)
        ids = [p.flow_id for p in plan]
        if len(plan) != spec.flows or plan_digest(ids) != spec.digest:
            raise RuntimeError(
                f"this worker's plan ({len(plan)} flows) is not the client's ({spec.flows}): "
                f"run the same lvsprobe on every host (this one has {__version__})"
            )
    except Exception as exc:
        message = {"shard": spec.index, "kind": "error", "message": f"{exc}"}
        queue.put(message)
        return message
    queue.put({"shard": spec.index, "kind": "ready"})
    start_unix = float(Variable(spec.go).get(timeout=GO_TIMEOUT_S))
    stop = Event(spec.stop)
    sink = RowSink(queue.put, spec.index, spec.flush_rows, spec.flush_every_s)
    if stop.is_set():
        return _finish(queue, sink, "interrupted")
    time.sleep(max(0.0, start_unix - time.time()))
    now = time.time()
    sink.start = {"start_unix": now, "late_s": now - start_unix}
    engine_cpu_s, process_cpu_s = time.thread_time(), time.process_time()
    stop_reason = _drive(spec, plan, sink, stop)
    # what the engine's thread used, and the worker process all told (Dask's own threads,
    # sending the chunks): where a shard's CPU went
    cpu_s = {
        "engine": round(time.thread_time() - engine_cpu_s, 3),
        "process": round(time.process_time() - process_cpu_s, 3),
    }
    return _finish(queue, sink, stop_reason, cpu_s)


def _finish(
    queue: Any, sink: RowSink, stop_reason: str | None, cpu_s: dict[str, float] | None = None
) -> dict[str, Any]:
    message = {**sink.done(stop_reason), "cpu_s": cpu_s}
    queue.put(message)
    return message


def _drive(spec: ShardSpec, plan: list[Any], sink: RowSink, stop: Any) -> str | None:
    """Run the shard's flows on the engine the client chose; a watcher thread turns the
    run's stop event into the engine's stop."""
    from lvsprobe.replay.fastloop import FastRunner
    from lvsprobe.replay.runparts import RunOptions

    # The engines use add, tick and flush of their journal: the sink has them.
    options = RunOptions(journal=sink)
    ended = threading.Event()
    stopper: list[Callable[[], object]] = []

    def watch() -> None:
        while not ended.is_set():
            try:
                stopped = stop.wait(STOP_POLL_S)
            except OSError:  # the scheduler is gone (the client quit): no one gets the rows
                stopped = True
            if stopped and stopper and not ended.is_set():
                stopper[0]()
                return

    if spec.fast:
        fast = FastRunner(spec.scenario, plan, options)
        sink.started = lambda: fast.progress.started
        stopper.append(fast.stop)
    watcher = threading.Thread(target=watch, name="lvsprobe-shard-stop", daemon=True)
    watcher.start()
    try:
        if spec.fast:
            fast.run()
            return fast.stop_reason

        from lvsprobe.replay.runner import Runner  # (asyncio: only for this engine)

        async def main() -> str | None:
            runner = Runner(spec.scenario, plan, options)
            sink.started = lambda: runner.progress.started
            loop = asyncio.get_running_loop()
            stopper.append(lambda: loop.call_soon_threadsafe(runner.stop))
            await runner.run()
            return runner.stop_reason

        return asyncio.run(main())
    finally:
        ended.set()
