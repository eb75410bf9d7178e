"""The sans-IO HTTP/1.1 client flow (see flows.py for how a driver runs a flow): its
requests, and each response read as the bytes arrive (httphead.py reads the heads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lvsprobe.replay.flows import (
    FINISHED_OK,
    REQUEST_DONE,
    BackendMatcher,
    Finished,
    Flow,
    Step,
    payload,
)
from lvsprobe.replay.httphead import Framing, read_head


class HttpFlow(Flow):
    """HTTP/1.1 GET (POST when a payload is set): `requests` on one connection (keep-alive),
    or one request with `Connection: close`. The backend is the `X-Backend` header or, failing
    that, the pattern in the response. A status >= 400 ends the flow as `error:http-<code>`.
    `persistent`: the connection outlives the flow (the pool model), so even its last request
    asks to keep it alive."""

    __slots__ = ("_buffer", "_chunked", "_done", "_head_len", "_read_head", "_status",
                 "_want", "body", "host", "keepalive", "path", "persistent", "requests",
                 "think_s")  # fmt: skip
    kind = "http"

    def __init__(
        self,
        matcher: BackendMatcher,
        host: str,
        path: str,
        requests: int = 1,
        keepalive: bool = False,
        payload_bytes: int = 0,
        flow_id: int = 0,
        think_s: float = 0.0,
        persistent: bool = False,
        heads: Callable[[bytes], Framing] = read_head,
    ):
        super().__init__(matcher)
        self._read_head = heads  # a run's HeadReader, or read_head itself
        self.persistent = persistent
        self.host, self.path = host, path
        self.requests, self.keepalive = requests, keepalive
        self.body = payload(flow_id, payload_bytes) if payload_bytes > 0 else b""
        self.think_s = think_s
        self._done = 0
        self._buffer = b""
        self._want: int | None = None  # body bytes of the current response, once known
        self._head_len = 0
        self._status = 0
        self._chunked = False

    def _request(self) -> bytes:
        last = self._done + 1 >= self.requests
        connection = "keep-alive" if self.keepalive and (self.persistent or not last) else "close"
        method = "POST" if self.body else "GET"
        head = (
            f"{method} {self.path} HTTP/1.1\r\nHost: {self.host}\r\n"
            f"User-Agent: lvsprobe\r\nConnection: {connection}\r\n"
        )
        if self.body:
            head += f"Content-Length: {len(self.body)}\r\n"
        return head.encode() + b"\r\n" + self.body

    def start(self, now: float) -> Step:
        return Step(send=self._request())

    def timer(self, now: float) -> Step:
        return Step(send=self._request())

    def _parse_head(self) -> Finished | None:
        """Status and body framing, once the head is in (httphead.py reads it)."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        framing = self._read_head(self._buffer[:end])
        if isinstance(framing, str):
            return Finished("error:http-bad-status-line", framing)
        self._status, self._want, self._chunked = framing
        self._head_len = end + 4
        return None

    def _chunked_done(self) -> bool | None:
        """Whether the chunked body in the buffer is complete (sets `_want` to its length);
        None if it is malformed."""
        body, pos = self._buffer[self._head_len :], 0
        while (eol := body.find(b"\r\n", pos)) >= 0:
            size_text = body[pos:eol].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                return None
            if size == 0:  # last chunk, then optional trailers, then an empty line
                if body[eol + 2 : eol + 4] == b"\r\n":
                    self._want = eol + 4
                    return True
                trailers_end = body.find(b"\r\n\r\n", eol + 2)
                if trailers_end < 0:
                    return False
                self._want = trailers_end + 4
                return True
            pos = eol + 2 + size + 2
        return False

    def receive(self, data: bytes, now: float) -> Step:
        events: list[Any] = []
        if data:
            self._saw(data, events)
            self._buffer += data
        if self._want is None:
            bad = self._parse_head()
            if bad is not None:
                events.append(bad)
                return Step(events=events, done=True)
            if self._want is None:
                if not data:
                    events.append(Finished("error:http-eof-in-header"))
                    return Step(events=events, done=True)
                return Step(events=events)
        if self._chunked and self._want < 0:
            complete = self._chunked_done()
            if complete is None:
                events.append(Finished("error:http-bad-chunk"))
                return Step(events=events, done=True)
            if not complete:
                if data:
                    return Step(events=events)
                events.append(Finished("error:http-short-body"))
                return Step(events=events, done=True)
        want = self._want
        have = len(self._buffer) - self._head_len
        if want < 0 or have < want:  # the body goes on: until EOF, or short of its length
            if data:
                return Step(events=events)
            if want >= 0:
                events.append(Finished("error:http-short-body"))
                return Step(events=events, done=True)
        events.append(REQUEST_DONE)
        self._done += 1
        if self._status >= 400:
            events.append(Finished(f"error:http-{self._status}"))
            return Step(events=events, done=True)
        self._buffer = self._buffer[self._head_len + (want if want > 0 else 0) :]
        self._want = None
        if self._done >= self.requests:
            events.append(FINISHED_OK)
            return Step(events=events, done=True)
        if not data:
            events.append(Finished("reset", "server closed keep-alive"))
            return Step(events=events, done=True)
        if self.think_s > 0:
            return Step(events=events, wake_at=now + self.think_s)
        return Step(events=events, send=self._request())
