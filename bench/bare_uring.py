"""The bare io_uring loop: bare_loop.py's closed loop of HTTP/1.1 `Connection: close`
requests, its I/O submitted to an io_uring (the `liburing` package) instead of made call by
call. Each connection is one linked chain of SQEs on one direct descriptor (a slot of the
ring's registered file table): socket, bind to (client address, port), connect, send, recv;
the next connection on the slot is chained behind the close of the last. Successes post no
completion (IOSQE_CQE_SKIP_SUCCESS) but the recv's: per connection one CQE, and the
io_uring_enter of a batch carries many connections' submissions and completions.

The client port is the loop's own (a rotation over 20000-59999 per address from a random
start; a port in use, a TIME_WAIT of an earlier run, fails the chain at bind, counted and
retried on the next port): no getsockname.

Without IORING_OP_BIND (6.11; the lab's Debian 6.1 has IORING_OP_SOCKET, 6.0, but not it), or
with `--bind sync`: socket and bind are plain calls, and connect, send and recv go through the
ring on the real fd.

    python -m bench.bare_uring PORT CONCURRENCY SECONDS WORKER MAX_CONNS [--bind sync]

Prints bare_loop.py's JSON line (plus `bind_retries`, `failed`). Bounded by SECONDS and
MAX_CONNS; traffic goes to 127.0.0.1 from 127.0.<WORKER + 1>.1-250.

Why the epoll engine does not use io_uring (measured on kernel 6.18, 2 shared CPUs, nginx): per
connection this loop makes 0.06 syscalls where bare_loop.py makes 9.1, the engine 11.4 and wrk
14.3, yet its client CPU is ~0.94x wrk's (~45 us): the kernel's TCP work for a loopback
connection (handshake, both sides' softirq, teardown) is ~40 us whatever makes the calls, and
the syscalls cost ~10 us. The engine spends ~40 us of Python per connection beyond bare_loop.py
(its flows and records), which no I/O strategy removes: through io_uring it would reach ~0.75x
wrk, not 1.0x. And this package's waits hold the GIL (the engine's snapshot thread would stall).
"""

from __future__ import annotations

import json
import random
import resource
import socket
import sys
import time

import liburing as lu

from bench.bare_loop import figures

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
ADDRESSES = 250
PORT_FIRST, PORT_SPAN = 20000, 40000
CLOSE, SOCKET, BIND, CONNECT, SEND, RECV = range(6)  # a chain's ops, in its user_data
LINK, HARD, SKIP = lu.IOSQE_IO_LINK, lu.IOSQE_IO_HARDLINK, lu.IOSQE_CQE_SKIP_SUCCESS
FIXED = lu.IOSQE_FIXED_FILE


def ring_binds() -> bool:
    """Whether this kernel's io_uring has IORING_OP_BIND (6.11)."""
    probe = lu.io_uring_get_probe()
    try:
        return bool(lu.io_uring_opcode_supported(probe, lu.io_uring_op.IORING_OP_BIND))
    finally:
        lu.io_uring_free_probe(probe)


def run(port: int, concurrency: int, seconds: float, worker: int, max_conns: int,
        sync_bind: bool, offset: int | None = None) -> dict:  # fmt: skip
    """`offset`: where the client (address, port) rotation starts (None: at random)."""
    ring, cqe = lu.Ring(), lu.Cqe()
    lu.io_uring_queue_init(4096, ring)
    if not sync_bind:
        lu.io_uring_register_files_sparse(ring, concurrency)
    target = lu.Sockaddr(lu.AF_INET, "127.0.0.1", port)
    buffers = [bytearray(4096) for _ in range(concurrency)]
    binds: list[object] = [None] * concurrency  # each chain's bind address, held until done
    socks: list[socket.socket | None] = [None] * concurrency  # sync_bind: each slot's socket
    started = attempts = ok = failed = retries = 0
    ts = lu.timespec(0.25)
    if offset is None:  # off the last run's TIME_WAITs
        offset = random.randrange(ADDRESSES * PORT_SPAN)

    def sqe(op: int, slot: int, flags: int) -> object:
        entry = lu.io_uring_get_sqe(ring)
        if entry is None:
            lu.io_uring_submit(ring)
            entry = lu.io_uring_get_sqe(ring)
        entry.user_data = slot * 8 + op
        entry.flags = flags
        return entry

    def start(slot: int, close_first: bool) -> None:
        """The slot's next connection (`close_first`: the slot holds the last one's socket)."""
        nonlocal started, attempts, retries
        n = attempts + offset
        started, attempts = started + 1, attempts + 1
        host = f"127.0.{worker + 1}.{1 + n % ADDRESSES}"
        client_port = PORT_FIRST + (n // ADDRESSES) % PORT_SPAN
        if sync_bind:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            while True:
                try:
                    sock.bind((host, client_port))
                    break
                except OSError:  # in use (a TIME_WAIT of ours): the next port
                    client_port = PORT_FIRST + (client_port + 1 - PORT_FIRST) % PORT_SPAN
                    retries += 1
            socks[slot], fd, fixed = sock, sock.fileno(), 0
        else:
            fd, fixed = slot, FIXED
            if close_first:
                lu.io_uring_prep_close_direct(sqe(CLOSE, slot, HARD | SKIP), slot)
            lu.io_uring_prep_socket_direct(
                sqe(SOCKET, slot, LINK | SKIP), lu.AF_INET, lu.SOCK_STREAM, 0, slot
            )
            binds[slot] = addr = lu.Sockaddr(lu.AF_INET, host, client_port)
            lu.io_uring_prep_bind(sqe(BIND, slot, FIXED | LINK | SKIP), slot, addr)
        lu.io_uring_prep_connect(sqe(CONNECT, slot, fixed | LINK | SKIP), fd, target)
        lu.io_uring_prep_send(sqe(SEND, slot, fixed | LINK | SKIP), fd, REQUEST)
        lu.io_uring_prep_recv(sqe(RECV, slot, fixed), fd, buffers[slot])

    usage0, unix0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    t0 = time.monotonic()
    end = t0 + seconds
    for slot in range(concurrency):
        start(slot, False)
    in_flight = concurrency
    while in_flight and time.monotonic() < end + 1.0:  # (a stuck connection: left behind)
        try:
            lu.io_uring_submit_and_wait_timeout(ring, cqe, 1, ts)
        except OSError:  # ETIME: nothing completed within ts
            continue
        seen = 0
        for _ in lu.CqeIter(ring, cqe):
            seen += 1
            entry = cqe[0]
            slot, op = entry.user_data >> 3, entry.user_data & 7
            try:  # (the package raises OSError for a negative res)
                res = entry.res or 0
            except OSError:
                res = -1
            if op == CLOSE:  # (a failed close: the slot was empty, nothing to undo)
                continue
            # The chain's last CQE: the recv's, or its first failed op's (a failed op with
            # IOSQE_CQE_SKIP_SUCCESS posts and drops the rest of its link's CQEs)
            if op == BIND:  # the port is in use: the next one
                retries += 1
                started -= 1
            elif op == RECV and res > 0 and b"\r\n\r\n" in buffers[slot][:res]:
                ok += 1
            else:
                failed += 1
            if sync_bind:
                socks[slot].close()  # type: ignore[union-attr]
            if time.monotonic() < end and started < max_conns:
                start(slot, op != SOCKET)
            else:
                in_flight -= 1
                if not sync_bind and op != SOCKET:
                    lu.io_uring_prep_close_direct(sqe(CLOSE, slot, SKIP), slot)
        lu.io_uring_cq_advance(ring, seen)
    spent = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    lu.io_uring_submit(ring)
    lu.io_uring_queue_exit(ring)
    return figures(ok, spent, usage0, usage, unix0, failed=failed, bind_retries=retries)


if __name__ == "__main__":
    port, concurrency, seconds, worker, max_conns = sys.argv[1:6]
    figures = run(int(port), int(concurrency), float(seconds), int(worker), int(max_conns),
                  sys.argv[6:8] == ["--bind", "sync"] or not ring_binds())  # fmt: skip
    print(json.dumps(figures))
