"""The epoll engine's records pinned: fixed loopback runs of every kind it drives, every
record field but the timings and the kernel's port compared with a golden file
(`LVSPROBE_UPDATE_GOLDEN=1` rewrites it; review the diff). Made on the engine before its
per-connection cost was cut, so a faster loop that records anything differently fails here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.replay.fastloop import FastRunner
from lvsprobe.replay.plan import make_plan
from lvsprobe.replay.runner import RunOptions
from lvsprobe.replay.scenario import parse_scenario

GOLDEN = Path(__file__).parent / "data" / "fastloop-pinned.json"
# what a rerun may change: the clock's readings, the ports the kernel picks
UNPINNED = frozenset({"client_port", "server_port", "scheduled_s", "start_s", "start_unix",
                      "connect_s", "ttfb_s", "end_s", "total_s", "connect_corrected_s",
                      "ttfb_corrected_s", "total_corrected_s"})  # fmt: skip

# A scripted HTTP server's reply by request path: each read once the request head is in,
# then the connection closes (replies that end only at EOF need that)
SCRIPTED = {
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: rs4\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
    "/to-eof": b"HTTP/1.1 200 OK\r\nServer: rs5\r\n\r\nno length, ends at EOF\n",
    "/no-content": b"HTTP/1.1 204 No Content\r\ncontent-length: 99\r\n\r\n",
    "/two-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n Content-Length : 4 \r\n\r\nabcd",
    "/bad-status": b"HTTP/1.1 2x0 Odd\r\n\r\n",
    "/short": b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\ntoo short",
    "/cut-head": b"HTTP/1.1 200 OK\r\nX-Backend: rs6",
    "/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\nzz\r\n",
    "/error": b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
}
# Replies that once raised out of the flow (int() refusing what str.isdigit() took) and
# ended the whole run; not in the golden runs (drawn by path, they would change the draws)
HOSTILE = {
    "/superscript-status": b"HTTP/1.1 \xb200 OK\r\nContent-Length: 0\r\n\r\n",
    "/superscript-length": b"HTTP/1.1 200 OK\r\nContent-Length: \xb3\r\nX-Backend: rs7\r\n\r\nok",
}


@pytest.fixture(scope="module")
def scripted() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head and (data := conn.recv(4096)):
                    head += data
                path = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else ""
                conn.sendall(SCRIPTED.get(path) or HOSTILE.get(path, b""))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def _records(port: int, flows: str, max_flows: int, arrival: str, timeout: str = "5s") -> list:
    text = (
        f"name: pinned\nseed: 11\ntarget: {{address: 127.0.0.1, port: {port}}}\n"
        f"clients: {{cidr: 127.0.0.2/24, count: 3}}\nflows:\n{flows}\narrival: {arrival}\n"
        f"bounds: {{max_flows: {max_flows}, max_duration: 30s, flow_timeout: {timeout}}}\n"
    )
    scenario = parse_scenario(text, "pinned.yaml")
    plan = make_plan(scenario)
    if "/chunked" in flows:  # the seed draws every scripted reply
        assert {p.mix.path for p in plan} == set(SCRIPTED)
    result = FastRunner(scenario, plan, RunOptions()).run()
    assert len(result.records) == max_flows
    return [
        {k: v for k, v in dataclasses.asdict(r).items() if k not in UNPINNED}
        for r in result.records
    ]


def _runs(servers: Any, scripted: int, silent: int) -> dict[str, list]:
    closed = "{model: closed, concurrency: 2}"
    paths = "\n".join(f"  - {{kind: http, path: {p}}}" for p in SCRIPTED)
    return {
        "http-close": _records(servers.http, "  - {kind: http, path: /x}", 4, closed),
        "http-keepalive-post": _records(
            servers.http,
            "  - {kind: http, keepalive: true, requests: 3, payload_bytes: 300, think: 5ms}",
            2,
            closed,
        ),
        "http-404": _records(servers.http, "  - {kind: http, path: /missing}", 1, closed),
        "http-pool": _records(
            servers.http, "  - {kind: http}", 6, "{model: pool, connections: 2, rate: 200}"
        ),
        "http-scripted": _records(scripted, paths, 4 * len(SCRIPTED), closed),
        "tcp-echo": _records(servers.tcp, "  - {kind: tcp, payload_bytes: 1000}", 2, closed),
        "udp": _records(servers.udp, "  - {kind: udp, requests: 3, payload_bytes: 50}", 3, closed),
        "refused": _records(servers.http, "  - {kind: tcp, port: 1}", 2, closed),
        "timeout": _records(silent, "  - {kind: http}", 2, closed, timeout="300ms"),
    }


def test_the_epoll_engines_records_are_pinned(servers: Any, scripted: int) -> None:
    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:  # accepts, never answers
        runs = _runs(servers, scripted, silent.getsockname()[1])
    text = json.dumps(runs, indent=1, sort_keys=True) + "\n"
    if os.environ.get("LVSPROBE_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert json.loads(text) == json.loads(GOLDEN.read_text())


def test_a_reply_int_refuses_ends_its_flow_not_the_run(scripted: int) -> None:
    paths = "\n".join(f"  - {{kind: http, path: {p}}}" for p in HOSTILE)
    runs = _records(scripted, paths, 6, "{model: closed, concurrency: 2}")
    assert {(r["outcome"], r["backend"]) for r in runs} == {
        ("error:http-bad-status-line", None),
        ("ok", "rs7"),  # no usable length: read to EOF
    }
