"""The bare CPython loop: the ceiling for any Python engine. A closed loop of HTTP/1.1
`Connection: close` requests doing per connection only what the epoll engine must do too
(socket, IP_BIND_ADDRESS_NO_PORT and bind to one of 250 client addresses, non-blocking
connect, epoll register and modify, one send, recv until the end of the head, close) and
nothing else: no record, no timer, no response check beyond the blank line.

    python -m bench.bare_loop PORT CONCURRENCY SECONDS WORKER MAX_CONNS [--lean]

`--lean`: the fewest calls an epoll loop can make: the client port chosen by the loop (a
rotation, as bare_uring.py's: no IP_BIND_ADDRESS_NO_PORT, and the port known without
getsockname) and the socket registered once for EPOLLIN|EPOLLOUT edge-triggered (no modify):
socket, bind, connect, epoll_ctl, send, recv, close.

Prints one JSON line: ok connections, the loop's seconds, its user and system CPU seconds
and the wall-clock time (time.time()) it started and ended. Bounded by SECONDS and
MAX_CONNS; traffic goes to 127.0.0.1 from 127.0.<WORKER + 1>.1-250.
"""

from __future__ import annotations

import json
import random
import resource
import select
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h
PORT_FIRST, PORT_SPAN = 20000, 40000  # (lean) the loop's own client ports
LEAN_MASK = select.EPOLLIN | select.EPOLLOUT | select.EPOLLET
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def figures(
    ok: int,
    spent_s: float,
    usage0: resource.struct_rusage,
    usage: resource.struct_rusage,
    unix0: float,
    **extra: int,
) -> dict:
    """The JSON line a bare loop prints (bare_uring.py's too)."""
    return {
        "ok": ok,
        "seconds": spent_s,
        "user_s": usage.ru_utime - usage0.ru_utime,
        "sys_s": usage.ru_stime - usage0.ru_stime,
        "start_unix": unix0,
        "end_unix": unix0 + spent_s,
        **extra,
    }


def run(port: int, concurrency: int, seconds: float, worker: int, max_conns: int,
        lean: bool = False) -> dict:  # fmt: skip
    ep = select.epoll()
    offset = random.randrange(250 * PORT_SPAN)  # (lean) off the last run's TIME_WAITs
    retries = 0
    open_socks: dict[int, list] = {}  # fd -> [socket, request sent]
    target = ("127.0.0.1", port)
    started = ok = 0

    def start() -> None:
        nonlocal started, retries
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        host = f"127.0.{worker + 1}.{1 + started % 250}"
        if lean:
            n = started + offset
            while True:
                try:
                    sock.bind((host, PORT_FIRST + (n // 250) % PORT_SPAN))
                    break
                except OSError:  # in use (a TIME_WAIT of ours): the next port
                    n += 250
                    retries += 1
        else:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((host, 0))
        started += 1
        sock.connect_ex(target)
        ep.register(sock.fileno(), LEAN_MASK if lean else select.EPOLLOUT)
        open_socks[sock.fileno()] = [sock, False]

    usage0, unix0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    t0 = time.monotonic()
    end = t0 + seconds
    for _ in range(concurrency):
        start()
    while time.monotonic() < end and ok < max_conns:
        for fd, _mask in ep.poll(0.25):
            entry = open_socks[fd]
            sock = entry[0]
            if not entry[1]:
                sock.send(REQUEST)
                entry[1] = True
                if not lean:
                    ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:  # (lean) an edge for the connect only
                continue
            if b"\r\n\r\n" in data or not data:
                del open_socks[fd]
                sock.close()
                ok += 1
                if started < max_conns:
                    start()
    spent = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    for sock, _sent in open_socks.values():
        sock.close()
    return figures(ok, spent, usage0, usage, unix0, bind_retries=retries)


if __name__ == "__main__":
    port, concurrency, seconds, worker, max_conns = sys.argv[1:6]
    figures = run(int(port), int(concurrency), float(seconds), int(worker), int(max_conns),
                  "--lean" in sys.argv[6:])  # fmt: skip
    print(json.dumps(figures))
