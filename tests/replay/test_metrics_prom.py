"""`replay run --metrics-listen`, scraped by a real Prometheus (Debian's) while the run goes,
and every query of the "Replay run" dashboard answered by it, the director's panel from an
exporter on the NAT fixture beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.cli.exit import ExitCode
from lvsprobe.dashboards import promql, proof, render
from lvsprobe.dashboards.prometheus import DEFAULT_BINARY, Prometheus, free_port
from lvsprobe.exporter.flights import scrape_formats
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.exporter.server import ExporterServer
from lvsprobe.sources import Target

RANGE_S = 60


@pytest.fixture
def exporter(nat_proc: Path) -> Iterator[str]:
    options = ExportOptions(targets=(Target(procfs_root=nat_proc),))
    server = ExporterServer(("127.0.0.1", 0), scrape_formats(Scraper(options)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def replay(tmp_path: Path, servers: Any) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    """A replay at 40 flows/s (a tenth to a missing page: 404s), bounded at 60 s and 2400
    flows, serving its metrics; stopped by the test with SIGINT."""
    scenario = tmp_path / "live.yaml"
    scenario.write_text(
        f"name: live\ntarget: {{address: 127.0.0.1, port: {servers.http}}}\n"
        "clients: {cidr: 127.0.0.30/24, count: 4}\n"
        "flows: [{kind: http, path: /, weight: 9}, {kind: http, path: /missing, weight: 1}]\n"
        "arrival: {stages: [{duration: 60s, rate: 40}]}\n"
        "bounds: {max_flows: 2400, max_duration: 60s}\n"
    )
    listen = f"127.0.0.1:{free_port()}"
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lvsprobe.cli import main; main()", "replay", "run",
         str(scenario), "--out", str(out), "--metrics-listen", listen, "--no-progress",
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield listen, proc, out
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_prometheus_scrapes_a_running_replay_and_the_dashboard_answers(
    tmp_path: Path, exporter: str, replay: tuple[str, subprocess.Popen[str], Path]
) -> None:
    listen, proc, out = replay
    prom = Prometheus([exporter, listen], tmp_path / "prom", scrape_interval_s=1, job="lvsprobe")
    if not os.access(DEFAULT_BINARY, os.X_OK):
        pytest.skip("prometheus missing: `make test` installs Debian's prometheus package")
    (tmp_path / "prom").mkdir()
    with prom:
        # bounded polls: enough scrapes of the running replay for rate() over 10 s windows
        prom.wait_until(
            f'count_over_time(lvsprobe_replay_flows_started_total{{instance="{listen}"}}[1m])',
            lambda r: bool(r) and int(r[0]["value"][1]) >= 6,
            attempts=600,
            pause_s=0.1,
        )
        prom.wait_until(
            'sum(lvsprobe_replay_flows_failed_total{outcome="error:http-404"})',
            lambda r: bool(r) and float(r[0]["value"][1]) > 0,
            attempts=600,
            pause_s=0.1,
        )
        assert proc.poll() is None, "the replay ended before Prometheus saw it run"
        started = prom.query("sum(lvsprobe_replay_flows_started_total)")
        assert float(started[0]["value"][1]) > 0
        planned = prom.query("lvsprobe_replay_planned_rate_per_second")
        assert float(planned[0]["value"][1]) == 40.0
        values = proof.grafana_values([exporter], "", range_s=RANGE_S, rate_interval="10s")
        values["replay"] = promql.regex_escape(listen)
        dashboard = json.loads(render.render_all()["provisioning/replay-run.json"])
        outcomes = proof.prove(prom, [dashboard], values, range_s=RANGE_S)
        failed = [o.describe() for o in outcomes if not o.ok]
        assert not failed, "\n".join(failed)
        assert len(outcomes) == len(list(promql.panel_queries(dashboard)))
    proc.send_signal(signal.SIGINT)  # a stopped run still writes its directory
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr[-2000:]
    summary = json.loads(stdout)
    assert summary["flows"] > 0 and summary["outcomes"].get("error:http-404", 0) > 0
    assert (out / "flows.parquet").is_file()
