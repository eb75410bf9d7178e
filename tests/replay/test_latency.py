"""Latency: HDR histograms with wrk2's definitions, corrected and uncorrected, and the proof
on a real stall (a loopback server that freezes once) that only the corrected figure shows it."""

from __future__ import annotations

import math
import socketserver
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.replay.fastloop import FastRunner
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.flowrecord import backend_of
from lvsprobe.replay.flowsummary import summarize
from lvsprobe.replay.latency import (
    HIGHEST_US,
    PERCENTILES,
    PHASES,
    SLOTS,
    STATS,
    Buckets,
    bucket_lowest_us,
    bucket_slot,
    latency_summary,
    new_histogram,
    phase_stats,
    record_seconds,
    slot_lowest_us,
)
from lvsprobe.replay.plan import make_plan
from lvsprobe.replay.runner import RunOptions
from lvsprobe.replay.scenario import parse_scenario

# bucket edges (2**k µs and either side), sub-µs, zero, the 1 h clip and past it
EDGES_S = sorted(
    {(2**k + d) / 1e6 for k in range(10, 32) for d in (-1, 0, 1)}
    | {0.0, 4e-7, 5e-7, 6e-7, 1.5e-6, 2.5e-6, HIGHEST_US / 1e6, HIGHEST_US / 1e6 + 1, 1e6}
)
LATENCIES_S = st.lists(
    st.one_of(
        st.floats(min_value=0, max_value=5000, allow_nan=False),
        st.sampled_from(EDGES_S),
        st.just(float("nan")),
    ),
    max_size=300,
)


def _one_by_one(seconds: list[float]) -> HdrHistogram:
    """The reference: HdrHistogram fed each value (rounded to a µs) by its own record_value."""
    hist = new_histogram()
    for value in seconds:
        if not math.isnan(value):
            hist.record_value(min(round(value * 1e6), HIGHEST_US))
    return hist


@settings(max_examples=200, deadline=None)
@given(LATENCIES_S)
def test_bulk_recording_fills_the_buckets_hdr_itself_would(seconds: list[float]) -> None:
    bulk, one_by_one = new_histogram(), _one_by_one(seconds)
    record_seconds(bulk, np.array(seconds, dtype=np.float64))
    assert list(bulk.counts[: bulk.counts_len]) == list(one_by_one.counts[: one_by_one.counts_len])
    assert bulk.get_total_count() == sum(not math.isnan(s) for s in seconds)


@settings(max_examples=60, deadline=None)
@given(LATENCIES_S)
def test_stats_read_off_the_buckets_are_hdrs_own(seconds: list[float]) -> None:
    """count, mean, percentiles and max from the buckets == HdrHistogram's queries of a
    histogram fed value by value."""
    hist = _one_by_one(seconds)
    stats = Buckets.of(bucket_lowest_us(np.array(seconds, dtype=np.float64))).stats()
    if not hist.get_total_count():
        assert stats == {"count": 0, **dict.fromkeys(STATS[1:])}
        return
    at = hist.get_percentile_to_value_dict(list(PERCENTILES))
    assert stats == {
        "count": hist.get_total_count(),
        "mean": round(hist.get_mean_value() / 1e6, 6),
        **{f"p{p:g}": round(at[p] / 1e6, 6) for p in PERCENTILES},
        "max": round(hist.get_max_value() / 1e6, 6),
    }


def _flows(draw: st.DrawFn) -> list[FlowRecord]:
    rows = []
    for flow_id in range(draw(st.integers(0, 40))):
        scheduled = draw(st.floats(0, 10))
        start = scheduled + draw(st.sampled_from([0.0, 0.5, 2.0]))
        rec = FlowRecord(flow_id, draw(st.sampled_from(["http", "tcp"])), "127.0.0.2", 1,
                         "127.0.0.1", 80, "tcp", scheduled, start, 0.0)  # fmt: skip
        rec.connect_s = draw(st.one_of(st.none(), st.sampled_from(EDGES_S[:12])))
        rec.ttfb_s = draw(st.one_of(st.none(), st.floats(0, 3)))
        rec.end_s = start + draw(st.floats(0, 5))
        rec.outcome = draw(st.sampled_from(["ok", "ok", "reset", "error:http-503"]))
        rec.backend = draw(st.sampled_from([None, "rs1", "rs2"]))
        rec.conn_backend = draw(st.sampled_from([None, "rs3"]))
        rec.stage = draw(st.sampled_from([None, 0, 1, 10]))
        rec.settle()
        rows.append(rec)
    return rows


@settings(max_examples=50, deadline=None)
@given(st.composite(_flows)())
def test_each_group_summarised_from_the_columns_as_from_its_own_flows(
    rows: list[FlowRecord],
) -> None:
    """by_kind/by_backend/by_stage select rows of columns read once; the same as summarising
    each group's records on their own."""
    summary = latency_summary(rows)
    assert {k: summary[k] for k in PHASES} == phase_stats(rows)
    for name, key in (("by_kind", lambda r: r.kind), ("by_backend", backend_of),
                      ("by_stage", lambda r: r.stage)):  # fmt: skip
        labels = sorted({str(key(r)) for r in rows if key(r) is not None})
        assert list(summary[name]) == labels
        for label in labels:
            group = [r for r in rows if key(r) is not None and str(key(r)) == label]
            assert summary[name][label] == phase_stats(group)


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


@settings(max_examples=100, deadline=None)
@given(LATENCIES_S)
def test_a_flows_slot_is_hdrs_own_counts_index(seconds: list[float]) -> None:
    """The summary counts each flow into the slot of its bucket (no sort): the slots' counts
    are HdrHistogram's own counts array, and a slot's lowest value is its bucket's."""
    values = [min(round(s * 1e6), HIGHEST_US) for s in seconds if not math.isnan(s)]
    slots = bucket_slot(np.array(values, dtype=np.int64))
    hist = _one_by_one(seconds)
    counts = np.bincount(slots, minlength=hist.counts_len)
    assert counts.tolist() == list(hist.counts[: hist.counts_len])
    highest = new_histogram()
    highest.record_value(HIGHEST_US)  # the last slot a flow can fill
    assert list(highest.counts[: highest.counts_len]).index(1) == SLOTS - 1
    lowest = bucket_lowest_us(np.array(seconds, dtype=np.float64))
    assert slot_lowest_us(slots).tolist() == lowest.tolist()
