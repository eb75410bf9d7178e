"""One response on the wire (`Reply.send`): a piece of body is one write, framing included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import h11

from lvsprobe.exporter.exchange import WRITE_PIECE_BYTES, Reply


class _Writer:
    """What Reply uses of a StreamWriter: the writes, in order."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    async def drain(self) -> None:
        return None


def _exchange(http_version: bytes) -> tuple[_Writer, h11.Connection, h11.Connection]:
    """A server connection that has read a GET, and the client that sent it."""
    client, server = h11.Connection(h11.CLIENT), h11.Connection(h11.SERVER)
    request = h11.Request(
        method="GET", target="/metrics", headers=[("Host", "x")], http_version=http_version
    )
    server.receive_data(client.send(request) + client.send(h11.EndOfMessage()))
    server.next_event()
    server.next_event()
    return _Writer(), server, client


def test_a_chunked_piece_is_one_write_with_its_framing() -> None:
    """Each piece of an HTTP/1.1 chunked body leaves in one write (one send(2), one TCP
    segment), not three (size line, data, CRLF); the client reads the body back whole."""
    body = bytes(range(256)) * ((3 * WRITE_PIECE_BYTES) // 256) + b"tail"

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:1000]
        yield body[1000:]

    writer, server, client = _exchange(b"1.1")
    reply = Reply(server, cast(asyncio.StreamWriter, writer), head=False, write_timeout_s=5)
    asyncio.run(reply.send(200, chunks()))
    pieces = 1 + -(-(len(body) - 1000) // WRITE_PIECE_BYTES)
    assert len(writer.writes) == 1 + pieces + 1  # head, pieces, the last chunk
    client.receive_data(b"".join(writer.writes))
    got = b""
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        if isinstance(event, h11.Data):
            got += event.data
    assert got == body
