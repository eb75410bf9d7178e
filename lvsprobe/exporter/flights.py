"""/metrics answers rendered off the event loop, one read at a time per format, shared.

A request that arrives while a read of the same format and encoding runs waits for that read
and gets its answer ("single flight"): forty clients asking at once cost one read of the kernel
and hold one body between them, not forty. The answer is rendered whole (and gzipped, when
asked, as it is rendered: a 15 MB text holds ~1.5 MB) in a worker thread before any byte is
sent, so a client that reads slowly holds only a reference to a finished body, never a worker,
the kernel-read slot or a half-rendered scrape. A read whose every waiter has gone is abandoned
at its next rendered chunk (the kernel read itself runs to its end).

The price: a request that joins a running read gets data read up to one scrape duration
before it arrived; Prometheus's own timestamps are already that far off.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lvsprobe.exporter.render import ExpositionFormat, render_chunks

if TYPE_CHECKING:
    from lvsprobe.exporter.scrape import Scraper

log = logging.getLogger("lvsprobe.exporter")

Scrape = Callable[[ExpositionFormat], Iterable[bytes]]
# Rendered text is kept in pieces of at least this size (a family can be a few hundred bytes).
PIECE_BYTES = 256 * 1024


def scrape_formats(scraper: Scraper) -> Scrape:
    """`scraper`'s read, rendered in the format a request negotiated (as Scraper.stream)."""
    from lvsprobe.exporter.scrape import GC_PAUSE

    def scrape(fmt: ExpositionFormat) -> Iterator[bytes]:
        with GC_PAUSE:
            families = scraper.collect()
            yield from render_chunks(families, fmt)

    return scrape


@dataclass(frozen=True)
class Body:
    """One rendered /metrics answer, in the pieces it was rendered in."""

    chunks: tuple[bytes, ...]
    size: int
    fmt: ExpositionFormat
    gzip: bool


class ScrapeFailed(Exception):
    """The scrape raised (a bug: collectors turn read errors into series); logged once."""


class _Abandoned(Exception):
    """Every client waiting for this read left before it was rendered."""


class _Flight:
    """One read: its future answer, how many requests wait for it, and its stop flag."""

    def __init__(self) -> None:
        self.future: asyncio.Future[Body]
        self.waiters = 0
        self.abandoned = threading.Event()


class Flights:
    """Answers for /metrics; every method runs on the event loop, the rendering in `executor`."""

    def __init__(self, scrape: Scrape, executor: Executor) -> None:
        self._scrape = scrape
        self._executor = executor
        self._flights: dict[tuple[ExpositionFormat, bool], _Flight] = {}
        self.reads_started = 0
        self.ready = False  # a read has completed: /-/ready

    async def get(self, fmt: ExpositionFormat, gzip: bool) -> Body:
        """This format's answer: from the read running now if there is one, else a new read.

        Raises ScrapeFailed when the read failed; cancelling the caller leaves the read to the
        other waiters, or abandons it when none is left.
        """
        key = (fmt, gzip)
        flight = self._flights.get(key)
        if flight is None:
            flight = self._start(key)
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.future)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.future.done():
                flight.abandoned.set()
                if self._flights.get(key) is flight:
                    del self._flights[key]

    def _start(self, key: tuple[ExpositionFormat, bool]) -> _Flight:
        loop = asyncio.get_running_loop()
        flight = _Flight()
        flight.future = loop.run_in_executor(
            self._executor, self._render, key[0], key[1], flight.abandoned
        )
        self._flights[key] = flight
        self.reads_started += 1

        def done(fut: asyncio.Future[Body]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if not fut.cancelled() and fut.exception() is None:
                self.ready = True

        flight.future.add_done_callback(done)
        return flight

    def _render(self, fmt: ExpositionFormat, gzip: bool, abandoned: threading.Event) -> Body:
        """In a worker thread: read and render the whole answer, unless abandoned first.

        The text comes a family at a time (many are a few hundred bytes): it is kept in pieces
        of at least PIECE_BYTES, so sending costs a system call per piece, not per family.
        """
        chunks: Iterable[bytes] = ()
        pieces: list[bytes] = []
        pending: list[bytes] = []
        pending_bytes = 0
        try:
            chunks = self._scrape(fmt)
            gz = zlib.compressobj(1, zlib.DEFLATED, 31) if gzip else None
            for chunk in chunks:
                if abandoned.is_set():
                    raise _Abandoned
                piece = gz.compress(chunk) if gz is not None else chunk
                pending.append(piece)
                pending_bytes += len(piece)
                if pending_bytes >= PIECE_BYTES:
                    pieces.append(b"".join(pending))
                    pending, pending_bytes = [], 0
            if gz is not None:
                pending.append(gz.flush())
            pieces.append(b"".join(pending))
        except _Abandoned:
            log.debug("scrape abandoned: every client waiting for it has gone")
            raise
        except Exception as exc:
            # A bug must cost one scrape, never the exporter; one log line per read.
            log.exception("scrape failed")
            raise ScrapeFailed(str(exc)) from exc
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # a generator left half-read gives back what it holds now
        return Body(tuple(pieces), sum(map(len, pieces)), fmt, gzip)
