"""A plain epoll loop for runs whose flows are all `tcp`, `http`, `udp` or `syn`: no asyncio.

Profiled in the TCG lab guest, the asyncio driver spent most of each short connection in
the event loop's own machinery (a task, futures for connect/send/receive, wait and timeout
handles) and reached ~20 new connections/s where this loop, doing only the syscalls and the
sans-IO flow's work per connection, reaches 2-3x that. Same flows (flows.py), same records,
same outcomes as the asyncio driver (driver.py), which still runs TLS and FTP flows.

One process: a second worker process was measured no faster in the 2-vCPU guest (its CPUs
are saturated by the backends, the kernel and the client together).
"""

from __future__ import annotations

import errno
import heapq
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from lvsprobe.replay.attribution import ConnSnapshot
from lvsprobe.replay.driver import (
    FlowContext,
    _local_port,
    _outcome,
    _socket,
    make_flow,
    new_record,
    record_event,
)
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.flows import (
    Finished,
    Flow,
    Step,
)
from lvsprobe.replay.plan import PlannedFlow, stages_of
from lvsprobe.replay.profile import windows
from lvsprobe.replay.scenario import Scenario

FAST_KINDS = frozenset({"tcp", "http", "udp", "syn"})
POLL_MAX_S = 0.25  # a stop request (Ctrl-C) is seen within this
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT


def fast_eligible(plan: list[PlannedFlow]) -> bool:
    """Whether every planned flow is of a kind this loop drives."""
    return all(p.kind in FAST_KINDS for p in plan)


class _Conn:
    """One flow in flight."""

    __slots__ = ("closed", "connected", "deadline", "fd", "finished", "flow", "half_close",
                 "idle", "mask", "out", "planned", "pooled", "record", "sock", "stream",
                 "wake_at")  # fmt: skip

    def __init__(
        self, sock: socket.socket, planned: PlannedFlow, flow: Flow, record: FlowRecord
    ) -> None:
        self.sock, self.fd = sock, sock.fileno()
        self.half_close = self.connected = self.closed = self.pooled = False
        self.stream = planned.kind != "udp"
        self.mask = _OUT
        self.attach(planned, flow, record)

    def attach(self, planned: PlannedFlow, flow: Flow, record: FlowRecord) -> None:
        """Give the connection its (next) flow: a pooled connection carries one after another;
        a timer of an earlier flow finds a later deadline and no wake-up, and does nothing."""
        self.planned, self.flow, self.record = planned, flow, record
        self.deadline = 0.0
        self.wake_at: float | None = None
        self.out = b""
        self.finished: Finished | None = None
        self.idle = False


class FastRunner:
    """Runs a plan of tcp/http/udp/syn flows; `run()` returns what `Runner.run()` does."""

    def __init__(self, scenario: Scenario, plan: list[PlannedFlow], options: Any) -> None:
        from lvsprobe.replay.runner import Progress

        self.scenario, self.plan, self.options = scenario, plan, options
        self.records: list[FlowRecord] = []
        self.progress = Progress(total=len(plan))
        self.snapshots: list[ConnSnapshot] = []
        self.stop_reason: str | None = None
        self.skipped = 0  # closed-stage flows their stage ended before
        self._ctx = FlowContext(scenario)
        self._t0 = self._unix0 = 0.0
        self._ep = select.epoll()
        self._conns: dict[int, _Conn] = {}
        self._timers: list[tuple[float, int, _Conn]] = []
        self._seq = 0
        self._stages = stages_of(scenario)
        self._windows = windows(self._stages)
        self._free: dict[int, int] = {}  # closed stages: slots ready for their next flow
        self._thinking: list[tuple[float, int]] = []  # (when a slot in think time frees, stage)
        self._pool_size = scenario.arrival.connections if scenario.arrival.model == "pool" else 0
        self._pool_open = 0  # pooled connections open (busy, idle or connecting)
        self._idle: list[_Conn] = []
        self._journal = options.journal
        self._live = options.live

    def stop(self, reason: str = "interrupted") -> None:
        """Ask the run to end now (safe from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def clock(self) -> float:
        return time.monotonic() - self._t0

    # ---- one flow -------------------------------------------------------------------------
    def _start(self, planned: PlannedFlow, start: float | None = None) -> None:
        """`start`: the clock reading a closed-stage flow was let in by (inside its window)."""
        start = self.clock() if start is None else start
        rec = new_record(planned, start, self._unix0 + start, self.scenario.target.protocol)
        self.records.append(rec)
        self.progress.started += 1
        if self._live is not None:
            self._live.started(planned.kind, start)
        if planned.kind == "syn":
            from lvsprobe.replay.synflow import send_syn_now

            send_syn_now(planned, rec, self.clock, self.scenario.seed)
            self._done(rec, planned)
            return
        flow = make_flow(planned, self._ctx)
        if self._idle:  # the pool model: the next request goes on a kept-alive connection
            conn = self._idle.pop()
            conn.attach(planned, flow, rec)
            rec.client_address, rec.client_port = conn.sock.getsockname()[:2]
            self._arm(conn, start)
            self._act(conn, flow.start(start))
            return
        kind = socket.SOCK_DGRAM if planned.kind == "udp" else socket.SOCK_STREAM
        try:
            sock = _socket(planned.client_address, planned.server_address, kind)
        except OSError as exc:
            rec.outcome, rec.detail = _outcome(exc)
            rec.end_s = self.clock()
            self._done(rec, planned)
            return
        conn = _Conn(sock, planned, flow, rec)
        if self._pool_size:
            conn.pooled = True
            self._pool_open += 1
        self._ep.register(conn.fd, _OUT)
        self._arm(conn, start)
        err = sock.connect_ex((planned.server_address, planned.server_port))
        if err == 0:
            self._connected(conn)
        elif err not in (errno.EINPROGRESS, errno.EAGAIN):
            self._fail(conn, OSError(err, os.strerror(err)))

    def _arm(self, conn: _Conn, start: float) -> None:
        conn.deadline = start + conn.planned.mix.hold_s + self.scenario.bounds.flow_timeout_s
        self._conns[conn.fd] = conn
        self._timer(conn.deadline, conn)

    def _timer(self, when: float, conn: _Conn) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, conn))

    def _connected(self, conn: _Conn) -> None:
        rec = conn.record
        conn.connected = True
        rec.client_port = conn.sock.getsockname()[1]
        rec.connect_s = self.clock() - rec.start_s
        self._mask(conn, _IN)
        self._act(conn, conn.flow.start(self.clock()))

    def _mask(self, conn: _Conn, mask: int) -> None:
        if conn.mask != mask and not conn.closed:
            conn.mask = mask
            self._ep.modify(conn.fd, mask)

    def _act(self, conn: _Conn, step: Step) -> None:
        for event in step.events:
            if record_event(conn.record, event, self.clock):
                continue
            if isinstance(event, Finished) and conn.finished is None:
                conn.finished = event
        if step.wake_at is not None:
            conn.wake_at = step.wake_at
            self._timer(step.wake_at, conn)
        if step.send:
            if conn.stream:
                conn.out += step.send
            else:  # one datagram per step
                try:
                    conn.sock.send(step.send)
                except OSError as exc:
                    self._fail(conn, exc)
                    return
                conn.record.out_bytes += len(step.send)
        conn.half_close = conn.half_close or step.half_close
        if conn.out or conn.half_close:
            self._flush(conn)
        if conn.finished is None or conn.closed:
            return
        if conn.pooled and conn.finished.outcome == "ok" and not conn.out:
            self._release(conn)
        else:
            self._close(conn)

    def _flush(self, conn: _Conn) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except BlockingIOError:
                break
            except OSError as exc:
                self._fail(conn, exc)
                return
            conn.out = conn.out[sent:]
            conn.record.out_bytes += sent
        if conn.out:
            self._mask(conn, _IN | _OUT)
            return
        if conn.half_close:
            conn.half_close = False
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                self._fail(conn, exc)
                return
        self._mask(conn, _IN)

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(conn, exc)
            return
        if conn.idle:  # a kept-alive connection the server closed (or wrote to unasked)
            self._close(conn)
            return
        conn.record.in_bytes += len(data)
        self._act(conn, conn.flow.receive(data, self.clock()))
        if data or not conn.stream or conn.closed:
            return
        if conn.idle:
            self._close(conn)
        else:  # EOF the flow did not end on
            conn.finished = Finished("reset", "connection closed")
            self._close(conn)

    def _due(self, conn: _Conn, now: float) -> None:
        if now >= conn.deadline - 1e-6:  # first: a flow that keeps asking still ends
            spent = conn.deadline - conn.record.start_s
            self._fail(conn, TimeoutError(f"no progress within {spent:.1f}s"))
        elif conn.wake_at is not None and now >= conn.wake_at - 1e-4:
            conn.wake_at = None
            self._act(conn, conn.flow.timer(now))

    def _fail(self, conn: _Conn, exc: BaseException) -> None:
        if not conn.idle:
            conn.record.outcome, conn.record.detail = _outcome(exc)
            if conn.record.client_port is None:  # refused: the port the director saw
                conn.record.client_port = _local_port(conn.sock)
        self._close(conn)

    def _release(self, conn: _Conn) -> None:
        """A pooled request ended well: record it, keep its connection for the next one."""
        rec = conn.record
        rec.end_s = self.clock()
        rec.outcome, rec.detail = "ok", None
        conn.idle = True
        self._conns[conn.fd] = conn  # still watched: the server may close it while idle
        self._idle.append(conn)
        self._done(rec, conn.planned)

    def _close(self, conn: _Conn, outcome: str | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.fd, None)
        self._ep.unregister(conn.fd)
        conn.sock.close()
        if conn.pooled:
            self._pool_open -= 1
        if conn.idle:
            self._idle.remove(conn)
            return
        rec = conn.record
        rec.end_s = self.clock()
        if outcome is not None:
            rec.outcome, rec.detail = outcome, None
        elif conn.finished is not None:
            rec.outcome, rec.detail = conn.finished.outcome, conn.finished.detail
        self._done(rec, conn.planned)

    def _done(self, rec: FlowRecord, planned: PlannedFlow) -> None:
        rec.settle()
        self.progress.done += 1
        if rec.outcome != "ok":
            self.progress.errors += 1
        if self._journal is not None:
            self._journal.add(rec)
        if self._live is not None:
            self._live.finished(rec)
        if planned.at_s is None:  # a closed-stage slot frees, now or after its think time
            if planned.mix.think_s > 0:
                heapq.heappush(self._thinking, (self.clock() + planned.mix.think_s, planned.stage))
            else:
                self._free[planned.stage] = self._free.get(planned.stage, 0) + 1

    # ---- the run --------------------------------------------------------------------------
    def _snapshot_thread(self, halt: threading.Event) -> None:
        reader = self.options.conn_table
        while not halt.is_set():
            try:
                data = reader()
            except Exception:  # the final snapshot, taken by the run itself, reports it
                return
            self.snapshots.append(ConnSnapshot(self.clock(), data))
            halt.wait(self.options.snapshot_every_s)

    def _ready(self, planned: PlannedFlow, now: float) -> bool | None:
        """Whether `planned` can start now; None: never (its closed stage has ended)."""
        if planned.at_s is not None:  # open: when due (pool: and a connection is free)
            if planned.at_s > now:
                return False
            return not self._pool_size or bool(self._idle) or self._pool_open < self._pool_size
        start, end = self._windows[planned.stage]
        if now >= end:
            return None
        if now < start:
            return False
        free = self._free.setdefault(planned.stage, self._stages[planned.stage].concurrency)
        return free > 0

    def _arrivals(self, pending: Iterator[PlannedFlow], nxt: PlannedFlow | None, now: float) -> Any:
        """Start what is due; the next planned flow not started yet."""
        while self._thinking and self._thinking[0][0] <= now:
            stage = heapq.heappop(self._thinking)[1]
            self._free[stage] = self._free.get(stage, 0) + 1
        while nxt is not None and self.stop_reason is None:
            # A closed-stage flow is judged on a fresh reading, recorded as its start: the
            # batch's `now` may be stale by the flows started before it in this batch.
            closed_now = None if nxt.at_s is not None else self.clock()
            ready = self._ready(nxt, now if closed_now is None else closed_now)
            if ready is False:
                break
            if ready is None:
                self.skipped += 1
            else:
                if nxt.at_s is None:
                    self._free[nxt.stage] -= 1
                self._start(nxt, closed_now)
            nxt = next(pending, None)
        return nxt

    def _wait_s(self, nxt: PlannedFlow | None, now: float, until: float) -> float:
        wait = min(POLL_MAX_S, until - now)
        if self._timers:
            wait = min(wait, self._timers[0][0] - now)
        if self._thinking:
            wait = min(wait, self._thinking[0][0] - now)
        if nxt is not None and nxt.at_s is not None and nxt.at_s > now:
            wait = min(wait, nxt.at_s - now)  # (due but no free connection: events decide)
        elif nxt is not None and nxt.at_s is None:  # its stage's start, or end (to skip)
            start, end = self._windows[nxt.stage]
            wait = min(wait, (start if now < start else end) - now)
        return max(0.0, wait)

    def _events(self, timeout_s: float) -> None:
        for fd, mask in self._ep.poll(timeout_s):
            conn = self._conns.get(fd)
            if conn is None:
                continue
            if not conn.connected:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._fail(conn, OSError(err, os.strerror(err)))
                elif mask & (_OUT | select.EPOLLHUP | select.EPOLLERR):
                    self._connected(conn)
                continue
            if mask & _OUT and conn.out:
                self._flush(conn)
            if mask & ~_OUT and not conn.closed:
                self._readable(conn)
        now, due = self.clock(), []
        while self._timers and self._timers[0][0] <= now:
            due.append(heapq.heappop(self._timers)[2])
        for conn in due:  # a wake-up asked for now or earlier waits a turn: no spin
            if not conn.closed and not conn.idle:
                self._due(conn, now)

    def run(self) -> Any:
        from lvsprobe.replay.runner import RunResult

        self._t0, self._unix0 = time.monotonic(), time.time()
        halt = threading.Event()
        snapper = None
        if self.options.conn_table is not None:
            snapper = threading.Thread(target=self._snapshot_thread, args=(halt,), daemon=True)
            snapper.start()
        limit = self.scenario.bounds.max_duration_s
        pending = iter(self.plan)
        nxt = next(pending, None)
        next_progress = 0.0 if self.options.on_progress is not None else float("inf")
        try:
            while self.stop_reason is None:
                now = self.clock()
                if now >= limit:
                    self.stop("run-ended")
                    break
                nxt = self._arrivals(pending, nxt, now)
                if nxt is None and len(self._conns) == len(self._idle):
                    break
                if now >= next_progress:
                    self.progress.elapsed_s = now
                    self.options.on_progress(self.progress)  # set when next_progress is
                    next_progress = now + self.options.progress_every_s
                self._events(self._wait_s(nxt, now, min(limit, next_progress)))
                if self._journal is not None:
                    self._journal.tick()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn, f"error:{self.stop_reason or 'run-ended'}")
            self._ep.close()
            halt.set()
            if snapper is not None:
                snapper.join()
        if self.options.conn_table is not None and not self.options.hurry():
            self.snapshots.append(ConnSnapshot(self.clock(), self.options.conn_table()))
        if self.options.on_progress is not None:
            self.progress.elapsed_s = self.clock()
            self.options.on_progress(self.progress)
        self.records.sort(key=lambda r: r.flow_id)
        return RunResult(
            self.records, {}, self.stop_reason == "interrupted", self.snapshots, self.skipped
        )
