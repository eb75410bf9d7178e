"""Sans-IO client flows: tcp (send/echo, or held open with heartbeats) and udp; http in
httpflow.py, ftp, tls and syn in their own modules.

A flow never touches a socket or a clock. The driver calls `start(now)` once the transport is
up, `receive(data, now)` with what arrived (`b""` = EOF; for UDP one call per datagram) and
`timer(now)` when the `wake_at` it asked for has come. Each returns a Step: bytes to send,
events (what happened), and whether the flow is finished.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class FirstByte:
    """The first byte of the reply arrived."""


@dataclass(frozen=True, slots=True)
class BackendSeen:
    """The backend named itself (header, banner, reply)."""

    name: str


@dataclass(frozen=True, slots=True)
class RequestDone:
    """One request/response exchange completed."""


@dataclass(frozen=True, slots=True)
class HeartbeatDone:
    """One heartbeat was answered."""


@dataclass(frozen=True, slots=True)
class FieldSet:
    """A kind-specific flow-log field (tls_session_reused, ftp_file_size, ...)."""

    name: str
    value: Any


@dataclass(frozen=True, slots=True)
class Finished:
    """The flow's outcome: ok, reset, timeout or error:<reason>."""

    outcome: str
    detail: str | None = None


Event = FirstByte | BackendSeen | RequestDone | HeartbeatDone | FieldSet | Finished

# The events every flow sends alike: frozen, so one instance serves them all (not one
# allocation per connection)
FIRST_BYTE = FirstByte()
REQUEST_DONE = RequestDone()
HEARTBEAT_DONE = HeartbeatDone()
FINISHED_OK = Finished("ok")


@dataclass(slots=True)
class Step:
    """What the driver must do next."""

    send: bytes = b""
    events: list[Any] = field(default_factory=list)
    half_close: bool = False
    done: bool = False
    wake_at: float | None = None


# A backend's name for itself (group 1), by default: an `X-Backend:` header's value, or else
# any word `rsN` in the reply
DEFAULT_BACKEND_PATTERN = r"(?im)(?:^x-backend:[ \t]*|^|\b)(rs\d+)\b"
_RS_WORD = re.compile(r"(?i)\b(rs\d+)\b")


def _first_rs_word(seen: bytes) -> re.Match[str] | None:
    """A match whose group 1 is DEFAULT_BACKEND_PATTERN's in `seen` decoded as latin-1.

    The pattern's leftmost match always names the leftmost word `rsN`: a header's `rsN` starts
    a word too, and no word `rsN` fits inside "x-backend:". Run as a regular expression, the
    pattern tries its three branches at every offset; this looks only where "rs" is, found in
    the bytes (in latin-1 only R and S lower to r and s, and no character changes its offset),
    and decodes only if it is there.
    """
    lowered = seen.lower()
    at = lowered.find(b"rs")
    if at < 0:
        return None
    text = seen.decode("latin-1")
    while at >= 0:
        match = _RS_WORD.match(text, at)  # \b sees the character before `at`
        if match is not None:
            return match
        at = lowered.find(b"rs", at + 1)
    return None


class BackendMatcher:
    """Finds the backend's self-reported name in the first bytes of a reply stream.
    `pattern` may come compiled: a run compiles its pattern once for all its flows."""

    __slots__ = ("_default", "_regex", "_seen", "_window", "name")

    def __init__(self, pattern: str | re.Pattern[str], window: int = 8192):
        self._regex = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
        self._default = self._regex.pattern == DEFAULT_BACKEND_PATTERN
        self._window = window
        self._seen = b""
        self.name: str | None = None

    def feed(self, data: bytes) -> BackendSeen | None:
        if self.name is not None or len(self._seen) >= self._window:
            return None
        self._seen += data[: self._window - len(self._seen)]
        if self._default:
            match = _first_rs_word(self._seen)
        else:
            match = self._regex.search(self._seen.decode("latin-1"))
        if match is None:
            return None
        self.name = match.group(1)
        return BackendSeen(self.name)


def payload(flow_id: int, size: int) -> bytes:
    """Deterministic filler bytes, newline-terminated, that name the flow (for server logs)."""
    if size <= 0:
        return b""
    head = f"lvsprobe flow {flow_id} ".encode()
    body = (head + b"x" * max(0, size - len(head)))[: size - 1]
    return body + b"\n"


class Flow:
    """Base: subclasses implement start/receive, and timer if they ask for wake-ups."""

    __slots__ = ("_got_first", "matcher")  # (slotted: built once per connection)
    kind = "flow"

    def __init__(self, matcher: BackendMatcher):
        self.matcher = matcher
        self._got_first = False

    def _saw(self, data: bytes, events: list[Any]) -> None:
        if not data:
            return
        if not self._got_first:
            self._got_first = True
            events.append(FIRST_BYTE)
        if self.matcher.name is None and (seen := self.matcher.feed(data)) is not None:
            events.append(seen)

    def start(self, now: float) -> Step:
        raise NotImplementedError

    def receive(self, data: bytes, now: float) -> Step:
        raise NotImplementedError

    def timer(self, now: float) -> Step:
        return Step()


class TcpFlow(Flow):
    """Send N bytes, half-close, read to EOF (an echo server echoes and closes).

    With `hold_s` > 0 the connection stays open that long first, sending a heartbeat line
    every `heartbeat_s` (whether or not the last was answered yet) and counting the answered
    ones (an echo server answers each). A heartbeat unanswered after `heartbeat_timeout_s`
    ends the flow as `timeout`; EOF or RST during the hold as `reset`.
    """

    __slots__ = ("_answered", "_buffer", "_closing", "_hold_until", "_next_beat", "_sent_at",
                 "flow_id", "heartbeat_s", "heartbeat_timeout_s", "hold_s", "payload")  # fmt: skip
    kind = "tcp"

    def __init__(
        self,
        matcher: BackendMatcher,
        flow_id: int,
        payload_bytes: int,
        hold_s: float = 0.0,
        heartbeat_s: float = 0.1,
        heartbeat_timeout_s: float = 1.0,
    ):
        super().__init__(matcher)
        self.flow_id = flow_id
        self.payload = payload(flow_id, payload_bytes)
        self.hold_s = hold_s
        self.heartbeat_s = heartbeat_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._hold_until = 0.0
        self._next_beat = 0.0
        self._sent_at: list[float] = []  # send time of each heartbeat, by number - 1
        self._answered = 0
        self._buffer = b""
        self._closing = False

    def start(self, now: float) -> Step:
        if self.hold_s <= 0:
            return Step(send=self.payload, half_close=True)
        self._hold_until = now + self.hold_s
        self._next_beat = now
        return self.timer(now)

    def _wake(self) -> float:
        deadlines = [self._next_beat] if self._next_beat < self._hold_until else []
        if self._answered < len(self._sent_at):
            deadlines.append(self._sent_at[self._answered] + self.heartbeat_timeout_s)
        else:
            deadlines.append(self._hold_until)
        return min(deadlines)

    def timer(self, now: float) -> Step:
        if self._closing:
            return Step()
        waiting = self._answered < len(self._sent_at)
        if waiting and now - self._sent_at[self._answered] >= self.heartbeat_timeout_s:
            beat = self._answered + 1
            return Step(events=[Finished("timeout", f"heartbeat {beat} unanswered")], done=True)
        if now >= self._hold_until and not waiting:
            self._closing = True
            return Step(send=self.payload, half_close=True)
        send = b""
        if now >= self._next_beat and now < self._hold_until:
            self._sent_at.append(now)
            send = f"hb {self.flow_id} {len(self._sent_at)}\n".encode()
            self._next_beat = max(self._next_beat + self.heartbeat_s, now)
        if now >= self._hold_until:  # a late timer: no more beats, never a wake-up in the past
            self._next_beat = self._hold_until
        return Step(send=send, wake_at=self._wake())

    def receive(self, data: bytes, now: float) -> Step:
        events: list[Any] = []
        self._saw(data, events)
        if not data:
            if self.hold_s > 0 and not self._closing:
                events.append(Finished("reset", f"EOF during hold after {self._answered} beats"))
            else:
                events.append(FINISHED_OK)
            return Step(events=events, done=True)
        if self.hold_s > 0 and not self._closing:
            self._buffer += data
            while f"hb {self.flow_id} {self._answered + 1}\n".encode() in self._buffer:
                self._answered += 1
                events.append(HEARTBEAT_DONE)
            self._buffer = self._buffer[-256:]
            return Step(events=events, wake_at=self._wake())
        return Step(events=events)


class UdpFlow(Flow):
    """`requests` datagrams, one at a time; each reply (any datagram) answers one."""

    __slots__ = ("_answered", "_sent", "flow_id", "reply_timeout_s", "requests", "size")
    kind = "udp"

    def __init__(
        self,
        matcher: BackendMatcher,
        flow_id: int,
        payload_bytes: int,
        requests: int = 1,
        reply_timeout_s: float = 2.0,
    ):
        super().__init__(matcher)
        self.flow_id = flow_id
        self.size = max(payload_bytes, 16)
        self.requests = requests
        self.reply_timeout_s = reply_timeout_s
        self._sent = 0
        self._answered = 0

    def _datagram(self, now: float) -> Step:
        self._sent += 1
        data = payload(self.flow_id, self.size)
        return Step(send=data, wake_at=now + self.reply_timeout_s)

    def start(self, now: float) -> Step:
        return self._datagram(now)

    def timer(self, now: float) -> Step:
        detail = f"datagram {self._sent} unanswered"
        return Step(events=[Finished("timeout", detail)], done=True)

    def receive(self, data: bytes, now: float) -> Step:
        events: list[Any] = []
        self._saw(data, events)
        self._answered += 1
        events.append(REQUEST_DONE)
        if self._answered >= self.requests:
            events.append(FINISHED_OK)
            return Step(events=events, done=True)
        step = self._datagram(now)
        step.events = events
        return step
