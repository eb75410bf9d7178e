"""/metrics answers rendered off the event loop, one read at a time per format, shared.

A worker thread reads and renders a scrape (gzipped as it goes, when asked, by ISA-L: a fifth
of zlib's time at level 1, and a smaller body) into pieces of PIECE_BYTES, handing each to the
event loop as soon as it is made; it never waits for a client, so a client that reads slowly
never holds a worker or the kernel-read slot. The requests that read the pieces share them
("single flight"): a request that arrives while a read of the same format and encoding runs
joins it rather than reading the kernel again, as long as no piece has been let go yet. A
piece is let go once every request reading it has sent it, so one fast client holds about what
the old streaming writer held (the families not yet rendered plus a piece), and forty clients
that never read hold one body between them, not forty scrapes. A read whose every reader has
left is abandoned at its next chunk (the kernel read itself runs to its end).

The price of sharing: a request that joins a running read gets data read up to one scrape
duration before it arrived; Prometheus's own timestamps are already that far off.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from isal import isal_zlib

from lvsprobe.exporter.reactor import Loop, Signal, Wait
from lvsprobe.exporter.render import ExpositionFormat, render_chunks

if TYPE_CHECKING:
    from lvsprobe.exporter.scrape import Scraper

log = logging.getLogger("lvsprobe.exporter")

# (format, the time the scraper allows, from X-Prometheus-Scrape-Timeout-Seconds) -> text
Scrape = Callable[[ExpositionFormat, float | None], Iterable[bytes]]
# Rendered text is handed over in pieces of at least this size (a family can be 200 bytes).
PIECE_BYTES = 256 * 1024
# How far rendering may run ahead of the fastest reader, in bytes handed over and not yet
# taken: beyond, it waits (the families not yet rendered are smaller than their text), until
# a reader moves on or all leave. Counted in bytes, not pieces: a plain chunk is several
# times a gzipped piece.
LOOKAHEAD_BYTES = 1024 * 1024


def scrape_formats(scraper: Scraper) -> Scrape:
    """`scraper`'s read, rendered in the format a request negotiated (as Scraper.stream)."""
    from lvsprobe.exporter.scrape import GC_PAUSE

    def scrape(fmt: ExpositionFormat, timeout_s: float | None) -> Iterator[bytes]:
        with GC_PAUSE:
            families = scraper.collect(timeout_s)
            yield from render_chunks(families, fmt)

    return scrape


class ScrapeFailed(Exception):
    """The scrape raised (a bug: collectors turn read errors into series); logged once."""


class _Abandoned(Exception):
    """Every request reading this flight left before it was rendered."""


class Flight:
    """One read being rendered: the pieces so far, and where each of its readers is.

    Lives on the event loop: the worker thread hands pieces over through call_soon_threadsafe
    and reads only `lead`, `progress` and `abandoned`.
    """

    def __init__(self, fmt: ExpositionFormat, gzip: bool, timeout_s: float | None) -> None:
        self.fmt, self.gzip = fmt, gzip
        self.timeout_s = timeout_s  # the first request's; those that join share its deadline
        self.pieces: list[bytes] = []
        self.released = 0  # pieces[:released] are let go (b"")
        self.done = False
        self.error: ScrapeFailed | None = None
        self.positions: dict[int, int] = {}  # reader id -> index of its next piece
        self.lead = 0  # the most pieces any reader has taken (read by the worker thread)
        self.progress = threading.Event()  # a reader took a piece
        self.abandoned = threading.Event()
        self.changed = Signal()  # a fresh one per change

    @property
    def joinable(self) -> bool:
        return self.released == 0 and not self.done

    @property
    def size(self) -> int | None:
        """The whole answer's size, once it is rendered and all there (a Content-Length)."""
        if not self.done or self.released or self.error is not None:
            return None
        return sum(map(len, self.pieces))

    def append(self, piece: bytes) -> None:
        self.pieces.append(piece)
        self._wake()

    def finish(self, error: ScrapeFailed | None) -> None:
        self.done, self.error = True, error
        self._wake()

    def _wake(self) -> None:
        changed, self.changed = self.changed, Signal()
        changed.set()

    def leave(self, reader: int) -> None:
        del self.positions[reader]
        if not self.positions and not self.done:
            self.abandoned.set()
            self.progress.set()
        self.release()

    def release(self) -> None:
        """Let go of the pieces every reader has taken (a reader holds the one it sends)."""
        low = min(self.positions.values(), default=len(self.pieces) if self.done else 0)
        for index in range(self.released, low):
            self.pieces[index] = b""
        self.released = max(self.released, low)


class FlightReader:
    """One request's place in a flight: the pieces in order, from the first."""

    def __init__(self, flight: Flight, reader_id: int) -> None:
        self.flight = flight
        self._id = reader_id
        flight.positions[reader_id] = 0

    def unstarted(self) -> Signal | None:
        """What to wait on until there is a piece or the read has ended; None then, and
        ScrapeFailed if it has failed by then (pieces or not: what came before a failure is
        not an answer)."""
        flight = self.flight
        if not flight.pieces and not flight.done:
            return flight.changed
        if flight.error is not None:
            raise flight.error
        return None

    async def next_piece(self, deadline: float | None = None) -> bytes | None:
        """The next piece, waiting (until `deadline`: TimeoutError) for it to be rendered;
        None at the end, ScrapeFailed if the read failed."""
        flight = self.flight
        index = flight.positions[self._id]
        while index >= len(flight.pieces):
            if flight.done:
                if flight.error is not None:
                    raise flight.error
                return None
            await Wait(signal=flight.changed, deadline=deadline)
        piece = flight.pieces[index]
        flight.positions[self._id] = index + 1
        flight.lead = max(flight.lead, index + 1)
        flight.progress.set()
        flight.release()
        return piece

    def leave(self) -> None:
        self.flight.leave(self._id)


class Flights:
    """Answers for /metrics; every method runs on `loop`, the rendering in `executor`."""

    def __init__(self, scrape: Scrape, executor: Executor, loop: Loop) -> None:
        self._scrape = scrape
        self._executor = executor
        self._loop = loop
        self._flights: dict[tuple[ExpositionFormat, bool], Flight] = {}
        self._reader_ids = itertools.count()
        self.ready = False  # a read has completed: /-/ready
        self.warmed = Signal()  # the warm-up read has ended, well or not

    async def warm_up(self) -> None:
        """A first read of the kernel, rendered no further than its first family: /-/ready
        turns 200 before the first scrape, and the read costs its families only."""
        try:
            if await self._loop.in_thread(self._executor, self._first_chunk):
                self.ready = True
        finally:
            self.warmed.set()

    def _first_chunk(self) -> bool:
        chunks: Iterator[bytes] = iter(())
        try:
            chunks = iter(self._scrape(ExpositionFormat.CLASSIC, None))
            next(chunks, None)
            return True
        except Exception:
            log.exception("scrape failed")
            return False
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()

    @property
    def running(self) -> int:
        """Reads being rendered that a request may still join or is reading."""
        return len(self._flights)

    def abandon_all(self) -> None:
        """Stop every read at its next chunk (the server is stopping)."""
        for flight in self._flights.values():
            flight.abandoned.set()
            flight.progress.set()
        self._flights.clear()

    @contextlib.contextmanager
    def reading(
        self, fmt: ExpositionFormat, gzip: bool, timeout_s: float | None = None
    ) -> Iterator[FlightReader]:
        """A place in this format's running read (or a new one, within `timeout_s`) for the
        block; leaving the last place abandons the read."""
        key = (fmt, gzip)
        flight = self._flights.get(key)
        if flight is None or not flight.joinable:
            flight = self._start(key, timeout_s)
        reader = FlightReader(flight, next(self._reader_ids))
        try:
            yield reader
        finally:
            reader.leave()
            if flight.abandoned.is_set() and self._flights.get(key) is flight:
                del self._flights[key]

    def _start(self, key: tuple[ExpositionFormat, bool], timeout_s: float | None) -> Flight:
        loop = self._loop
        flight = Flight(*key, timeout_s)
        self._flights[key] = flight

        ends = [0]  # ends[i]: the bytes of the first i pieces handed over

        def ahead() -> int:
            return ends[-1] - ends[min(flight.lead, len(ends) - 1)]

        def hand_over(piece: bytes) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has ended (shutdown)
                loop.call_soon_threadsafe(flight.append, piece)
            ends.append(ends[-1] + len(piece))
            while ahead() >= LOOKAHEAD_BYTES and not flight.abandoned.is_set():
                flight.progress.clear()
                if ahead() < LOOKAHEAD_BYTES:
                    break
                flight.progress.wait(1.0)  # bounded: readers leave by the write timeout

        def finished(last: bytes, error: ScrapeFailed | None) -> None:
            # The last piece and the end in one step: a reader that starts now knows the size.
            if self._flights.get(key) is flight:
                del self._flights[key]
            if error is None:
                self.ready = True
                flight.pieces.append(last)
            flight.finish(error)

        def render() -> None:
            last, error = self._render(flight, hand_over)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(finished, last, error)

        self._executor.submit(render)
        return flight

    def _render(
        self, flight: Flight, hand_over: Callable[[bytes], None]
    ) -> tuple[bytes, ScrapeFailed | None]:
        """In a worker thread: read and render the answer into pieces, unless abandoned.

        Returns the last piece (handed over with the end) or what failed."""
        chunks: Iterable[bytes] = ()
        pending: list[bytes] = []
        pending_bytes = 0
        try:
            chunks = self._scrape(flight.fmt, flight.timeout_s)
            gz = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31) if flight.gzip else None
            for chunk in chunks:
                if flight.abandoned.is_set():
                    raise _Abandoned
                piece = gz.compress(chunk) if gz is not None else chunk
                pending.append(piece)
                pending_bytes += len(piece)
                if pending_bytes >= PIECE_BYTES:
                    hand_over(b"".join(pending))
                    pending, pending_bytes = [], 0
            if gz is not None:
                pending.append(gz.flush())
            return b"".join(pending), None
        except _Abandoned:
            log.debug("scrape abandoned: every client waiting for it has gone")
            return b"", ScrapeFailed("abandoned")
        except Exception as exc:
            # A bug must cost one scrape, never the exporter; one log line per read.
            log.exception("scrape failed")
            return b"", ScrapeFailed(str(exc))
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # a generator left half-read gives back what it holds now
