"""The bare CPython loop: the ceiling for any Python engine. A closed loop of HTTP/1.1
`Connection: close` requests doing per connection only what the epoll engine must do too
(socket, IP_BIND_ADDRESS_NO_PORT and bind to one of 250 client addresses, non-blocking
connect, epoll register and modify, one send, recv until the end of the head, close) and
nothing else: no record, no timer, no response check beyond the blank line.

    python -m bench.bare_loop PORT CONCURRENCY SECONDS WORKER MAX_CONNS

Prints one JSON line: ok connections, the loop's seconds, its user and system CPU seconds
and the wall-clock time (time.time()) it started and ended. Bounded by SECONDS and
MAX_CONNS; traffic goes to 127.0.0.1 from 127.0.<WORKER + 1>.1-250.
"""

from __future__ import annotations

import json
import resource
import select
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def run(port: int, concurrency: int, seconds: float, worker: int, max_conns: int) -> dict:
    ep = select.epoll()
    open_socks: dict[int, list] = {}  # fd -> [socket, request sent]
    target = ("127.0.0.1", port)
    started = ok = 0

    def start() -> None:
        nonlocal started
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((f"127.0.{worker + 1}.{1 + started % 250}", 0))
        started += 1
        sock.connect_ex(target)
        ep.register(sock.fileno(), select.EPOLLOUT)
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
                ep.modify(fd, select.EPOLLIN)
                continue
            data = sock.recv(65536)
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
    return {
        "ok": ok,
        "seconds": spent,
        "user_s": usage.ru_utime - usage0.ru_utime,
        "sys_s": usage.ru_stime - usage0.ru_stime,
        "start_unix": unix0,
        "end_unix": unix0 + spent,
    }


if __name__ == "__main__":
    port, concurrency, seconds, worker, max_conns = sys.argv[1:6]
    figures = run(int(port), int(concurrency), float(seconds), int(worker), int(max_conns))
    print(json.dumps(figures))
