"""Sans-IO FTP client (RFC 959): login, SIZE, LIST, RETR over passive or active data
connections, then size and sha256 checks of what arrived.

The control connection goes through receive()/start() like every flow. The data connection
is the driver's job, asked for with events: OpenData(host, port) after a 227 reply (passive),
ListenData() before PORT (active; the driver answers with `data_listening(host, port)`).
Data bytes come in through `data_received(data, now)` (`b""` = the data connection closed).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lvsprobe.replay.flows import (
    BackendMatcher,
    FieldSet,
    Finished,
    Flow,
    RequestDone,
    Step,
)


@dataclass(frozen=True, slots=True)
class OpenData:
    """Passive mode: connect a data connection to host:port (from the 227 reply)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ListenData:
    """Active mode: listen on the client address, then call data_listening(host, port)."""


_PASV = re.compile(rb"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)")


class FtpFlow(Flow):
    kind = "ftp"

    def __init__(
        self,
        matcher: BackendMatcher,
        passive: bool,
        user: str,
        password: str,
        file: str,
        size: int | None = None,
        sha256: Mapping[str, str] | None = None,
    ):
        super().__init__(matcher)
        self.passive = passive
        self.kind = "ftp-passive" if passive else "ftp-active"
        self.user, self.password, self.file = user, password, file
        self.expect_size, self.expect_sha256 = size, sha256
        self._lines = b""
        self._state = "banner"
        self._queue = [("LIST", False), (f"RETR {file}", True)]
        self._current: tuple[str, bool] | None = None
        self._data_done = False
        self._reply_done = False
        self._hash = hashlib.sha256()
        self._received = 0
        self._server_size: int | None = None
        self._listing = b""
        self.pasv_reply: str | None = None
        self._final = Finished("ok")

    def start(self, now: float) -> Step:
        return Step()

    def _fail(self, code: str, text: str, events: list[Any]) -> Step:
        return Step(events=[*events, Finished(f"error:ftp-{code}", text[:120])], done=True)

    def receive(self, data: bytes, now: float) -> Step:
        events: list[Any] = []
        self._saw(data, events)
        if not data:
            if self._state == "quit":
                return Step(events=[*events, self._final], done=True)
            return Step(
                events=[*events, Finished("reset", f"control closed in {self._state}")], done=True
            )
        self._lines += data
        send = b""
        while (reply := self._take_reply()) is not None:
            code, text = reply
            step = self._on_reply(code, text, events)
            if step.done:
                return step
            send += step.send
            events = step.events
        return Step(send=send, events=events)

    def _take_reply(self) -> tuple[str, str] | None:
        """One complete (possibly multi-line) reply, or None if more bytes are needed."""
        lines = self._lines.split(b"\n")
        first = lines[0].rstrip(b"\r")
        if len(lines) < 2:
            return None
        if len(first) < 4 or not first[:3].isdigit() or first[3:4] not in (b" ", b"-"):
            self._lines = b"\n".join(lines[1:])
            return "000", first.decode("latin-1")
        if first[3:4] == b" ":
            self._lines = b"\n".join(lines[1:])
            return first[:3].decode(), first.decode("latin-1")
        for i, raw in enumerate(lines[1:-1], 1):
            line = raw.rstrip(b"\r")
            if line[:3] == first[:3] and line[3:4] == b" ":
                self._lines = b"\n".join(lines[i + 1 :])
                return first[:3].decode(), line.decode("latin-1")
        return None

    def _on_reply(self, code: str, text: str, events: list[Any]) -> Step:
        state = self._state
        if state == "banner":
            if code != "220":
                return self._fail(code, text, events)
            self._state = "user"
            return Step(send=f"USER {self.user}\r\n".encode(), events=events)
        if state == "user":
            if code == "230":
                return self._login_done(events)
            if code != "331":
                return self._fail(code, text, events)
            self._state = "pass"
            return Step(send=f"PASS {self.password}\r\n".encode(), events=events)
        if state == "pass":
            if code != "230":
                return self._fail(code, text, events)
            return self._login_done(events)
        if state == "type":
            if code != "200":
                return self._fail(code, text, events)
            self._state = "size"
            return Step(send=f"SIZE {self.file}\r\n".encode(), events=events)
        if state == "size":
            if code == "213" and text[4:].strip().isdigit():
                self._server_size = int(text[4:].strip())
            return self._next_transfer(events)
        if state == "pasv":
            if code != "227" or (m := _PASV.search(text.encode())) is None:
                return self._fail(code, text, events)
            self.pasv_reply = text
            nums = [int(x) for x in m.groups()]
            host = ".".join(str(n) for n in nums[:4])
            self._state = "transfer"
            assert self._current is not None
            command = f"{self._current[0]}\r\n".encode()
            return Step(send=command, events=[*events, OpenData(host, nums[4] * 256 + nums[5])])
        if state == "port":
            if code != "200":
                return self._fail(code, text, events)
            self._state = "transfer"
            assert self._current is not None
            return Step(send=f"{self._current[0]}\r\n".encode(), events=events)
        if state == "transfer":
            if code in ("125", "150"):
                return Step(events=events)
            if code != "226":
                return self._fail(code, text, events)
            self._reply_done = True
            return self._maybe_next(events)
        if state == "quit":
            return Step(events=[*events, self._final], done=True)
        return self._fail(code, f"unexpected reply in state {state}: {text}", events)

    def _login_done(self, events: list[Any]) -> Step:
        self._state = "type"
        return Step(send=b"TYPE I\r\n", events=events)

    def _next_transfer(self, events: list[Any]) -> Step:
        if not self._queue:
            return self._finish(events)
        self._current = self._queue.pop(0)
        self._data_done = self._reply_done = False
        if self.passive:
            self._state = "pasv"
            return Step(send=b"PASV\r\n", events=events)
        self._state = "port-wait"
        return Step(events=[*events, ListenData()])

    def data_listening(self, host: str, port: int, now: float) -> Step:
        """Active mode: the driver listens on host:port; tell the server with PORT."""
        self._state = "port"
        numbers = host.replace(".", ",") + f",{port // 256},{port % 256}"
        return Step(
            send=f"PORT {numbers}\r\n".encode(), events=[FieldSet("ftp_data_client_port", port)]
        )

    def data_received(self, data: bytes, now: float) -> Step:
        events: list[Any] = []
        assert self._current is not None
        if data:
            seen = self.matcher.feed(data)
            if seen is not None:
                events.append(seen)
            if self._current[1]:
                self._hash.update(data)
                self._received += len(data)
            else:
                self._listing += data[: 65536 - len(self._listing)]
            return Step(events=events)
        self._data_done = True
        return self._maybe_next(events)

    def _maybe_next(self, events: list[Any]) -> Step:
        if not (self._data_done and self._reply_done):
            return Step(events=events)
        events = [*events, RequestDone()]
        return self._next_transfer(events)

    def _finish(self, events: list[Any]) -> Step:
        digest = self._hash.hexdigest()
        want_size = self.expect_size if self.expect_size is not None else self._server_size
        size_ok = want_size is None or want_size == self._received
        want_sha = None
        if self.expect_sha256:
            want_sha = self.expect_sha256.get(self.matcher.name or "", self.expect_sha256.get("*"))
        sha_ok = (not self.expect_sha256) or want_sha == digest
        listed = self.file.encode() in self._listing
        events = [
            *events,
            FieldSet("ftp_file_size", self._received),
            FieldSet("ftp_sha256", digest),
            FieldSet("ftp_checksum_ok", size_ok and sha_ok),
        ]
        self._state = "quit"
        if not listed:
            self._final = Finished("error:ftp-not-listed", f"{self.file} missing from LIST")
        elif not size_ok:
            self._final = Finished("error:ftp-size", f"got {self._received} of {want_size}")
        elif not sha_ok:
            self._final = Finished("error:ftp-sha256", f"got {digest}")
        return Step(send=b"QUIT\r\n", events=events)
