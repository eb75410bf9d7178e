"""The HTTP side of `lvsprobe export`: /metrics, a landing page, TLS and basic auth.

A thread per connection (TLS handshakes happen there too, so a slow client cannot stall the
accept loop); a semaphore bounds how many scrapes read the kernel at once.
"""

from __future__ import annotations

import html
import logging
import socket
import ssl
import threading
import zlib
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lvsprobe import __version__
from lvsprobe.exporter.render import CONTENT_TYPE
from lvsprobe.exporter.webconfig import WebConfig

log = logging.getLogger("lvsprobe.exporter")

_LANDING = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>lvsprobe IPVS exporter</title></head>
<body><h1>lvsprobe IPVS exporter</h1>
<p>Version {version}. Prometheus metrics of Linux Virtual Server (IPVS): services, real servers,
connection table, sync daemons, timeouts and sysctls.</p>
<ul><li><a href="{path}">{path}</a></li></ul>
</body></html>
"""


def parse_listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[V6]:PORT`; ValueError says what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r}: expected HOST:PORT or :PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    return host, port


class ExporterServer(ThreadingHTTPServer):
    """Serves `scrape()` at `path`; `web` adds TLS, basic auth and headers."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        scrape: Callable[[], bytes | Iterable[bytes]],
        web: WebConfig | None = None,
        path: str = "/metrics",
        max_requests: int = 40,
    ) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.scrape = scrape
        self.web = web or WebConfig()
        self.path = path
        self.slots = threading.BoundedSemaphore(max(1, max_requests))
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            # "[::]:PORT" serves IPv4 too, as Go's listeners do.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.web.tls is not None:
            request.settimeout(30)
            try:
                request = self.web.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                log.debug("TLS handshake failed: client=%s error=%s", client_address[0], exc)
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.warning("request failed: client=%s", client_address[0], exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    server_version = f"lvsprobe/{__version__}"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: client=%s %s", self.client_address[0], format % args)

    def do_GET(self) -> None:
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        if path == self.server.path:
            self._metrics()
        elif path == "/":
            page = _LANDING.format(version=__version__, path=html.escape(self.server.path))
            self._send(200, "text/html; charset=utf-8", page.encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"404 page not found\n")

    def _authorized(self) -> bool:
        auth = self.server.web.auth
        if auth is None or auth.check(self.headers.get("Authorization"), self.client_address[0]):
            return True
        self._send(
            401,
            "text/plain; charset=utf-8",
            b"Unauthorized\n",
            {"WWW-Authenticate": 'Basic realm="lvsprobe"'},
        )
        return False

    def _metrics(self) -> None:
        with self.server.slots:
            try:
                body = self.server.scrape()
            except Exception:
                # A bug must cost one scrape, never the exporter.
                log.exception("scrape failed")
                message = b"scrape failed; see the exporter log\n"
                self._send(500, "text/plain; charset=utf-8", message)
                return
            chunks = [body] if isinstance(body, bytes) else body
            try:
                self._stream(chunks, "gzip" in self.headers.get("Accept-Encoding", ""))
            except (BrokenPipeError, ConnectionResetError) as exc:
                log.debug(
                    "client went away mid-scrape: client=%s error=%s", self.client_address[0], exc
                )
                self.close_connection = True
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # a generator left half-read gives back what it holds now

    def _stream(self, chunks: Iterable[bytes], compress: bool) -> None:
        """Chunked transfer: the body is never held whole (50 MB on a kube-proxy node)."""
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Transfer-Encoding", "chunked")
        if compress:
            self.send_header("Content-Encoding", "gzip")
        for key, value in self.server.web.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        gz = zlib.compressobj(1, zlib.DEFLATED, 31) if compress else None
        for chunk in chunks:
            self._chunk(gz.compress(chunk) if gz is not None else chunk)
        if gz is not None:
            self._chunk(gz.flush())
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data))

    def _send(
        self, code: int, ctype: str, body: bytes, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**self.server.web.headers, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET
