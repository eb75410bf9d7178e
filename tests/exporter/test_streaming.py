"""/metrics streamed: read whole, then rendered in chunks straight into gzip and out as HTTP
chunks. The body a client puts back together is exactly the text rendered whole (the golden
files), in every format and encoding; a slow reader gets all of it; a scrape that fails
before its answer begins is a 500, and one that fails after is cut short (never a complete
200); hostile Accept headers still get metrics.

Every wait is a generous bound on behaviour, never a measure of speed.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lvsprobe.exporter.flights import (
    LOOKAHEAD_BYTES,
    Flight,
    FlightReader,
    Scrape,
    ScrapeFailed,
    scrape_formats,
)
from lvsprobe.exporter.httpsettings import HTTPLimits
from lvsprobe.exporter.render import ExpositionFormat, render
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.exporter.server import ExporterServer
from lvsprobe.kernel.genl.simulated import generated_services
from lvsprobe.model import Snapshot

GOLDEN = Path(__file__).parent / "golden"
BUILD = ("0.1.0", "3.11.0")
BOUND_S = 30
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Serve a Scrape on loopback for the test; returns HOST:PORT."""
    servers: list[tuple[ExporterServer, threading.Thread]] = []

    def start(scrape: Scrape, **limits: float) -> str:
        server = ExporterServer(
            ("127.0.0.1", 0), scrape, limits=HTTPLimits(**limits), warm_up=False
        )
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _scraper(snap: Snapshot, **options: object) -> Scraper:
    return Scraper(ExportOptions(**options), read=lambda t, **kw: snap, build=BUILD)  # type: ignore[arg-type]


def _big_snapshot() -> Snapshot:
    """4,000 real servers: a body of many pieces, plain and gzipped."""
    return Snapshot(
        loaded=True, via="netlink", version="1.2.1", services=tuple(generated_services(400))
    )


def _exchange(
    address: str, headers: dict[str, str], pause_s: float = 0.0, rcvbuf: int | None = None
) -> tuple[bytes, bytes, bool]:
    """One HTTP/1.1 GET of /metrics on a raw socket, read until the server closes: (head,
    body as sent, whether the connection ended cleanly rather than by a reset)."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(BOUND_S)
    sock.connect((host, int(port)))
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{lines}\r\n"
    reply, clean = bytearray(), True
    with sock:
        sock.sendall(request.encode("latin-1"))
        while True:
            try:
                data = sock.recv(4096 if pause_s else 1 << 20)
            except ConnectionResetError:
                clean = False
                break
            if not data:
                break
            reply += data
            if pause_s:
                time.sleep(pause_s)
    head, _, body = bytes(reply).partition(b"\r\n\r\n")
    return head, body, clean


def _dechunk(body: bytes) -> bytes | None:
    """The data of a chunked body, None when it does not end with its last chunk."""
    out = bytearray()
    while True:
        size_line, sep, body = body.partition(b"\r\n")
        if not sep:
            return None
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out) if body == b"\r\n" else None
        if len(body) < size + 2:
            return None
        out += body[:size]
        body = body[size + 2 :]


def _body(head: bytes, body: bytes) -> bytes:
    """What the client gets: dechunked when chunked, gunzipped when gzipped."""
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        data = _dechunk(body)
        assert data is not None, "the chunked body is cut short"
    else:
        length = int(lower.split(b"content-length: ")[1].split(b"\r\n")[0])
        assert len(body) == length
        data = body
    return gzip.decompress(data) if b"content-encoding: gzip" in lower else data


@pytest.mark.parametrize("accept_gzip", [False, True], ids=["plain", "gzip"])
def test_the_body_put_back_together_is_the_golden_text(
    serve: Callable[..., str], make_snapshot: Callable[..., Snapshot], accept_gzip: bool
) -> None:
    """The golden nat.prom, served: the families the golden test renders whole."""
    snap = make_snapshot()
    scraper = _scraper(snap, conns="per-real-server", backend_rates=True, backend_extra=True)
    address = serve(scrape_formats(scraper))
    headers = {"Accept-Encoding": "gzip"} if accept_gzip else {}
    head, body, clean = _exchange(address, headers)
    assert head.startswith(b"HTTP/1.1 200") and clean
    assert _body(head, body) == (GOLDEN / "nat.prom").read_bytes()


@pytest.mark.parametrize(
    "accept",
    [None, OPENMETRICS, "application/openmetrics-text; version=0.0.1"],
    ids=["classic", "openmetrics-1.0.0", "openmetrics-0.0.1"],
)
@pytest.mark.parametrize("accept_gzip", [False, True], ids=["plain", "gzip"])
def test_a_big_body_in_many_chunks_is_the_text_rendered_whole(
    serve: Callable[..., str], accept: str | None, accept_gzip: bool
) -> None:
    """Thousands of real servers: many pieces, each HTTP chunk in order, nothing lost."""
    snap = _big_snapshot()
    address = serve(scrape_formats(_scraper(snap)))
    headers = {"Accept-Encoding": "gzip"} if accept_gzip else {}
    if accept is not None:
        headers["Accept"] = accept
    head, body, clean = _exchange(address, headers)
    assert head.startswith(b"HTTP/1.1 200") and clean
    fmt = next(f for f in ExpositionFormat if accept is None or f.value.startswith(accept))
    whole = render(_scraper(snap).collect(), fmt)
    assert _body(head, body) == whole
    assert whole.count(b"\nipvs_backend_weight{") == 4000


def test_a_slow_reader_gets_every_byte(serve: Callable[..., str]) -> None:
    """A client reading 4 KB at a time through a small window, within the write timeout."""
    snap = _big_snapshot()
    address = serve(scrape_formats(_scraper(snap)), write_timeout_s=BOUND_S)
    head, body, clean = _exchange(address, {"Accept-Encoding": "gzip"}, 0.001, rcvbuf=4096)
    assert head.startswith(b"HTTP/1.1 200") and clean
    assert _body(head, body) == _scraper(snap).scrape()


def test_rendering_runs_ahead_of_a_stalled_reader_by_bytes_not_pieces(
    serve: Callable[..., str],
) -> None:
    """Plain chunks are big (a gzipped piece is a quarter MB): a reader that stops costs
    about LOOKAHEAD_BYTES of rendered text beyond what the sockets hold, not several chunks."""
    chunk_bytes = 1 << 20
    rendered: list[int] = []
    ended = threading.Event()

    def plain_chunks(fmt: ExpositionFormat, timeout_s: float | None) -> Iterator[bytes]:
        try:
            for _ in range(64):
                rendered.append(1)
                yield b"x" * (chunk_bytes - 1) + b"\n"
        finally:
            ended.set()

    address = serve(plain_chunks, write_timeout_s=3.0)
    host, port = address.rsplit(":", 1)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        deadline = time.monotonic() + BOUND_S
        while not rendered and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(1.0)  # within the write timeout: the renderer has stopped by now
        held = socket.socket().getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)  # a default
        # What the sockets take (the kernel's autotuned send buffer, at most a few MB on
        # loopback), one chunk being written, and the lookahead.
        sockets_bytes = 4 * 1024 * 1024 + held
        assert len(rendered) * chunk_bytes <= sockets_bytes + chunk_bytes + 2 * LOOKAHEAD_BYTES
        assert ended.wait(BOUND_S)  # cut off at the write timeout; the read is abandoned
        assert len(rendered) < 64


def test_a_failed_collection_is_a_500_never_a_partial_200(serve: Callable[..., str]) -> None:
    """A bug in a read (collectors turn read errors into series) fails before the answer
    begins: a 500 and a line, no metrics."""

    def broken(target: object, **kw: object) -> Snapshot:
        raise RuntimeError("boom")

    scraper = Scraper(ExportOptions(), read=broken, build=BUILD)  # type: ignore[arg-type]
    address = serve(scrape_formats(scraper))
    for headers in ({}, {"Accept-Encoding": "gzip"}):
        head, body, _ = _exchange(address, headers)
        assert head.startswith(b"HTTP/1.1 500")
        assert _body(head, body) == b"scrape failed; see the exporter log\n"


def test_a_render_failing_after_the_answer_began_cuts_it_short(
    serve: Callable[..., str],
) -> None:
    """Once the status line is out, a failure resets the connection and the chunked body
    never gets its last chunk, so no client takes it for a whole answer."""
    began = threading.Event()

    def fails_late(fmt: ExpositionFormat, timeout_s: float | None) -> Iterator[bytes]:
        yield b"ipvs_up 1\n" * 100_000  # a piece of its own, sent before the failure
        began.wait(BOUND_S)
        raise RuntimeError("boom")

    address = serve(fails_late)
    host, port = address.rsplit(":", 1)
    reply = bytearray()
    with socket.create_connection((host, int(port)), timeout=BOUND_S) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(1 << 16)
        began.set()
        with contextlib.suppress(ConnectionResetError):
            while data := sock.recv(1 << 20):
                reply += data
    head, _, body = bytes(reply).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert _dechunk(body) is None


def test_a_read_that_failed_before_its_answer_began_is_no_answer() -> None:
    """Pieces rendered before a failure are not sent when the failure is known first: a 500
    (ScrapeFailed), and never a Content-Length for them."""

    flight = Flight(ExpositionFormat.CLASSIC, False, None)
    reader = FlightReader(flight, 0)
    flight.append(b"ipvs_up 1\n")
    flight.finish(ScrapeFailed("boom"))
    assert flight.size is None
    with pytest.raises(ScrapeFailed):
        reader.unstarted()


HOSTILE_ACCEPTS = [
    "",
    ";;;,,,;q=;=;",
    "application/openmetrics-text; version=9.9.9, text/plain;q=abc",
    "text/plain;version=0.0.4;q=-1, */*;q=NaN, */*;q=1e309",
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
    ", ".join(["x/y;q=0.1"] * 600),
    "\xff\xfe" + "é" * 200,
]


@pytest.mark.parametrize("accept", HOSTILE_ACCEPTS)
def test_hostile_accept_headers_still_get_metrics(serve: Callable[..., str], accept: str) -> None:
    snap = _big_snapshot()
    address = serve(scrape_formats(_scraper(snap)))
    head, body, clean = _exchange(address, {"Accept": accept, "Accept-Encoding": accept})
    assert head.startswith(b"HTTP/1.1 200") and clean
    assert b"content-type: text/plain; version=0.0.4" in head.lower()
    assert _body(head, body) == _scraper(snap).scrape()


def test_an_accept_header_beyond_the_head_limit_is_refused(serve: Callable[..., str]) -> None:
    address = serve(scrape_formats(_scraper(_big_snapshot())))
    head, _, _ = _exchange(address, {"Accept": "text/plain," * 4000})
    assert head.startswith(b"HTTP/1.1 431")
