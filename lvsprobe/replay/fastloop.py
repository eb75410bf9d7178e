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
from lvsprobe.replay.plan import PlannedFlow
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
                 "mask", "out", "planned", "record", "sock", "stream", "wake_at")  # fmt: skip

    def __init__(
        self, sock: socket.socket, planned: PlannedFlow, flow: Flow, record: FlowRecord
    ) -> None:
        self.sock, self.fd, self.planned = sock, sock.fileno(), planned
        self.flow, self.record = flow, record
        self.deadline = 0.0
        self.wake_at: float | None = None
        self.out = b""
        self.half_close = self.connected = self.closed = False
        self.finished: Finished | None = None
        self.stream = planned.kind != "udp"
        self.mask = _OUT


class FastRunner:
    """Runs a plan of tcp/http/udp/syn flows; `run()` returns what `Runner.run()` does."""

    def __init__(self, scenario: Scenario, plan: list[PlannedFlow], options: Any) -> None:
        from lvsprobe.replay.runner import Progress

        self.scenario, self.plan, self.options = scenario, plan, options
        self.records: list[FlowRecord] = []
        self.progress = Progress(total=len(plan))
        self.snapshots: list[ConnSnapshot] = []
        self.stop_reason: str | None = None
        self._ctx = FlowContext(scenario)
        self._t0 = self._unix0 = 0.0
        self._ep = select.epoll()
        self._conns: dict[int, _Conn] = {}
        self._timers: list[tuple[float, int, _Conn]] = []
        self._seq = 0
        self._free = 0  # closed loop: slots ready for their next flow
        self._thinking: list[float] = []  # closed loop: when slots in think time free up

    def stop(self, reason: str = "interrupted") -> None:
        """Ask the run to end now (safe from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def clock(self) -> float:
        return time.monotonic() - self._t0

    # ---- one flow -------------------------------------------------------------------------
    def _start(self, planned: PlannedFlow) -> None:
        start = self.clock()
        rec = new_record(planned, start, self._unix0 + start, self.scenario.target.protocol)
        self.records.append(rec)
        self.progress.started += 1
        if planned.kind == "syn":
            from lvsprobe.replay.synflow import send_syn_now

            send_syn_now(planned, rec, self.clock, self.scenario.seed)
            self._done(rec, planned)
            return
        flow = make_flow(planned, self._ctx)
        kind = socket.SOCK_DGRAM if planned.kind == "udp" else socket.SOCK_STREAM
        try:
            sock = _socket(planned.client_address, planned.server_address, kind)
        except OSError as exc:
            rec.outcome, rec.detail = _outcome(exc)
            rec.end_s = self.clock()
            self._done(rec, planned)
            return
        conn = _Conn(sock, planned, flow, rec)
        conn.deadline = start + planned.mix.hold_s + self.scenario.bounds.flow_timeout_s
        self._conns[conn.fd] = conn
        self._ep.register(conn.fd, _OUT)
        self._timer(conn.deadline, conn)
        err = sock.connect_ex((planned.server_address, planned.server_port))
        if err == 0:
            self._connected(conn)
        elif err not in (errno.EINPROGRESS, errno.EAGAIN):
            self._fail(conn, OSError(err, os.strerror(err)))

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
        if conn.finished is not None:
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
        conn.record.in_bytes += len(data)
        self._act(conn, conn.flow.receive(data, self.clock()))
        if not data and conn.stream and not conn.closed:  # EOF the flow did not end on
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
        conn.record.outcome, conn.record.detail = _outcome(exc)
        if conn.record.client_port is None:  # refused: the port the director saw
            conn.record.client_port = _local_port(conn.sock)
        self._close(conn)

    def _close(self, conn: _Conn, outcome: str | None = None) -> None:
        if conn.closed:
            return
        conn.closed = True
        rec = conn.record
        self._conns.pop(conn.fd, None)
        self._ep.unregister(conn.fd)
        conn.sock.close()
        rec.end_s = self.clock()
        if outcome is not None:
            rec.outcome, rec.detail = outcome, None
        elif conn.finished is not None:
            rec.outcome, rec.detail = conn.finished.outcome, conn.finished.detail
        self._done(rec, conn.planned)

    def _done(self, rec: FlowRecord, planned: PlannedFlow) -> None:
        self.progress.done += 1
        if rec.outcome != "ok":
            self.progress.errors += 1
        if self.scenario.arrival.model == "closed":
            if planned.mix.think_s > 0:
                heapq.heappush(self._thinking, self.clock() + planned.mix.think_s)
            else:
                self._free += 1

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

    def _arrivals(self, pending: Iterator[PlannedFlow], nxt: PlannedFlow | None, now: float) -> Any:
        """Start what is due; the next planned flow not started yet."""
        if self.scenario.arrival.model == "closed":
            while self._thinking and self._thinking[0] <= now:
                heapq.heappop(self._thinking)
                self._free += 1
            while self._free > 0 and nxt is not None and self.stop_reason is None:
                self._free -= 1
                self._start(nxt)
                nxt = next(pending, None)
            return nxt
        while nxt is not None and (nxt.at_s or 0.0) <= now and self.stop_reason is None:
            self._start(nxt)
            nxt = next(pending, None)
        return nxt

    def _wait_s(self, nxt: PlannedFlow | None, now: float, until: float) -> float:
        wait = min(POLL_MAX_S, until - now)
        if self._timers:
            wait = min(wait, self._timers[0][0] - now)
        if self._thinking:
            wait = min(wait, self._thinking[0] - now)
        if nxt is not None and self.scenario.arrival.model != "closed":
            wait = min(wait, (nxt.at_s or 0.0) - now)
        return max(0.0, wait)

    def run(self) -> Any:
        from lvsprobe.replay.runner import RunResult

        self._t0, self._unix0 = time.monotonic(), time.time()
        self._free = self.scenario.arrival.concurrency
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
                if nxt is None and not self._conns:
                    break
                if now >= next_progress:
                    self.progress.elapsed_s = now
                    self.options.on_progress(self.progress)  # set when next_progress is
                    next_progress = now + self.options.progress_every_s
                for fd, mask in self._ep.poll(self._wait_s(nxt, now, min(limit, next_progress))):
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
                    if not conn.closed:
                        self._due(conn, now)
        finally:
            for conn in list(self._conns.values()):
                self._close(conn, f"error:{self.stop_reason or 'run-ended'}")
            self._ep.close()
            halt.set()
            if snapper is not None:
                snapper.join()
        if self.options.conn_table is not None:
            self.snapshots.append(ConnSnapshot(self.clock(), self.options.conn_table()))
        if self.options.on_progress is not None:
            self.progress.elapsed_s = self.clock()
            self.options.on_progress(self.progress)
        self.records.sort(key=lambda r: r.flow_id)
        return RunResult(self.records, {}, self.stop_reason == "interrupted", self.snapshots)
