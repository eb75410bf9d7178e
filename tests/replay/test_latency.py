"""Latency: HDR histograms with wrk2's definitions, corrected and uncorrected, and the proof
on a real stall (a loopback server that freezes once) that only the corrected figure shows it."""

from __future__ import annotations

import socketserver
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.replay.fastloop import FastRunner
from lvsprobe.replay.flowlog import FlowRecord, summarize
from lvsprobe.replay.latency import (
    HIGHEST_US,
    histogram_stats,
    new_histogram,
    phase_stats,
    record_seconds,
)
from lvsprobe.replay.plan import make_plan
from lvsprobe.replay.runner import RunOptions
from lvsprobe.replay.scenario import parse_scenario


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=5000, allow_nan=False), max_size=300))
def test_bulk_recording_fills_the_buckets_hdr_itself_would(seconds: list[float]) -> None:
    bulk, one_by_one = new_histogram(), new_histogram()
    record_seconds(bulk, np.array(seconds, dtype=np.float64))
    for value in seconds:
        one_by_one.record_value(min(round(value * 1e6), HIGHEST_US))
    assert list(bulk.counts[: bulk.counts_len]) == list(one_by_one.counts[: one_by_one.counts_len])
    assert bulk.get_total_count() == len(seconds)
    if seconds:  # the mean walks only the filled buckets; HdrHistogram's own walks them all
        assert histogram_stats(bulk)["mean"] == round(one_by_one.get_mean_value() / 1e6, 6)


def _record(
    flow_id: int, scheduled: float, start: float, end: float, ok: bool = True
) -> FlowRecord:
    rec = FlowRecord(flow_id, "http", "127.0.0.2", 1, "127.0.0.1", 80, "tcp", scheduled, start, 0.0)
    rec.connect_s, rec.ttfb_s, rec.end_s = 0.001, 0.002, end
    rec.outcome = "ok" if ok else "reset"
    rec.settle()
    return rec


def test_settle_times_each_phase_from_the_scheduled_and_the_actual_start() -> None:
    rec = _record(0, scheduled=1.0, start=1.5, end=1.6)
    assert rec.total_s == pytest.approx(0.1)
    assert rec.total_corrected_s == pytest.approx(0.6)
    assert rec.connect_corrected_s == pytest.approx(0.501)
    assert rec.ttfb_corrected_s == pytest.approx(0.502)


def test_percentiles_follow_hdr_and_total_counts_only_ok_flows() -> None:
    rows = [_record(i, i * 0.01, i * 0.01, i * 0.01 + 0.010) for i in range(99)]
    rows.append(_record(99, 0.99, 2.99, 3.0))  # waited 2 s to start: only corrected sees it
    rows.append(_record(100, 1.0, 1.0, 9.0, ok=False))  # failed: no total at all
    stats = phase_stats(rows)
    total = stats["total"]
    assert total["uncorrected"]["count"] == total["corrected"]["count"] == 100
    assert total["uncorrected"]["p99.9"] == pytest.approx(0.010, abs=1e-4)
    assert total["corrected"]["max"] == pytest.approx(2.01, rel=1e-3)
    assert total["uncorrected"]["p50"] == total["corrected"]["p50"]
    assert stats["connect"]["uncorrected"]["count"] == 101  # any flow that connected
    summary = summarize(rows)
    assert summary["latency"]["total"] == total
    assert set(summary["latency"]["by_kind"]) == {"http"}
    assert set(summary["latency"]["total"]["corrected"]) == {
        "count", "mean", "p50", "p90", "p99", "p99.9", "max"
    }  # fmt: skip


class _Freezing(socketserver.StreamRequestHandler):
    """HTTP/1.1 keep-alive; the server's `freeze_at`-th request holds every reply for
    `freeze_s` (a GC pause, a stuck disk): the server stalls once."""

    server: _FreezingServer

    def handle(self) -> None:
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline(65536)
                if not line:
                    return
                head += line
            self.server.answer(self.wfile)


class _FreezingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, freeze_at: int, freeze_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _Freezing)
        self.freeze_at, self.freeze_s = freeze_at, freeze_s
        self.requests = 0
        self.lock = threading.Lock()  # every reply passes it; the freeze holds it

    def answer(self, wfile: socketserver._SocketWriter) -> None:  # type: ignore[name-defined]
        with self.lock:
            self.requests += 1
            if self.requests == self.freeze_at:
                time.sleep(self.freeze_s)
        wfile.write(b"HTTP/1.1 200 OK\r\nX-Backend: rs1\r\nContent-Length: 3\r\n\r\nok\n")


@pytest.fixture
def freezing() -> Iterator[_FreezingServer]:
    server = _FreezingServer(freeze_at=800, freeze_s=2.0)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _pool_scenario(port: int, rate: int, connections: int, flows: int) -> str:
    return f"""
name: pool
target: {{address: 127.0.0.1, port: {port}}}
clients: {{cidr: 127.0.0.2/24, count: 4}}
flows: [{{kind: http, path: /}}]
arrival: {{model: pool, connections: {connections}, rate: {rate}}}
bounds: {{max_flows: {flows}, max_duration: {flows / rate + 15:g}s, flow_timeout: 10s}}
"""


def test_pool_model_sends_requests_over_a_fixed_set_of_kept_alive_connections(
    freezing: _FreezingServer,
) -> None:
    freezing.freeze_at = 0  # no stall here
    scenario = parse_scenario(_pool_scenario(freezing.server_address[1], 100, 3, 60), "pool.yaml")
    result = FastRunner(scenario, make_plan(scenario), RunOptions()).run()
    assert [r.outcome for r in result.records] == ["ok"] * 60
    connections = {(r.client_address, r.client_port) for r in result.records}
    assert len(connections) <= 3
    assert sum(r.connect_s is not None for r in result.records) == len(connections)
    assert all(r.total_corrected_s >= r.total_s for r in result.records)  # type: ignore[operator]
    assert freezing.requests == 60


@pytest.mark.slow
def test_a_stall_shows_in_corrected_latency_and_hides_from_uncorrected(
    freezing: _FreezingServer,
) -> None:
    """20 s at 100 req/s over 10 keep-alive connections; the server freezes 2 s once.

    The 10 requests in flight wait the 2 s; the ~200 meant to go out during the stall queue
    behind the pool and go out late, quickly answered. Timed from their scheduled start (wrk2)
    they waited up to 2 s: ~5% of all requests above 1 s. Timed from when they went out (wrk)
    only the 10 caught in flight (0.5%) are slow, under the 99th percentile.
    """
    scenario = parse_scenario(_pool_scenario(freezing.server_address[1], 100, 10, 2000), "s.yaml")
    result = FastRunner(scenario, make_plan(scenario), RunOptions()).run()
    assert sum(r.outcome == "ok" for r in result.records) == 2000
    assert freezing.requests == 2000  # the freeze happened (request 800)
    total = summarize(result.records)["latency"]["total"]
    assert total["corrected"]["p99"] >= 1.0, total
    assert total["uncorrected"]["p99"] < 0.5, total
    assert total["uncorrected"]["max"] >= 1.5, total  # the requests caught in the freeze
    print(f"stall: corrected {total['corrected']}, uncorrected {total['uncorrected']}")
