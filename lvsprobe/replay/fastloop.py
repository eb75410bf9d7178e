"""A plain epoll loop for runs whose flows are all `tcp`, `http`, `udp` or `syn`: no asyncio.

Profiled in the TCG lab guest, the asyncio driver spent most of each short connection in
the event loop's own machinery (a task, futures for connect/send/receive, wait and timeout
handles) and reached ~20 new connections/s where this loop, doing only the syscalls and the
sans-IO flow's work per connection, reaches 2-3x that. Same flows (flows.py), same records,
same outcomes as the asyncio driver (driver.py), which still runs TLS and FTP flows.

Per connection it makes the calls wrk makes (socket, non-blocking connect, one write, reads
until the response is complete, close) plus what the director's join needs: bind to the
flow's client address and getsockname for its port. SO_ERROR is read only when epoll reports
an error or hang-up, and close() drops the fd from the epoll set (no EPOLL_CTL_DEL).

The clock is read once per batch of epoll events, as the wait returns: every event of the
batch (a connect completing, a first byte, a flow's end) is timed by when the kernel had it
ready, not by how far down the batch Python got to it. A flow's start is read fresh (the
flows started before it took time), so its events, all in later batches, never precede it.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import socket
import threading
import time
from typing import Any

from lvsprobe.replay.attribution import ConnSnapshot
from lvsprobe.replay.fastconn import Conn
from lvsprobe.replay.fastsched import Arrivals, Timers
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.flows import Finished, Step
from lvsprobe.replay.flowstart import (
    FlowContext,
    _local_port,
    _outcome,
    bound_socket,
    make_flow,
    new_record,
    record_events,
)
from lvsprobe.replay.gcpause import collections_paused
from lvsprobe.replay.plan import PlannedFlow, stages_of
from lvsprobe.replay.runparts import Progress, RunResult
from lvsprobe.replay.scenario import Scenario

FAST_KINDS = frozenset({"tcp", "http", "udp", "syn"})
POLL_MAX_S = 0.25  # a stop request (Ctrl-C) is seen within this
_IN, _OUT = select.EPOLLIN, select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP


def fast_eligible(plan: list[PlannedFlow]) -> bool:
    """Whether every planned flow is of a kind this loop drives."""
    return all(p.kind in FAST_KINDS for p in plan)


class FastRunner:
    """Runs a plan of tcp/http/udp/syn flows; `run()` returns what `Runner.run()` does."""

    def __init__(self, scenario: Scenario, plan: list[PlannedFlow], options: Any) -> None:
        self.scenario, self.plan, self.options = scenario, plan, options
        self.records: list[FlowRecord] = []
        self.progress = Progress(total=len(plan))
        self.snapshots: list[ConnSnapshot] = []
        self.stop_reason: str | None = None
        self._ctx = FlowContext(scenario)
        self._t0 = self._unix0 = 0.0
        self._ep = select.epoll()
        self._conns: dict[int, Conn] = {}
        self._timers: Timers[int] = Timers()  # by fd: a closed flow's timers hold nothing of it
        self._arrivals = Arrivals(plan, stages_of(scenario))
        self._pool_size = scenario.arrival.connections if scenario.arrival.model == "pool" else 0
        self._pool_open = 0  # pooled connections open (busy, idle or connecting)
        self._idle: list[Conn] = []
        self._journal = options.journal
        self._live = options.live

    def stop(self, reason: str = "interrupted") -> None:
        """Ask the run to end now (safe from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._arrivals.stopped = True

    @property
    def skipped(self) -> int:
        """Closed-stage flows their stage ended before."""
        return self._arrivals.skipped

    def clock(self) -> float:
        return time.monotonic() - self._t0

    def _pool_free(self) -> bool:
        return not self._pool_size or bool(self._idle) or self._pool_open < self._pool_size

    # ---- one flow -------------------------------------------------------------------------
    def _start(self, planned: PlannedFlow, start: float) -> None:
        """`start`: the clock reading the flow was let in by (a closed one: inside its window)."""
        rec = new_record(planned, start, self._unix0 + start, self.scenario.target.protocol)
        self.records.append(rec)
        self.progress.started += 1
        if self._live is not None:
            self._live.started(planned.kind, start)
        if planned.kind == "syn":
            from lvsprobe.replay.synflow import send_syn_now

            send_syn_now(planned, rec, self.clock, self.scenario.seed)
            self._done(rec, planned, rec.end_s)
            return
        flow = make_flow(planned, self._ctx)
        if self._idle:  # the pool model: the next request goes on a kept-alive connection
            conn = self._idle.pop()
            conn.attach(planned, flow, rec)
            rec.client_address, rec.client_port = conn.sock.getsockname()[:2]
            self._arm(conn, start)
            self._act(conn, flow.start(start), start)
            return
        kind = socket.SOCK_DGRAM if planned.kind == "udp" else socket.SOCK_STREAM
        try:
            sock = bound_socket(
                _socket.socket, planned.client_address, planned.server_address, kind
            )
        except OSError as exc:
            rec.outcome, rec.detail = _outcome(exc)
            rec.end_s = self.clock()
            self._done(rec, planned, rec.end_s)
            return
        conn = Conn(sock, planned, flow, rec, _OUT)
        if self._pool_size:
            conn.pooled = True
            self._pool_open += 1
        self._ep.register(conn.fd, _OUT)
        self._arm(conn, start)
        err = sock.connect_ex((planned.server_address, planned.server_port))
        if err == 0:  # (udp; tcp only ever in progress)
            self._connected(conn, self.clock())
        elif err not in (errno.EINPROGRESS, errno.EAGAIN):
            self._fail(conn, OSError(err, os.strerror(err)), self.clock())

    def _arm(self, conn: Conn, start: float) -> None:
        span = conn.planned.mix.hold_s + self.scenario.bounds.flow_timeout_s
        conn.deadline = start + span
        self._conns[conn.fd] = conn
        self._timers.deadline(span, conn.deadline, conn.fd)

    def _connected(self, conn: Conn, now: float) -> None:
        rec = conn.record
        conn.connected = True
        rec.client_port = conn.sock.getsockname()[1]
        rec.connect_s = now - rec.start_s
        conn.mask = _IN  # (it was _OUT, and it is open)
        self._ep.modify(conn.fd, _IN)
        self._act(conn, conn.flow.start(now), now)

    def _mask(self, conn: Conn, mask: int) -> None:
        if conn.mask != mask and not conn.closed:
            conn.mask = mask
            self._ep.modify(conn.fd, mask)

    def _act(self, conn: Conn, step: Step, now: float) -> None:
        if step.events:
            finished = record_events(conn.record, step.events, now)
            if conn.finished is None:
                conn.finished = finished
        if step.wake_at is not None:
            conn.wake_at = step.wake_at
            self._timers.wake(step.wake_at, conn.fd)
        if step.send:
            if conn.stream:
                conn.out += step.send
            else:  # one datagram per step
                try:
                    conn.sock.send(step.send)
                except OSError as exc:
                    self._fail(conn, exc, now)
                    return
                conn.record.out_bytes += len(step.send)
        if step.half_close:
            conn.half_close = True
        if conn.out or conn.half_close:
            self._flush(conn, now)
        if conn.finished is None or conn.closed:
            return
        if conn.pooled and conn.finished.outcome == "ok" and not conn.out:
            self._release(conn, now)
        else:
            self._close(conn, now)

    def _flush(self, conn: Conn, now: float) -> None:
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except BlockingIOError:
                break
            except OSError as exc:
                self._fail(conn, exc, now)
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
                self._fail(conn, exc, now)
                return
        if conn.mask != _IN:
            self._mask(conn, _IN)

    def _readable(self, conn: Conn, now: float) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(conn, exc, now)
            return
        if conn.idle:  # a kept-alive connection the server closed (or wrote to unasked)
            self._close(conn, now)
            return
        conn.record.in_bytes += len(data)
        self._act(conn, conn.flow.receive(data, now), now)
        if data or not conn.stream or conn.closed:
            return
        if conn.idle:
            self._close(conn, now)
        else:  # EOF the flow did not end on
            conn.finished = Finished("reset", "connection closed")
            self._close(conn, now)

    def _due(self, conn: Conn, now: float) -> None:
        if now >= conn.deadline - 1e-6:  # first: a flow that keeps asking still ends
            spent = conn.deadline - conn.record.start_s
            self._fail(conn, TimeoutError(f"no progress within {spent:.1f}s"), now)
        elif conn.wake_at is not None and now >= conn.wake_at - 1e-4:
            conn.wake_at = None
            self._act(conn, conn.flow.timer(now), now)

    def _fail(self, conn: Conn, exc: BaseException, now: float) -> None:
        if not conn.idle:
            conn.record.outcome, conn.record.detail = _outcome(exc)
            if conn.record.client_port is None:  # refused: the port the director saw
                conn.record.client_port = _local_port(conn.sock)
        self._close(conn, now)

    def _release(self, conn: Conn, now: float) -> None:
        """A pooled request ended well: record it, keep its connection for the next one."""
        rec = conn.record
        rec.end_s = now
        rec.outcome, rec.detail = "ok", None
        conn.idle = True
        self._conns[conn.fd] = conn  # still watched: the server may close it while idle
        self._idle.append(conn)
        self._done(rec, conn.planned, now)

    def _close(self, conn: Conn, now: float, outcome: str | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.fd, None)
        conn.sock.close()  # its only fd: the kernel drops it from the epoll set
        if conn.pooled:
            self._pool_open -= 1
        if conn.idle:
            self._idle.remove(conn)
            return
        rec = conn.record
        rec.end_s = now
        if outcome is not None:
            rec.outcome, rec.detail = outcome, None
        elif conn.finished is not None:
            rec.outcome, rec.detail = conn.finished.outcome, conn.finished.detail
        self._done(rec, conn.planned, now)

    def _done(self, rec: FlowRecord, planned: PlannedFlow, now: float) -> None:
        rec.settle()
        self.progress.done += 1
        if rec.outcome != "ok":
            self.progress.errors += 1
        if self._journal is not None:
            self._journal.add(rec)
        if self._live is not None:
            self._live.finished(rec)
        if planned.at_s is None:
            self._arrivals.freed(planned, now)

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

    def _wait_s(self, now: float, until: float) -> float:
        wait = self._arrivals.wait_s(now, min(until, now + POLL_MAX_S))
        return max(0.0, min(wait, self._timers.next_s() - now))

    def _events(self, timeout_s: float) -> None:
        ready = self._ep.poll(timeout_s)
        now = self.clock()  # the batch's time (the module's docstring says why)
        conns = self._conns
        for fd, mask in ready:
            conn = conns.get(fd)
            if conn is None:
                continue
            if not conn.connected:
                # a failed connect shows as an error or hang-up: only then ask SO_ERROR why
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if mask & _ERR else 0
                if err:
                    self._fail(conn, OSError(err, os.strerror(err)), now)
                elif mask & (_OUT | _ERR):
                    self._connected(conn, now)
                continue
            if mask & _OUT and conn.out:
                self._flush(conn, now)
            if mask & ~_OUT and not conn.closed:
                self._readable(conn, now)
        # A wake-up asked for now or earlier waits a turn: no spin. A timer names an fd, not a
        # flow: the flow holding that fd now (maybe a later one) is checked against its own
        # deadline and wake-up, so a stale entry does nothing.
        for fd in self._timers.due(now):
            conn = self._conns.get(fd)
            if conn is not None and not conn.idle:
                self._due(conn, now)

    def run(self) -> Any:
        self._t0, self._unix0 = time.monotonic(), time.time()
        halt = threading.Event()
        snapper = None
        if self.options.conn_table is not None:
            snapper = threading.Thread(target=self._snapshot_thread, args=(halt,), daemon=True)
            snapper.start()
        limit = self.scenario.bounds.max_duration_s
        arrivals = self._arrivals
        next_progress = 0.0 if self.options.on_progress is not None else float("inf")
        # What the loop makes per flow dies by reference count as the flow ends (its Conn,
        # socket, sans-IO flow, steps and events: no cycle among them, test_fastsched.py), but
        # its record lives on: collections, triggered by the short-lived allocations, walked
        # the growing record list (and the plan) again and again, a tenth of the loop's CPU.
        with collections_paused():
            try:
                while self.stop_reason is None:
                    now = self.clock()
                    if now >= limit:
                        self.stop("run-ended")
                        break
                    arrivals.start_due(now, self.clock, self._start, self._pool_free)
                    if arrivals.next is None and len(self._conns) == len(self._idle):
                        break
                    if now >= next_progress:
                        self.progress.elapsed_s = now
                        self.options.on_progress(self.progress)  # set when next_progress is
                        next_progress = now + self.options.progress_every_s
                    self._events(self._wait_s(now, min(limit, next_progress)))
                    if self._journal is not None:
                        self._journal.tick()
            finally:
                ended = f"error:{self.stop_reason or 'run-ended'}"
                for conn in list(self._conns.values()):
                    self._close(conn, self.clock(), ended)
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
