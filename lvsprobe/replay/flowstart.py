"""What both engines (the asyncio driver, driver.py, and the epoll loop, fastloop.py) need to
start a planned flow and record it: its sans-IO flow, its bound socket, its record, the
events that fill the record and the outcome a socket error makes. No asyncio here: the epoll
engine's process never imports it.

Every socket is bound to its flow's client address before connecting
(IP_BIND_ADDRESS_NO_PORT: the kernel picks the port at connect time, so the 4-tuple, not the
2-tuple, must be unique). Outcomes come from the socket errors: refused, reset, timeout.
"""

from __future__ import annotations

import _socket as c_socket
import errno
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.flows import (
    BackendMatcher,
    BackendSeen,
    FieldSet,
    Finished,
    FirstByte,
    Flow,
    HeartbeatDone,
    RequestDone,
    TcpFlow,
    UdpFlow,
)
from lvsprobe.replay.ftpflow import FtpFlow
from lvsprobe.replay.httpflow import HttpFlow
from lvsprobe.replay.httphead import HeadReader
from lvsprobe.replay.plan import PlannedFlow
from lvsprobe.replay.scenario import Scenario

if TYPE_CHECKING:  # ssl (and tlsflow) load for TLS flows only
    import ssl

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # linux/in.h, 4.2+
Sock = TypeVar("Sock", bound=c_socket.socket)


@dataclass
class FlowContext:
    """What flows of one run share: the backend pattern (compiled once), the response heads
    read so far, the TLS context and the saved session of each client."""

    scenario: Scenario
    tls_context: ssl.SSLContext | None = None
    sessions: dict[str, ssl.SSLSession] = field(default_factory=dict)
    heads: HeadReader = field(default_factory=HeadReader)
    backend_regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        self.backend_regex = re.compile(self.scenario.target.backend_pattern)


def client_tls_context() -> ssl.SSLContext:
    """A client context that checks nothing: the lab's backends use self-signed certs and the
    point is the handshake and resumption, not identity."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def make_flow(planned: PlannedFlow, ctx: FlowContext) -> Flow:
    """The sans-IO flow for a planned flow."""
    mix = planned.mix
    matcher = BackendMatcher(ctx.backend_regex)
    host = planned.server_address
    if planned.kind == "tcp":
        return TcpFlow(
            matcher,
            planned.flow_id,
            planned.payload_bytes,
            mix.hold_s,
            mix.heartbeat_s,
            mix.heartbeat_timeout_s,
        )
    if planned.kind == "http":
        body = planned.payload_bytes if mix.payload_bytes != (64, 64) else 0
        if ctx.scenario.arrival.model == "pool":  # one request on a connection kept open
            return HttpFlow(
                matcher,
                host,
                mix.path,
                1,
                True,
                body,
                planned.flow_id,
                persistent=True,
                heads=ctx.heads,
            )
        return HttpFlow(
            matcher,
            host,
            mix.path,
            mix.requests,
            mix.keepalive,
            body,
            planned.flow_id,
            mix.think_s,
            heads=ctx.heads,
        )
    if planned.kind == "udp":
        return UdpFlow(
            matcher,
            planned.flow_id,
            planned.payload_bytes,
            mix.requests,
            min(2.0, ctx.scenario.bounds.flow_timeout_s),
        )
    if planned.kind in ("ftp-active", "ftp-passive"):
        return FtpFlow(
            matcher,
            planned.kind == "ftp-passive",
            mix.user,
            mix.password,
            mix.file,
            mix.size,
            mix.sha256,
        )
    if planned.kind == "tls":
        from lvsprobe.replay.tlsflow import TlsFlow

        if ctx.tls_context is None:
            ctx.tls_context = client_tls_context()
        inner = HttpFlow(matcher, host, mix.path, 1, False, 0, planned.flow_id, heads=ctx.heads)
        session = ctx.sessions.get(planned.client_address) if mix.resume else None
        return TlsFlow(inner, ctx.tls_context, mix.server_name, session)
    raise ValueError(f"no stream flow for kind {planned.kind}")


def _outcome(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, ConnectionRefusedError):
        return "refused", str(exc)
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset", str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout", str(exc) or "no reply in time"
    if isinstance(exc, OSError) and exc.errno is not None:
        name = errno.errorcode.get(exc.errno, str(exc.errno)).lower()
        return f"error:{name}", str(exc)
    return f"error:{type(exc).__name__}", str(exc)


def _socket(src: str, dst: str, kind: int) -> socket.socket:
    return bound_socket(socket.socket, src, dst, kind)


def bound_socket(make: Callable[[int, int], Sock], src: str, dst: str, kind: int) -> Sock:
    """A non-blocking socket (`make`: socket.socket, what asyncio takes, or its C base
    _socket.socket, the epoll engine's: no Python wrapper to build and close per
    connection) of `kind` bound to `src`, to connect to `dst`."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = make(family, kind | socket.SOCK_NONBLOCK)  # non-blocking: no ioctl after
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            # small writes (heartbeats, requests) go out at once: no Nagle wait for an ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((src, 0))
    except OSError:
        sock.close()
        raise
    return sock


def record_events(rec: FlowRecord, events: list[Any], now: float) -> Finished | None:
    """Apply the events that only update the flow's record (first byte, backend, request,
    heartbeat, field), `now` the time the engine read them; the first `Finished` back (the
    other events are the engine's own to handle). One call a step, the kinds told apart by
    their exact class (none is subclassed) in the order a flow sends them."""
    finished = None
    for event in events:
        kind = type(event)
        if kind is FirstByte:
            if rec.ttfb_s is None:
                rec.ttfb_s = now - rec.start_s
        elif kind is BackendSeen:
            if rec.backend is None:
                rec.backend = event.name
        elif kind is RequestDone:
            rec.requests += 1
        elif kind is Finished:
            if finished is None:
                finished = event
        elif kind is HeartbeatDone:
            rec.heartbeats += 1
        elif kind is FieldSet:
            setattr(rec, event.name, event.value)
    return finished


def new_record(
    planned: PlannedFlow, start_s: float, start_unix: float, protocol: str
) -> FlowRecord:
    """A started flow's record (once per flow: its leading fields by position, quicker)."""
    kind, at_s = planned.kind, planned.at_s
    return FlowRecord(
        planned.flow_id, kind, planned.client_address, None, planned.server_address,
        planned.server_port, "udp" if kind == "udp" else protocol,
        start_s if at_s is None else at_s, start_s, start_unix, stage=planned.stage,
    )  # fmt: skip


def _local_port(sock: c_socket.socket) -> int | None:
    """The local port a failed connect was made from (the kernel bound it at connect), so a
    refused flow still joins the director's connection table; None if it never got one."""
    try:
        port = int(sock.getsockname()[1])
    except OSError:
        return None
    return port or None
