"""The asyncio driver: a thin loop that moves bytes between sockets and sans-IO flows (what
it shares with the epoll engine, a flow's socket, record and outcome, is in flowstart.py)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.flows import Finished, Flow, Step
from lvsprobe.replay.flowstart import (
    FlowContext,
    _local_port,
    _outcome,
    _socket,
    make_flow,
    new_record,
    record_events,
)
from lvsprobe.replay.ftpflow import FtpFlow, ListenData, OpenData
from lvsprobe.replay.plan import PlannedFlow
from lvsprobe.replay.tlsflow import TlsSession

# what a caller of this driver takes from here (the shared parts with it)
__all__ = ["FlowContext", "FlowRun", "drive_flow", "new_record", "record_events"]


class FlowRun:
    """Drives one flow to its end and fills its record. `clock` is the loop's monotonic time
    relative to the run start."""

    def __init__(
        self,
        planned: PlannedFlow,
        flow: Flow,
        record: FlowRecord,
        clock: Callable[[], float],
        ctx: FlowContext,
        timeout_s: float,
    ):
        self.planned, self.flow, self.record, self.clock = planned, flow, record, clock
        self.ctx = ctx
        self.deadline = record.start_s + planned.mix.hold_s + timeout_s
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.socks: list[socket.socket] = []
        self.finished: Finished | None = None
        self.wake_at: float | None = None
        self.loop = asyncio.get_running_loop()

    def _apply(self, events: list[Any]) -> None:
        if not events:
            return
        finished = record_events(self.record, events, self.clock())
        if self.finished is None:
            self.finished = finished
        for event in events:
            if isinstance(event, TlsSession):
                self.ctx.sessions[self.planned.client_address] = event.session
            elif isinstance(event, OpenData):
                self._spawn(self._open_data(event))
            elif isinstance(event, ListenData):
                self._spawn(self._listen_data())

    def _spawn(self, coro: Any) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def _act(self, step: Step, sock: socket.socket) -> None:
        self._apply(step.events)
        if step.wake_at is not None:
            self.wake_at = step.wake_at
        if step.send:
            await self.loop.sock_sendall(sock, step.send)  # UDP: one datagram per step
            self.record.out_bytes += len(step.send)
        if step.half_close:
            sock.shutdown(socket.SHUT_WR)

    async def _pump(self, sock: socket.socket, channel: str) -> None:
        try:
            while True:
                data = await self.loop.sock_recv(sock, 65536)
                await self.queue.put((channel, data))
                if not data:
                    return
        except OSError as exc:
            await self.queue.put((channel + "-error", exc))

    async def _open_data(self, event: OpenData) -> None:
        try:
            sock = _socket(self.planned.client_address, event.host, socket.SOCK_STREAM)
            self.socks.append(sock)
            await self.loop.sock_connect(sock, (event.host, event.port))
            self.record.ftp_data_client_port = sock.getsockname()[1]
        except OSError as exc:
            await self.queue.put(("data-error", exc))
            return
        await self._pump(sock, "data")

    async def _listen_data(self) -> None:
        src = self.planned.client_address
        family = socket.AF_INET6 if ":" in src else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        self.socks.append(listener)
        listener.setblocking(False)
        listener.bind((src, 0))
        listener.listen(1)
        await self.queue.put(("listening", listener.getsockname()[1]))
        conn, _ = await self.loop.sock_accept(listener)
        self.socks.append(conn)
        await self._pump(conn, "data")

    async def run(self) -> None:
        """Connect, then feed the flow until it finishes, fails or runs out of time."""
        rec, planned = self.record, self.planned
        udp = planned.kind == "udp"
        try:
            sock = _socket(
                planned.client_address,
                planned.server_address,
                socket.SOCK_DGRAM if udp else socket.SOCK_STREAM,
            )
            self.socks.append(sock)
            async with asyncio.timeout(max(0.001, self.deadline - self.clock())):
                await self.loop.sock_connect(sock, (planned.server_address, planned.server_port))
            rec.client_port = sock.getsockname()[1]
            rec.connect_s = self.clock() - rec.start_s
            if isinstance(self.flow, FtpFlow):
                await self._queued(sock)
            else:
                await self._direct(sock)
        except (OSError, TimeoutError) as exc:
            rec.outcome, rec.detail = _outcome(exc)
            if rec.client_port is None and self.socks:  # refused: the port the director saw
                rec.client_port = _local_port(self.socks[0])
        finally:
            rec.end_s = self.clock()
            for task in self.tasks:
                task.cancel()
            for s in self.socks:
                # Unregister before closing: a cancelled sock_recv leaves its fd in the loop's
                # selector until its task runs again; a new socket reusing the fd number would
                # then fail in epoll_ctl(MOD) with ENOENT (seen on FTP data connections).
                if s.fileno() >= 0:
                    self.loop.remove_reader(s)
                    self.loop.remove_writer(s)
                s.close()
        if self.finished is not None:
            rec.outcome, rec.detail = self.finished.outcome, self.finished.detail

    def _limit(self) -> float:
        """Seconds until the flow's next timer or its deadline."""
        limit = self.deadline if self.wake_at is None else min(self.deadline, self.wake_at)
        return max(0.0, limit - self.clock())

    async def _timer_due(self, sock: socket.socket) -> None:
        """The wait ran out: fire the flow's timer, or fail the flow if it was the deadline."""
        if self.wake_at is not None and self.clock() >= self.wake_at - 1e-4:
            self.wake_at = None
            await self._act(self.flow.timer(self.clock()), sock)
            return
        spent = self.deadline - self.record.start_s
        raise TimeoutError(f"no progress within {spent:.1f}s")

    async def _direct(self, sock: socket.socket) -> None:
        """One socket: receive straight from it (no queue, no pump task: the cheap path).

        The pending receive is never cancelled by a timer: a cancelled sock_recv can lose
        bytes it already read (cancellation lands after the read, before the result).
        """
        await self._act(self.flow.start(self.clock()), sock)
        receiving: asyncio.Future[bytes] | None = None
        try:
            while self.finished is None:
                if receiving is None:
                    receiving = asyncio.ensure_future(self.loop.sock_recv(sock, 65536))
                done, _ = await asyncio.wait({receiving}, timeout=self._limit())
                if not done:
                    await self._timer_due(sock)
                    continue
                data = receiving.result()
                receiving = None
                self.record.in_bytes += len(data)
                await self._act(self.flow.receive(data, self.clock()), sock)
        finally:
            if receiving is not None:
                receiving.cancel()

    async def _queued(self, sock: socket.socket) -> None:
        """Control and data connections (FTP): their readers feed one queue."""
        self._spawn(self._pump(sock, "ctl"))
        await self._act(self.flow.start(self.clock()), sock)
        while self.finished is None:
            try:
                async with asyncio.timeout(self._limit()):
                    channel, item = await self.queue.get()
            except TimeoutError:
                await self._timer_due(sock)
                continue
            await self._dispatch(channel, item, sock)

    async def _dispatch(self, channel: str, item: Any, sock: socket.socket) -> None:
        now = self.clock()
        if channel.endswith("-error"):
            raise item
        if channel == "ctl":
            self.record.in_bytes += len(item)
            await self._act(self.flow.receive(item, now), sock)
        elif channel == "data" and isinstance(self.flow, FtpFlow):
            self.record.in_bytes += len(item)
            await self._act(self.flow.data_received(item, now), sock)
        elif channel == "listening" and isinstance(self.flow, FtpFlow):
            await self._act(self.flow.data_listening(self.planned.client_address, item, now), sock)


async def drive_flow(
    planned: PlannedFlow, record: FlowRecord, clock: Callable[[], float], ctx: FlowContext
) -> None:
    """Run one planned stream/datagram flow, filling `record` (its outcome included)."""
    flow = make_flow(planned, ctx)
    run = FlowRun(planned, flow, record, clock, ctx, ctx.scenario.bounds.flow_timeout_s)
    try:
        await run.run()
    finally:
        record.end_s = clock()
        for task in run.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            for s in run.socks:
                s.close()
