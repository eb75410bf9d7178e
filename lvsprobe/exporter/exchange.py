"""One HTTP/1.x exchange on an asyncio stream, framed by h11: a response sent within a
deadline, a reset that drops what the kernel holds, request headers by name."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

import h11

from lvsprobe import __version__

# A response is handed to the kernel in pieces this big: a stalled client holds a copy of one.
WRITE_PIECE_BYTES = 64 * 1024
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Reply:
    """How to answer one request: its connection, whether it was HEAD (headers only), the
    headers every answer carries (web config) and the write timeout."""

    conn: h11.Connection
    writer: asyncio.StreamWriter
    head: bool
    write_timeout_s: float
    headers: dict[str, str] = field(default_factory=dict)

    async def send(
        self,
        code: int,
        body: bytes | AsyncIterable[bytes],
        extra: dict[str, str] | None = None,
        ctype: str = TEXT,
        size: int | None = None,
        close: bool = False,
    ) -> None:
        """One response within the write timeout (counted from its first byte).

        A Content-Length when the size is known (bytes, or a rendered scrape); else h11 frames
        the body as HTTP/1.1 chunks, or for an HTTP/1.0 client by closing the connection. The
        stream's write buffer limit must be 0 (the server sets it): drain() returns once the
        kernel has every byte, so nothing is left in user space when the answer ends.
        """
        if isinstance(body, bytes):
            size = len(body)
        fields = {
            "Content-Type": ctype,
            "Date": formatdate(usegmt=True),
            "Server": f"lvsprobe/{__version__}",
            **self.headers,
            **(extra or {}),
        }
        if size is not None:
            fields["Content-Length"] = str(size)
        if close:
            fields["Connection"] = "close"
        conn, writer = self.conn, self.writer
        async with asyncio.timeout(self.write_timeout_s):
            reason = HTTPStatus(code).phrase.encode()
            response = h11.Response(status_code=code, headers=list(fields.items()), reason=reason)
            writer.write(conn.send(response))
            if not self.head:
                async for chunk in _pieces(body):
                    # Pieces of the chunk without copies: h11 hands data on as it gets it
                    # (typed bytes; any bytes-like works).
                    view = cast(bytes, memoryview(chunk))
                    for start in range(0, len(view), WRITE_PIECE_BYTES):
                        piece = h11.Data(data=view[start : start + WRITE_PIECE_BYTES])
                        framed = conn.send_with_data_passthrough(piece) or []
                        # One write (one send(2), one segment) per piece, not one for each
                        # of a chunk's size line, data and CRLF.
                        writer.write(framed[0] if len(framed) == 1 else b"".join(framed))
                        await writer.drain()
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()


async def _pieces(body: bytes | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(body, bytes):
        yield body
    else:
        async for piece in body:
            yield piece


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset: what the kernel still holds to send (megabytes, for a client that
    stopped reading) is dropped now, rather than kept by an orphaned socket for minutes."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def request_headers(request: h11.Request) -> dict[str, str]:
    """Request headers by lower-case name; repeated ones joined with commas (RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for name, value in request.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out
