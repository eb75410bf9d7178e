"""Hostile and careless clients on loopback: deadlines, the connection cap, slow readers,
clients that leave mid-scrape, and one read shared by concurrent scrapes.

The server runs with timeouts of about a second; every wait here is a generous bound on
behaviour (a socket closed, a scrape answered), never a measure of speed.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from lvsprobe.exporter.flights import Scrape
from lvsprobe.exporter.httpsettings import HTTPLimits
from lvsprobe.exporter.render import ExpositionFormat
from lvsprobe.exporter.server import ExporterServer

FAST = HTTPLimits(read_timeout_s=0.5, write_timeout_s=1.0, idle_timeout_s=0.5)
BOUND_S = 15  # the longest any one wait may take before the test fails
GET = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n"
# Far more than loopback's socket buffers hold (a few MB each way): a client that does not
# read stalls the server's writes.
BIG_BODY = (b"x" * 1023 + b"\n") * 32 * 1024


def _server(scrape: Scrape, **limits: float) -> ExporterServer:
    fields = {**FAST.__dict__, **limits}
    return ExporterServer(("127.0.0.1", 0), scrape, limits=HTTPLimits(**fields), warm_up=False)


def _small(fmt: ExpositionFormat, timeout_s: float | None) -> list[bytes]:
    return [b"ipvs_up 1\n"]


def _big(fmt: ExpositionFormat, timeout_s: float | None) -> list[bytes]:
    return [BIG_BODY]


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.settimeout(BOUND_S)
    sock.connect((host, int(port)))
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Reads (and drops) until the server closes; False if it is still open after BOUND_S."""
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 16):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def _scrape(address: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=BOUND_S) as resp:
        return resp.status, resp.read()


def _wait_until(ok: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + BOUND_S
    while not ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /metrics HTT", b"GET /metrics HTTP/1.1\r\nHost: t\r\n"],
    ids=["silent", "partial-line", "partial-head"],
)
def test_read_timeout_closes_an_unfinished_request(sent: bytes) -> None:
    with _server(_small).in_thread() as address, _connect(address) as sock:
        sock.sendall(sent)
        assert _closed_by_server(sock)


def test_read_timeout_bounds_the_whole_head_not_each_byte() -> None:
    """A slowloris dribbling a byte well within the timeout is still closed at the deadline."""
    with _server(_small, read_timeout_s=1.0).in_thread() as address, _connect(address) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /metrics HTTP/1.1\r\n")
        closed = False
        for _ in range(int(BOUND_S / 0.2)):
            try:
                sock.sendall(b"X")
            except OSError:
                closed = True
                break
            time.sleep(0.2)
        assert closed or _closed_by_server(sock)
        assert time.monotonic() - started < BOUND_S


def test_idle_keep_alive_is_closed_after_the_idle_timeout() -> None:
    with _server(_small).in_thread() as address, _connect(address) as sock:
        sock.sendall(GET)
        reply = b""
        while not reply.endswith(b"ipvs_up 1\n"):
            reply += sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200")
        assert _closed_by_server(sock)


def test_keep_alive_serves_several_requests_within_the_idle_timeout() -> None:
    with _server(_small, idle_timeout_s=30).in_thread() as address, _connect(address) as sock:
        for _ in range(3):
            sock.sendall(GET)
            reply = b""
            while not reply.endswith(b"ipvs_up 1\n"):
                reply += sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 200")


def test_never_reading_clients_neither_stall_others_nor_stay() -> None:
    """40 clients ask for a 32 MB body and never read: a normal scrape is answered meanwhile,
    and each of them is cut off once the write timeout has passed."""
    server = _server(_big, write_timeout_s=1.0)
    with server.in_thread() as address:
        stalled = [_connect(address) for _ in range(40)]
        try:
            for sock in stalled:
                sock.sendall(GET)
            status, body = _scrape(address)
            assert status == 200 and body == BIG_BODY
            assert _wait_until(lambda: server.open_connections == 0)
            for sock in stalled:
                assert _closed_by_server(sock)
        finally:
            for sock in stalled:
                sock.close()


def test_rendering_waits_for_a_client_that_does_not_read() -> None:
    """A 100 MB answer to a client that stops reading is not rendered ahead into memory: the
    worker waits a few pieces ahead of it, and gives up once the write timeout cuts it off."""
    rendered = []
    closed = threading.Event()

    def huge(fmt: ExpositionFormat, timeout_s: float | None) -> Iterator[bytes]:
        try:
            for _ in range(400):
                rendered.append(1)
                yield b"x" * (256 * 1024)
        finally:
            closed.set()

    with _server(huge, write_timeout_s=2.0).in_thread() as address, _connect(address) as sock:
        sock.sendall(GET)
        assert _wait_until(lambda: len(rendered) > 0)
        time.sleep(1.0)  # within the write timeout: rendering has stopped well short of the end
        assert len(rendered) < 200
        assert closed.wait(BOUND_S)  # cut off at the write timeout; the read is abandoned
        assert len(rendered) < 400


@pytest.mark.parametrize("version", [b"1.0", b"1.1"])
def test_a_body_streamed_before_its_size_is_known_is_framed_for_the_client(version: bytes) -> None:
    """HTTP/1.0 gets a body delimited by the close, never chunks; HTTP/1.1 gets chunks."""
    rest = threading.Event()

    def two_halves(fmt: ExpositionFormat, timeout_s: float | None) -> Iterator[bytes]:
        yield BIG_BODY[:1_000_000]
        rest.wait(BOUND_S)  # the answer has begun before its size is known
        yield BIG_BODY[1_000_000:]

    with _server(two_halves, write_timeout_s=60).in_thread() as address:
        host, port = address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=BOUND_S) as sock:
            sock.sendall(
                b"GET /metrics HTTP/" + version + b"\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            reply = bytearray()
            while b"\r\n\r\n" not in reply:
                reply += sock.recv(1 << 16)
            rest.set()
            while data := sock.recv(1 << 20):
                reply += data
    head, _, body = bytes(reply).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"content-length" not in head.lower()
    if version == b"1.0":
        assert b"transfer-encoding" not in head.lower() and body == BIG_BODY
    else:
        assert b"transfer-encoding: chunked" in head.lower() and _dechunk(body) == BIG_BODY


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += body[:size]
        body = body[size + 2 :]


def test_beyond_the_cap_the_longest_waiting_connection_goes() -> None:
    server = _server(_small, max_connections=8, read_timeout_s=60)
    with server.in_thread() as address:
        idle = [_connect(address) for _ in range(8)]
        try:
            assert _wait_until(lambda: server.open_connections == 8)
            assert _scrape(address) == (200, b"ipvs_up 1\n")  # evicts the oldest idle one
            assert _closed_by_server(idle[0])
            assert server.evicted_total >= 1
            assert server.open_connections <= 8
        finally:
            for sock in idle:
                sock.close()


def test_when_every_connection_is_being_answered_a_new_one_is_refused() -> None:
    server = _server(_big, max_connections=4, write_timeout_s=30)
    with server.in_thread() as address:
        stalled = [_connect(address) for _ in range(4)]
        try:
            for sock in stalled:
                sock.sendall(GET)
            assert _wait_until(lambda: server.answering_connections == 4)
            with _connect(address) as extra:
                assert _closed_by_server(extra)
            assert server.refused_total == 1
        finally:
            for sock in stalled:
                sock.close()


def test_2000_slowloris_sockets_cost_no_thread_each_and_scrapes_go_on() -> None:
    server = _server(_small, max_connections=256, read_timeout_s=60)
    with server.in_thread() as address:
        threads_before = threading.active_count()
        socks = []
        try:
            for _ in range(2000):
                socks.append(_connect(address))
                socks[-1].sendall(b"GET /metrics HTT")
            assert threading.active_count() <= threads_before + 2
            assert _scrape(address) == (200, b"ipvs_up 1\n")
            assert server.open_connections <= 256
        finally:
            for sock in socks:
                sock.close()


class _Gate:
    """A scrape that waits for `release` (its kernel read), then renders two chunks."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0
        self.closed_early = threading.Event()

    def __call__(self, fmt: ExpositionFormat, timeout_s: float | None) -> Iterator[bytes]:
        self.calls += 1
        finished = False
        try:
            self.release.wait(BOUND_S)
            yield b"ipvs_up 1\n"
            yield b"ipvs_info 1\n"
            finished = True
        finally:
            if not finished:
                self.closed_early.set()


def test_a_scrape_whose_client_left_is_abandoned_and_frees_its_slot() -> None:
    gate = _Gate()
    server = _server(gate, max_scrapes=1)
    with server.in_thread() as address:
        with _connect(address) as sock:
            sock.sendall(GET)
            assert _wait_until(lambda: gate.calls == 1)
        assert _wait_until(lambda: server.flights.running == 0)
        gate.release.set()
        assert gate.closed_early.wait(BOUND_S)
        assert _scrape(address) == (200, b"ipvs_up 1\nipvs_info 1\n")  # the one slot is free


def test_concurrent_scrapes_share_one_read() -> None:
    gate = _Gate()
    server = _server(gate)
    with server.in_thread() as address, ThreadPoolExecutor(10) as pool:
        futures = [pool.submit(_scrape, address) for _ in range(10)]
        assert _wait_until(lambda: server.answering_connections == 10)  # all wait on one read
        gate.release.set()
        results = [future.result(timeout=BOUND_S) for future in futures]
    assert results == [(200, b"ipvs_up 1\nipvs_info 1\n")] * 10
    assert gate.calls == 1


def test_health_answers_while_a_scrape_is_stuck_and_ready_waits_for_the_first_read() -> None:
    gate = _Gate()
    server = ExporterServer(("127.0.0.1", 0), gate, limits=FAST, warm_up=True)
    with server.in_thread() as address:
        assert _wait_until(lambda: gate.calls == 1)  # the warm-up read, stuck
        assert _status(f"http://{address}/healthz") == 200
        assert _status(f"http://{address}/-/healthy") == 200
        assert _status(f"http://{address}/-/ready") == 503
        gate.release.set()
        assert _wait_until(lambda: server.flights.ready)
        assert _status(f"http://{address}/-/ready") == 200
    assert gate.calls == 1  # health endpoints never scrape


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=BOUND_S) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize(("header", "timeout_s"), [("7.5", 7.5), ("nope", None), ("-1", None)])
def test_the_scrape_gets_the_timeout_prometheus_announces(
    header: str, timeout_s: float | None
) -> None:
    seen: list[float | None] = []

    def scrape(fmt: ExpositionFormat, timeout_s: float | None) -> list[bytes]:
        seen.append(timeout_s)
        return [b"ipvs_up 1\n"]

    with _server(scrape).in_thread() as address:
        request = urllib.request.Request(
            f"http://{address}/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": header}
        )
        with urllib.request.urlopen(request, timeout=BOUND_S) as resp:
            assert resp.read() == b"ipvs_up 1\n"
    assert seen == [timeout_s]
