"""One response on the wire (`Reply.send`): a piece of body is one write, framing included."""

from __future__ import annotations

import email.utils
from typing import cast

import h11
from hypothesis import given
from hypothesis import strategies as st

from lvsprobe.exporter.exchange import WRITE_PIECE_BYTES, Reply, http_date
from lvsprobe.exporter.reactor import SocketStream, run


class _Stream:
    """What Reply uses of a SocketStream: the writes, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | memoryview, deadline: float | None) -> None:
        self.writes.append(bytes(data))


class _Pieces:
    def __init__(self, *pieces: bytes) -> None:
        self.pieces = list(pieces)

    async def next_piece(self, deadline: float | None) -> bytes | None:
        return self.pieces.pop(0) if self.pieces else None


def _exchange(http_version: bytes) -> tuple[_Stream, h11.Connection, h11.Connection]:
    """A server connection that has read a GET, and the client that sent it."""
    client, server = h11.Connection(h11.CLIENT), h11.Connection(h11.SERVER)
    request = h11.Request(
        method="GET", target="/metrics", headers=[("Host", "x")], http_version=http_version
    )
    server.receive_data(client.send(request) + client.send(h11.EndOfMessage()))
    server.next_event()
    server.next_event()
    return _Stream(), server, client


def test_a_chunked_piece_is_one_write_with_its_framing() -> None:
    """Each piece of an HTTP/1.1 chunked body leaves in one write (one send(2), one TCP
    segment), not three (size line, data, CRLF); the client reads the body back whole."""
    body = bytes(range(256)) * ((3 * WRITE_PIECE_BYTES) // 256) + b"tail"

    writer, server, client = _exchange(b"1.1")
    reply = Reply(server, cast(SocketStream, writer), head=False, write_timeout_s=5)
    run(reply.send(200, _Pieces(body[:1000], body[1000:])))
    pieces = 1 + -(-(len(body) - 1000) // WRITE_PIECE_BYTES)
    assert len(writer.writes) == 1 + pieces + 1  # head, pieces, the last chunk
    client.receive_data(b"".join(writer.writes))
    got = b""
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        if isinstance(event, h11.Data):
            got += event.data
    assert got == body


@given(st.floats(min_value=0, max_value=2**33, allow_nan=False))
def test_the_date_header_is_what_email_writes(epoch_s: float) -> None:
    """The Date header without the email package: the same text, any time."""
    assert http_date(epoch_s) == email.utils.formatdate(epoch_s, usegmt=True)
