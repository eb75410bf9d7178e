"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes the exporter on loopback and its
PromQL answers match what the exporter was fed."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.exporter.server import ExporterServer
from lvsprobe.model import Snapshot, Stats

PROMETHEUS = "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=10) as resp:
        data = json.load(resp)
    assert data["status"] == "success"
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


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

    server = ExporterServer(("127.0.0.1", 0), Scraper(ExportOptions(), read=read).scrape)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", scrapes
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def prometheus(tmp_path: Path, exporter: tuple[str, list[int]]) -> Iterator[str]:
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("prometheus missing: make test installs Debian's prometheus package")
    target, _ = exporter
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: ipvs\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _wait_for(
    base: str, promql: str, ok: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for _ in range(300):  # bounded: 300 polls, 0.1 s apart
        try:
            result = _query(base, promql)
            if ok(result):
                return result
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{promql}: never satisfied, last {result}")


def test_prometheus_scrapes_and_queries(prometheus: str, exporter: tuple[str, list[int]]) -> None:
    _wait_for(prometheus, 'up{job="ipvs"}', lambda r: bool(r) and r[0]["value"][1] == "1")
    _wait_for(prometheus, "ipvs_up", lambda r: bool(r) and r[0]["value"][1] == "1")
    backends = _query(prometheus, "count(ipvs_backend_weight)")
    assert backends[0]["value"][1] == "11"
    info = _query(prometheus, 'ipvs_service_info{scheduler="sh"}')
    assert info[0]["metric"]["flags"] == "sh-fallback"
    # The counter grows 7 per scrape: after several scrapes, increase() over them is a multiple.
    series = 'ipvs_service_connections_total{address="198.18.1.100",port="80"}'
    _wait_for(
        prometheus,
        f"count_over_time({series}[1m])",
        lambda r: bool(r) and int(r[0]["value"][1]) >= 3,
    )
    samples = _query(prometheus, f"{series}[1m]")[0]["values"]
    values = [int(v) for _, v in samples]
    assert all(b - a > 0 and (b - a) % 7 == 0 for a, b in itertools.pairwise(values))
    scraped = _query(prometheus, 'scrape_samples_scraped{job="ipvs"}')
    assert int(scraped[0]["value"][1]) > 100
