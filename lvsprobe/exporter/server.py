"""The HTTP side of `lvsprobe export`: /metrics, health endpoints, a landing page, TLS, auth.

One event loop (`reactor.py`: no asyncio, which would load ssl into every exporter) serves
every connection (h11 parses HTTP/1.x), and the scrapes run in a
small pool of worker threads, shared by concurrent requests (`flights.py`): an open connection
costs a few kilobytes and no thread, so a slowloris flood costs memory it cannot grow, and
clients that do not read share one scrape's pieces until their write timeout cuts them off.
Every connection is bounded in time:

- read timeout: from accept (TLS handshake included) or from the first byte of a keep-alive
  request, the whole request head must arrive within it;
- idle timeout: how long a keep-alive connection may wait for its next request;
- write timeout: how long sending one response may take, from its first byte.

Beyond `max_connections` a new connection evicts the one that has waited longest for a request
(never one being answered), or is closed at once when every connection is being answered.

Basic auth guards /metrics and the landing page; /healthz, /-/healthy and /-/ready answer
without it (a kubelet probe cannot send credentials; they tell nothing about IPVS), never read
the kernel, and answer in milliseconds whatever the table size. TLS covers every path.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

import h11

from lvsprobe import __version__
from lvsprobe.exporter.exchange import Reply, request_headers
from lvsprobe.exporter.flights import Flights, Scrape, ScrapeFailed
from lvsprobe.exporter.httpsettings import HEALTH_PATHS, READY_PATH, HTTPLimits
from lvsprobe.exporter.negotiate import accepts_gzip, negotiate_format
from lvsprobe.exporter.reactor import Loop, Signal, SocketStream, Task, Wait

if TYPE_CHECKING:  # imported by whoever reads a --web.config.file: TLS and auth load then only
    from lvsprobe.exporter.webconfig import WebConfig

log = logging.getLogger("lvsprobe.exporter")

# A request head beyond this is refused with 431 (h11's default, Go's is 1 MB; ours are tiny).
MAX_HEAD_BYTES = 16 * 1024
CAP_NOTE_INTERVAL_S = 60.0
GC_SWEEP_INTERVAL_S = 5.0
# How long accepting pauses after accept() fails (out of file descriptors, say): the listening
# socket stays readable meanwhile, so retrying at once would spin the loop at 100 % CPU.
ACCEPT_RETRY_S = 1.0

_LANDING = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>lvsprobe IPVS exporter</title></head>
<body><h1>lvsprobe IPVS exporter</h1>
<p>Version {version}. Prometheus metrics of Linux Virtual Server (IPVS): services, real servers,
connection table, sync daemons, timeouts and sysctls.</p>
<ul><li><a href="{path}">{path}</a>: metrics (OpenMetrics when asked)</li>
<li><a href="/healthz">/healthz</a>, <a href="/-/healthy">/-/healthy</a>: the exporter serves</li>
<li><a href="/-/ready">/-/ready</a>: a first read of IPVS has completed (503 before)</li></ul>
</body></html>
"""


class _ClientGone(Exception):
    """The client closed its side while its answer was being read."""


@dataclass(eq=False)
class _Client:
    """An open connection: its stream, its peer's address, the task that serves it."""

    stream: SocketStream
    peer: str
    task: Task[None] | None = field(default=None, repr=False)


class ExporterServer:
    """Serves `scrape(format)` at `path`; `web` adds TLS, basic auth and headers.

    Binds in the constructor (so a busy port fails there, with OSError); `serve_forever` runs
    the event loop in the calling thread until `shutdown` (from any thread).
    """

    def __init__(
        self,
        address: tuple[str, int],
        scrape: Scrape,
        web: WebConfig | None = None,
        path: str = "/metrics",
        limits: HTTPLimits | None = None,
        warm_up: bool = True,
    ) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        # "[::]:PORT" serves IPv4 too, as Go's listeners do.
        dual = family == socket.AF_INET6 and socket.has_dualstack_ipv6()
        self.socket = socket.create_server(
            address, family=family, backlog=1024, dualstack_ipv6=dual
        )
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.web = web
        self.headers = web.headers if web is not None else {}
        self.path = path
        self.limits = limits or HTTPLimits()
        self.warm_up = warm_up
        self._loop = Loop()
        self._executor = ThreadPoolExecutor(self.limits.max_scrapes, thread_name_prefix="scrape")
        # bcrypt checks: off the loop, and apart from the scrapes so they never wait for them
        self._auth_executor = ThreadPoolExecutor(thread_name_prefix="auth")
        self.flights = Flights(scrape, self._executor, self._loop)
        self._open: set[_Client] = set()
        self._waiting: dict[_Client, None] = {}  # oldest first: evicted first
        self.refused_total = 0
        self.evicted_total = 0
        self._noted_cap_at = -CAP_NOTE_INTERVAL_S
        self._shutdown = threading.Event()
        self._running = threading.Lock()
        self._serving = False  # serve_forever has begun (under _running)
        self._stopped = threading.Event()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    @property
    def answering_connections(self) -> int:
        """Open connections whose request has been read and is being answered."""
        return len(self._open) - len(self._waiting)

    def serve_forever(self) -> None:
        loop = self._loop
        try:
            with self._running:
                if self._shutdown.is_set():
                    return
                self._serving = True
                self.socket.setblocking(False)
                loop.add_reader(self.socket, self._accept)
                if self.warm_up:
                    loop.spawn(self.flights.warm_up())
                else:
                    self.flights.warmed.set()
                loop.call_later(GC_SWEEP_INTERVAL_S, self._sweep_cycles)
            loop.run_forever()
        finally:
            with contextlib.suppress(KeyError, ValueError):
                loop.remove_reader(self.socket)
            for client in list(self._open):
                if client.task is not None:
                    client.task.coro.close()  # its `finally` blocks run now
                client.stream.reset()
            self._open.clear()
            self._waiting.clear()
            self.flights.abandon_all()
            loop.close()
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._auth_executor.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop serving and wait (up to 10 s) for `serve_forever` to return."""
        with self._running:
            self._shutdown.set()
            serving = self._serving
        if serving:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._stopped.wait(timeout=10)

    def server_close(self) -> None:
        self.socket.close()
        with self._running:
            if not self._serving:  # never served: serve_forever's end did not close it
                self._loop.close()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[str]:
        """Serve from a daemon thread for the block (tests, embedding); yields `HOST:PORT`."""
        thread = threading.Thread(target=self.serve_forever, name="exporter-http", daemon=True)
        thread.start()
        try:
            host, port = self.server_address
            yield f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        finally:
            self.shutdown()
            self.server_close()
            thread.join(timeout=10)

    def _sweep_cycles(self) -> None:
        """Collect the young generations every GC_SWEEP_INTERVAL_S while no scrape runs.

        A connection that ends in an error leaves a reference cycle (the exception's traceback
        holds the frames that hold it), and the scrapes' GC pause (scrape.py) ends with a
        collection of generation 0 that restarts the count which would trigger the older ones:
        left alone, a busy exporter would keep what such connections held.
        """
        if gc.isenabled():  # off while a scrape runs: leave its objects alone
            gc.collect(1)
        self._loop.call_later(GC_SWEEP_INTERVAL_S, self._sweep_cycles)

    # --- connections ----------------------------------------------------------------------

    def _accept_again(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed meanwhile: nothing to accept
            self._loop.add_reader(self.socket, self._accept)

    def _accept(self) -> None:
        """Take every connection waiting in the backlog; each gets a task of its own."""
        while True:
            try:
                sock, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, say
                log.warning("accept failed: %s (accepting again in %.1f s)", exc, ACCEPT_RETRY_S)
                self._loop.remove_reader(self.socket)
                self._loop.call_later(ACCEPT_RETRY_S, self._accept_again)
                return
            stream = self.web.stream(sock) if self.web is not None else SocketStream(sock)
            client = _Client(stream, str(address[0]) if address else "unknown")
            if len(self._open) >= self.limits.max_connections and not self._evict_one():
                self.refused_total += 1  # counted before the client can see the close
                stream.reset()
                self._note_cap()
                continue
            self._open.add(client)
            self._waiting[client] = None
            client.task = self._loop.spawn(self._connection(client))

    async def _connection(self, client: _Client) -> None:
        try:
            await self._converse(client)
            client.stream.close()  # everything sent is in the kernel already: a plain close
        except (TimeoutError, OSError, h11.RemoteProtocolError, _ClientGone, ScrapeFailed) as exc:
            # A scrape that fails after its answer began is cut short (logged once, by its read).
            log.debug("connection closed: client=%s reason=%s", client.peer, type(exc).__name__)
            client.stream.reset()
        except Exception:
            log.warning("request failed: client=%s", client.peer, exc_info=True)
            client.stream.reset()
        finally:
            self._open.discard(client)
            self._waiting.pop(client, None)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request; False if none waits."""
        client = next(iter(self._waiting), None)
        if client is None:
            return False
        del self._waiting[client]
        self._open.discard(client)
        self.evicted_total += 1
        if client.task is not None:
            self._loop.cancel(client.task)  # lets go of its socket first
        client.stream.reset()
        self._note_cap()
        return True

    def _note_cap(self) -> None:
        now = time.monotonic()
        if now - self._noted_cap_at >= CAP_NOTE_INTERVAL_S:
            self._noted_cap_at = now
            log.warning(
                "connection cap reached: max_connections=%d evicted_total=%d refused_total=%d",
                self.limits.max_connections,
                self.evicted_total,
                self.refused_total,
            )

    async def _converse(self, client: _Client) -> None:
        """Requests and answers on one connection until either side closes or a deadline."""
        stream = client.stream
        deadline: float | None = self._loop.time() + self.limits.read_timeout_s
        await stream.handshake(deadline)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        while True:
            self._waiting.pop(client, None)
            self._waiting[client] = None
            try:
                request = await self._read_request(conn, stream, deadline)
            except h11.RemoteProtocolError as exc:
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    code = exc.error_status_hint
                    text = f"{code} {HTTPStatus(code).phrase}\n".encode()
                    await self._reply(conn, stream, head=False).send(code, text, close=True)
                return
            self._waiting.pop(client, None)
            if request is None:
                return
            await self._respond(conn, client, request)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # HTTP/1.0, `Connection: close`, or a request body left unread
            conn.start_next_cycle()
            deadline = None

    async def _read_request(
        self, conn: h11.Connection, stream: SocketStream, deadline: float | None
    ) -> h11.Request | None:
        """The next request head; None when the client closed cleanly between requests.

        `deadline` None: a keep-alive wait, the idle timeout until the first byte.
        """
        now = self._loop.time
        if deadline is None and conn.trailing_data[0]:
            deadline = now() + self.limits.read_timeout_s  # a pipelined request began
        idle_until = now() + self.limits.idle_timeout_s
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                # EndOfMessage when there is no body; a body is left unread and the
                # connection closes after the answer.
                conn.next_event()
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is not h11.NEED_DATA:
                raise h11.RemoteProtocolError(f"unexpected {event!r}", error_status_hint=400)
            data = await stream.recv(MAX_HEAD_BYTES, deadline if deadline else idle_until)
            conn.receive_data(data)
            if deadline is None and data:
                deadline = now() + self.limits.read_timeout_s

    # --- answers --------------------------------------------------------------------------

    def _reply(self, conn: h11.Connection, stream: SocketStream, head: bool) -> Reply:
        return Reply(conn, stream, head, self.limits.write_timeout_s, self.headers)

    async def _respond(self, conn: h11.Connection, client: _Client, request: h11.Request) -> None:
        reply = self._reply(conn, client.stream, head=request.method == b"HEAD")
        headers = request_headers(request)
        target = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        if request.method not in (b"GET", b"HEAD"):
            await reply.send(405, b"method not allowed\n", {"Allow": "GET, HEAD"})
        elif target in HEALTH_PATHS:
            await reply.send(200, b"lvsprobe exporter is healthy.\n")
        elif target == READY_PATH:
            if self.flights.ready:
                await reply.send(200, b"lvsprobe exporter is ready.\n")
            else:
                await reply.send(503, b"not ready: the first read of IPVS has not completed\n")
        elif not await self._authorized(headers.get("authorization"), client.peer):
            await reply.send(401, b"Unauthorized\n", {"WWW-Authenticate": 'Basic realm="lvsprobe"'})
        elif target == self.path:
            await self._metrics(reply, headers)
        elif target == "/":
            await reply.send(200, self._landing_page(), ctype="text/html; charset=utf-8")
        else:
            await reply.send(404, b"404 page not found\n")

    def _landing_page(self) -> bytes:
        # html is imported here, by the one page that needs it (0.5 MB of entities the
        # metrics never use).
        import html

        return _LANDING.format(version=__version__, path=html.escape(self.path)).encode()

    async def _authorized(self, header: str | None, client: str) -> bool:
        auth = self.web.auth if self.web is not None else None
        if auth is None:
            return True
        # bcrypt costs ~50 ms: off the event loop, so wrong passwords cannot stall it.
        return await self._loop.in_thread(self._auth_executor, auth.check, header, client)

    async def _metrics(self, reply: Reply, headers: dict[str, str]) -> None:
        warmed = self.flights.warmed
        # One read at a time at start: a scrape waits for the first read to end.
        await self._unless_gone(reply, lambda: None if warmed.is_set else warmed)
        fmt = negotiate_format(headers.get("accept"))
        gzip = accepts_gzip(headers.get("accept-encoding"))
        timeout_s = _scrape_timeout_s(headers.get("x-prometheus-scrape-timeout-seconds"))
        with self.flights.reading(fmt, gzip, timeout_s) as body:
            try:
                await self._unless_gone(reply, body.unstarted)
            except ScrapeFailed:
                await reply.send(500, b"scrape failed; see the exporter log\n")
                return
            extra = {"Vary": "Accept, Accept-Encoding"}
            if body.flight.gzip:
                extra["Content-Encoding"] = "gzip"
            await reply.send(200, body, extra, fmt.value, size=body.flight.size)

    @staticmethod
    async def _unless_gone(reply: Reply, pending: Callable[[], Signal | None]) -> None:
        """Wait until `pending()` is None (until then it is what to wait on), watching the
        connection meanwhile: a client that closes gives up its place (the read is abandoned
        if nobody else reads it), as Go's servers do. A pipelined request is kept for the
        next cycle."""
        stream, watching = reply.stream, True
        while (signal := pending()) is not None:
            sock = stream.sock if watching else None
            if await Wait(sock, stream.want, signal=signal) == "io":
                data = stream.recv_nowait(MAX_HEAD_BYTES)  # OSError: the connection broke
                if data is None:
                    continue
                if not data:
                    raise _ClientGone
                reply.conn.receive_data(data)
                watching = False


def _scrape_timeout_s(header: str | None) -> float | None:
    """X-Prometheus-Scrape-Timeout-Seconds, when it is a sane number of seconds."""
    try:
        seconds = float(header) if header is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 < seconds < 86_400 else None
