"""Live figures of a run: the progress line's, and the Prometheus text of --metrics-listen."""

from __future__ import annotations

import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.live import MAX_LABEL_VALUES, LiveStats, serve_metrics
from lvsprobe.replay.metricspecs import LATENCY_BUCKETS_S, SPECS, catalog
from lvsprobe.replay.profile import Stage


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _finished(flow_id: int, backend: str, outcome: str, total_s: float) -> FlowRecord:
    rec = FlowRecord(flow_id, "http", "127.0.0.2", 1, "127.0.0.1", 80, "tcp", 0.0, 0.0, 0.0)
    rec.connect_s, rec.end_s, rec.outcome, rec.backend = 0.001, total_s, outcome, backend
    rec.settle()
    return rec


def _live(clock: FakeClock) -> LiveStats:
    stages = (Stage(10.0, 0.0, 100.0), Stage(10.0, concurrency=3))
    return LiveStats('ramp "a"', 500, stages, clock=clock)


def test_view_gives_recent_rate_errors_and_p99() -> None:
    clock = FakeClock()
    live = _live(clock)
    for i in range(100):
        live.started("http", i * 0.05)  # 20/s over 5 s
    clock.now += 5.0
    for i in range(100):
        live.finished(_finished(i, "rs1", "ok" if i % 10 else "reset", 0.002 if i < 95 else 0.9))
    view = live.view()
    assert view.rate_per_s == 100 / 5.0 - 0.2  # the start at 0 s has left the 5 s window
    assert view.errors == 10
    assert view.p99_s is not None and 0.89 < view.p99_s < 0.91


def test_metrics_text_parses_and_counts_by_kind_outcome_and_backend() -> None:
    clock = FakeClock()
    live = _live(clock)
    for i in range(4):
        live.started("http", 0.1 * i)
    clock.now += 5.0
    for i, (backend, outcome) in enumerate([("rs1", "ok"), ("rs1", "ok"), ("rs2", "timeout")]):
        live.finished(_finished(i, backend, outcome, 0.003))
    families = {f.name: f for f in text_string_to_metric_families(live.render().decode())}
    assert {spec.name.removesuffix("_total") for spec in SPECS} == set(families)
    value = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    finished = "lvsprobe_replay_flows_finished"
    assert (
        value[(finished + "_total", (("backend", "rs1"), ("kind", "http"), ("outcome", "ok")))] == 2
    )
    failed = [k for k in value if k[0] == "lvsprobe_replay_flows_failed_total"]
    assert [dict(k[1])["outcome"] for k in failed] == ["timeout"]
    assert value[("lvsprobe_replay_flows_in_flight", ())] == 1
    assert value[("lvsprobe_replay_planned_rate_per_second", ())] == 50.0  # halfway up the ramp
    assert value[("lvsprobe_replay_stage", ())] == 0
    assert value[("lvsprobe_replay_run_info", (("scenario", 'ramp "a"'),))] == 1
    total_ok = families["lvsprobe_replay_latency_seconds"]
    counts = [s for s in total_ok.samples if s.name.endswith("_count")]
    assert {dict(s.labels)["phase"] for s in counts} == {"connect", "ttfb", "total"} - {"ttfb"}
    buckets = [s for s in total_ok.samples if s.name.endswith("_bucket")]
    assert len(buckets) == len(counts) * (len(LATENCY_BUCKETS_S) + 1)
    clock.now += 6.0  # into the closed stage: no planned rate
    names = {f.name for f in text_string_to_metric_families(live.render().decode())}
    samples = [s for f in text_string_to_metric_families(live.render().decode()) for s in f.samples]
    assert "lvsprobe_replay_planned_rate_per_second" in names
    assert not [s for s in samples if s.name == "lvsprobe_replay_planned_rate_per_second"]


def test_backend_labels_are_capped() -> None:
    live = _live(FakeClock())
    for i in range(MAX_LABEL_VALUES + 10):
        live.finished(_finished(i, f"rs{i}", "ok", 0.001))
    text = live.render().decode()
    assert 'backend="other"' in text
    assert f'backend="rs{MAX_LABEL_VALUES + 5}"' not in text


def test_catalog_lists_every_series_a_scrape_holds() -> None:
    names = catalog()
    assert names["lvsprobe_replay_latency_seconds_bucket"][-1] == "le"
    assert "lvsprobe_replay_flows_started_total" in names


def test_serve_metrics_answers_a_scrape_and_refuses_a_busy_port() -> None:
    live = _live(FakeClock())
    with serve_metrics(("127.0.0.1", 0), live) as (host, port):
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
            assert b"lvsprobe_replay_planned_flows 500" in reply.read()
        try:
            with serve_metrics((host, port), live):
                raise AssertionError("bound a port already in use")
        except Exception as exc:  # LvsprobeError naming the flag
            assert "--metrics-listen" in str(exc)


def test_openmetrics_exposition_parses() -> None:
    """Prometheus asks for OpenMetrics first: the live text must parse as such too."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from lvsprobe.exporter.render import ExpositionFormat

    clock = FakeClock()
    live = _live(clock)
    live.started("http", 0.1)
    clock.now += 1.0
    live.finished(_finished(0, "rs1", "ok", 0.003))
    text = live.render(ExpositionFormat.OPENMETRICS_1_0_0).decode()
    assert text.endswith("# EOF\n")
    names = {family.name for family in text_string_to_metric_families(text)}
    assert "lvsprobe_replay_flows_started" in names


def test_serve_metrics_lingers_until_a_scrape_reads_the_final_counts() -> None:
    """The endpoint outlives the run until one scrape after its end (bounded by the linger):
    Prometheus gets the last counts, and the wait ends on that scrape, not on the bound."""
    live = _live(FakeClock())
    bound: list[tuple[str, int]] = []
    run_ended = threading.Event()

    def run() -> None:
        with serve_metrics(("127.0.0.1", 0), live, linger_s=60.0) as address:
            bound.append(address)
            live.started("http", 0.1)
        run_ended.set()

    runner = threading.Thread(target=run)
    runner.start()
    while not bound and runner.is_alive():
        time.sleep(0.01)
    time.sleep(0.2)  # the block has exited: the run is over, the endpoint lingers
    assert not run_ended.is_set()
    host, port = bound[0]
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as reply:
        assert b'lvsprobe_replay_flows_started_total{kind="http"} 1' in reply.read()
    runner.join(timeout=30)  # generous: the scrape, not the 60 s bound, ends the linger
    assert run_ended.is_set()


def test_serve_metrics_without_a_scraper_stops_after_the_linger() -> None:
    live = _live(FakeClock())
    told: list[float] = []
    with serve_metrics(("127.0.0.1", 0), live, 0.05, told.append) as (host, port):
        pass
    assert told == [0.05]  # the user is told why the command has not returned yet
    try:
        urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5)
        raise AssertionError("still serving after the linger")
    except OSError:
        pass
