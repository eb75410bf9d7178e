"""One HTTP/1.x exchange on a connection's stream, framed by h11: a response sent within a
deadline, request headers by name."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol, cast

import h11

from lvsprobe import __version__
from lvsprobe.exporter.reactor import SocketStream

# A response is handed to the kernel in pieces this big: one write (one send(2)) per piece,
# its chunk framing included.
WRITE_PIECE_BYTES = 64 * 1024
TEXT = "text/plain; charset=utf-8"
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Pieces(Protocol):
    """A body handed over piece by piece (a flight's reader)."""

    async def next_piece(self, deadline: float | None) -> bytes | None:
        """The next piece, None at the end; TimeoutError past `deadline`."""
        ...


def http_date(epoch_s: float) -> str:
    """The Date header's IMF-fixdate (RFC 9110 5.6.7), in English whatever the locale, as
    email.utils.formatdate(usegmt=True) writes it (without the 21 modules of email)."""
    t = time.gmtime(epoch_s)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


@dataclass(frozen=True)
class Reply:
    """How to answer one request: its connection and stream, whether it was HEAD (headers
    only), the headers every answer carries (web config) and the write timeout."""

    conn: h11.Connection
    stream: SocketStream
    head: bool
    write_timeout_s: float
    headers: dict[str, str] = field(default_factory=dict)

    async def send(
        self,
        code: int,
        body: bytes | Pieces,
        extra: dict[str, str] | None = None,
        ctype: str = TEXT,
        size: int | None = None,
        close: bool = False,
    ) -> None:
        """One response within the write timeout (counted from its first byte, waits for the
        body's pieces included): TimeoutError beyond.

        A Content-Length when the size is known (bytes, or a rendered scrape); else h11 frames
        the body as HTTP/1.1 chunks, or for an HTTP/1.0 client by closing the connection.
        Each write returns once the kernel has every byte, so nothing is left in user space
        when the answer ends.
        """
        if isinstance(body, bytes):
            size = len(body)
        fields = {
            "Content-Type": ctype,
            "Date": http_date(time.time()),
            "Server": f"lvsprobe/{__version__}",
            **self.headers,
            **(extra or {}),
        }
        if size is not None:
            fields["Content-Length"] = str(size)
        if close:
            fields["Connection"] = "close"
        conn, stream = self.conn, self.stream
        deadline = time.monotonic() + self.write_timeout_s
        reason = HTTPStatus(code).phrase.encode()
        response = h11.Response(status_code=code, headers=list(fields.items()), reason=reason)
        await stream.send_all(conn.send(response) or b"", deadline)
        if not self.head:
            pieces = _Whole(body) if isinstance(body, bytes) else body
            while (chunk := await pieces.next_piece(deadline)) is not None:
                # Pieces of the chunk without copies: h11 hands data on as it gets it
                # (typed bytes; any bytes-like works).
                view = cast(bytes, memoryview(chunk))
                for start in range(0, len(view), WRITE_PIECE_BYTES):
                    piece = h11.Data(data=view[start : start + WRITE_PIECE_BYTES])
                    framed = conn.send_with_data_passthrough(piece) or []
                    # One write (one send(2), one segment) per piece, not one for each
                    # of a chunk's size line, data and CRLF.
                    data = framed[0] if len(framed) == 1 else b"".join(framed)
                    await stream.send_all(data, deadline)
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"", deadline)


class _Whole:
    """A body known whole: one piece."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    async def next_piece(self, deadline: float | None) -> bytes | None:
        body, self._body = self._body, None
        return body


def request_headers(request: h11.Request) -> dict[str, str]:
    """Request headers by lower-case name; repeated ones joined with commas (RFC 9110 5.3)."""
    out: dict[str, str] = {}
    for name, value in request.headers:
        key = name.decode("latin-1")
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out
