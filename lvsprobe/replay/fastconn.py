"""One flow in flight in the epoll engine (fastloop.py): its socket, its sans-IO flow and
record, what waits to be sent, and where it stands (connected, finished, idle in the pool).
"""

from __future__ import annotations

import _socket

from lvsprobe.replay.flowrecord import FlowRecord
from lvsprobe.replay.flows import Finished, Flow
from lvsprobe.replay.plan import PlannedFlow


class Conn:
    """One flow in flight (a pooled connection outlives its flows)."""

    __slots__ = ("closed", "connected", "deadline", "fd", "finished", "flow", "half_close",
                 "idle", "mask", "out", "planned", "pooled", "record", "sock", "stream",
                 "wake_at")  # fmt: skip

    def __init__(
        self, sock: _socket.socket, planned: PlannedFlow, flow: Flow, record: FlowRecord, mask: int
    ) -> None:
        self.sock, self.fd = sock, sock.fileno()
        self.half_close = self.connected = self.closed = self.pooled = False
        self.stream = planned.kind != "udp"
        self.mask = mask  # what epoll watches it for
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
