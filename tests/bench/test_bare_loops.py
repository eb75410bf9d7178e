"""The bench's bare reference loops (bench/bare_loop.py, bench/bare_uring.py) still complete
their connections: a few bounded runs against a loopback server, every variant, counted, not
timed. A loop that quietly stopped working would make the native bench's reference rows lie.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from bench import bare_loop

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
CONNS = 60
SERVE = f"""
import socket
listener = socket.create_server(("127.0.0.1", 0), backlog=128)
print(listener.getsockname()[1], flush=True)
while True:
    conn, _ = listener.accept()
    with conn:
        head = b""
        while b"\\r\\n\\r\\n" not in head and (data := conn.recv(4096)):
            head += data
        conn.sendall({REPLY!r})
"""


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    """An HTTP server on 127.0.0.1, in a process of its own: liburing's waits hold the GIL,
    so a server thread here would be starved. Each connection gets REPLY once its request
    head is in."""
    proc = subprocess.Popen([sys.executable, "-c", SERVE], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.parametrize("lean", [False, True], ids=["as-the-engine", "lean"])
def test_the_bare_epoll_loop_completes_its_connections(server: int, lean: bool) -> None:
    figures = bare_loop.run(server, 4, 30.0, 6, CONNS, lean)
    assert figures["ok"] == CONNS


def _bare_uring(sync_bind: bool) -> ModuleType:
    pytest.importorskip("liburing", reason="liburing missing: make test installs it")
    from bench import bare_uring

    try:
        binds = bare_uring.ring_binds()
    except (OSError, RuntimeError) as exc:  # kernel.io_uring_disabled, a seccomp filter
        pytest.skip(f"io_uring unavailable on this kernel: {exc}")
    if not sync_bind and not binds:
        pytest.skip("this kernel's io_uring has no IORING_OP_BIND (6.11)")
    return bare_uring


@pytest.mark.parametrize("sync_bind", [False, True], ids=["ring-bind", "sync-bind"])
def test_the_bare_io_uring_loop_completes_its_connections(server: int, sync_bind: bool) -> None:
    figures = _bare_uring(sync_bind).run(server, 4, 30.0, 6, CONNS, sync_bind)
    assert (figures["ok"], figures["failed"]) == (CONNS, 0)


@pytest.mark.parametrize("sync_bind", [False, True], ids=["ring-bind", "sync-bind"])
def test_a_bare_io_uring_connection_whose_port_is_taken_takes_another(
    server: int, sync_bind: bool
) -> None:
    """A client port already bound (in real life a TIME_WAIT of an earlier run) fails the
    bind: counted as a retry, and the connection is made from another port."""
    bare_uring = _bare_uring(sync_bind)
    with contextlib.ExitStack() as stack:
        for host in ("127.0.7.1", "127.0.7.2"):  # worker 6's first two (address, port)s
            stack.enter_context(socket.create_server((host, bare_uring.PORT_FIRST)))
        figures = bare_uring.run(server, 1, 30.0, 6, 10, sync_bind, offset=0)
    assert (figures["ok"], figures["failed"]) == (10, 0)
    assert figures["bind_retries"] >= 2  # (more: TIME_WAITs of a run of this test just before)
