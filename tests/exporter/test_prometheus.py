"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes the exporter on loopback and its
PromQL answers match what the exporter was fed."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.dashboards.prometheus import Prometheus
from lvsprobe.exporter.flights import scrape_formats
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.exporter.server import ExporterServer
from lvsprobe.model import Snapshot, Stats


@pytest.fixture
def exporter(make_snapshot: Callable[..., Snapshot]) -> Iterator[tuple[str, list[int]]]:
    """The exporter on loopback; each scrape the port-80 service gains 7 connections."""
    base = make_snapshot()
    scrapes: list[int] = []

    def read(target: object, **kw: object) -> Snapshot:
        scrapes.append(1)
        conns = 7 * len(scrapes)
        services = tuple(
            replace(s, stats=Stats(conns, 0, 0, 0, 0))
            if s.key.port == 80 and s.key.address and s.key.address.version == 4
            else s
            for s in base.services
        )
        return replace(base, services=services)

    server = ExporterServer(("127.0.0.1", 0), scrape_formats(Scraper(ExportOptions(), read=read)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", scrapes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def prometheus(tmp_path: Path, exporter: tuple[str, list[int]]) -> Iterator[Prometheus]:
    """Debian's prometheus on loopback scraping the exporter every second."""
    target, _ = exporter
    server = Prometheus([target], tmp_path, scrape_interval_s=1, job="ipvs")
    if not os.access(server.binary, os.X_OK):
        pytest.skip("prometheus missing: make test installs Debian's prometheus package")
    with server:
        yield server


def _wait_for(
    prom: Prometheus, promql: str, ok: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    return prom.wait_until(promql, ok, attempts=300, pause_s=0.1)  # bounded: 300 polls


def test_prometheus_scrapes_and_queries(
    prometheus: Prometheus, exporter: tuple[str, list[int]]
) -> None:
    _wait_for(prometheus, 'up{job="ipvs"}', lambda r: bool(r) and r[0]["value"][1] == "1")
    _wait_for(prometheus, "ipvs_up", lambda r: bool(r) and r[0]["value"][1] == "1")
    backends = prometheus.query("count(ipvs_backend_weight)")
    assert backends[0]["value"][1] == "11"
    info = prometheus.query('ipvs_service_info{scheduler="sh"}')
    assert info[0]["metric"]["flags"] == "sh-fallback"
    # The counter grows 7 per scrape: after several scrapes, increase() over them is a multiple.
    series = 'ipvs_service_connections_total{address="198.18.1.100",port="80"}'
    _wait_for(
        prometheus,
        f"count_over_time({series}[1m])",
        lambda r: bool(r) and int(r[0]["value"][1]) >= 3,
    )
    samples = prometheus.query(f"{series}[1m]")[0]["values"]
    values = [int(v) for _, v in samples]
    assert all(b - a > 0 and (b - a) % 7 == 0 for a, b in itertools.pairwise(values))
    scraped = prometheus.query('scrape_samples_scraped{job="ipvs"}')
    assert int(scraped[0]["value"][1]) > 100
