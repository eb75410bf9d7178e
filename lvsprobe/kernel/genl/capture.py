"""Replay a captured generic-netlink IPVS conversation (`ipvs_conversation.hex`) as a reader.

The capture format (tests/fixtures/<kernel>/<topology>/genl/): one message per line as hex,
`> ` for a request sent and `< ` for a message received, `# ` for a comment naming the
request; blank lines are ignored. `CapturedIPVS.from_file(path)` is an `IPVSNetlink` whose
transport answers each request with the replies captured for the same request (compared
without its sequence number and port id), so the whole decode path runs on real bytes.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from lvsprobe.errors import LvsprobeError, ParseError
from lvsprobe.kernel.genl.attrs import NLMSG_HDR
from lvsprobe.kernel.genl.socket import IPVSNetlink

_SEQ_PID = struct.Struct("=II")
_SEQ_AT = 8  # nlmsghdr: len u32, type u16, flags u16, then seq u32 and pid u32


@dataclass(frozen=True, slots=True)
class Exchange:
    """One captured request, the comment before it, and the messages received for it."""

    label: str
    request: bytes
    replies: tuple[bytes, ...]


def _strip_seq(message: bytes) -> bytes:
    return message[:_SEQ_AT] + message[NLMSG_HDR.size :]


def parse_conversation(text: str, source: str = "genl capture") -> tuple[Exchange, ...]:
    """The exchanges of a capture, in order."""
    out: list[Exchange] = []
    label = request_label = ""
    request: bytes | None = None
    replies: list[bytes] = []
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        mark, _, rest = line.partition(" ")
        if mark == "#":
            label = rest.strip()
            continue
        if mark not in (">", "<"):
            raise ParseError(source, line_no, line, "expected '#', '>' or '<' at the start")
        try:
            message = bytes.fromhex(rest.strip())
        except ValueError:
            raise ParseError(source, line_no, line, "not a hex string") from None
        if len(message) < NLMSG_HDR.size:
            raise ParseError(source, line_no, line, "shorter than a netlink header")
        if mark == ">":
            if request is not None:
                out.append(Exchange(request_label, request, tuple(replies)))
            request, replies, request_label = message, [], label
        elif request is None:
            raise ParseError(source, line_no, line, "a reply before any request")
        else:
            replies.append(message)
    if request is not None:
        out.append(Exchange(request_label, request, tuple(replies)))
    return tuple(out)


class ReplayTransport:
    """A Transport answering requests from a capture, one message per datagram."""

    def __init__(self, exchanges: tuple[Exchange, ...], source: str = "genl capture") -> None:
        self._answers = {_strip_seq(e.request): e.replies for e in exchanges}
        self._labels = {_strip_seq(e.request): e.label for e in exchanges}
        self._queue: deque[bytes] = deque()
        self._source = source
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        replies = self._answers.get(_strip_seq(data))
        if replies is None:
            raise LvsprobeError(f"{self._source}: no captured reply to request {data[:48].hex()}")
        seq_pid = data[_SEQ_AT : NLMSG_HDR.size]
        self._queue.extend(r[:_SEQ_AT] + seq_pid + r[NLMSG_HDR.size :] for r in replies)

    def recv(self) -> bytes:
        if not self._queue:
            raise LvsprobeError(f"{self._source}: the capture ends before the reply does")
        return self._queue.popleft()

    def close(self) -> None:
        self._queue.clear()


class CapturedIPVS(IPVSNetlink):
    """An IPVSNetlink reading a capture file instead of the kernel."""

    @classmethod
    def from_file(cls, path: Path) -> Self:
        source = str(path)
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise LvsprobeError(f"{source}: cannot read the netlink capture: {exc}") from exc
        return cls.connect(ReplayTransport(parse_conversation(text, source), source))
