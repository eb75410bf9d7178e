"""The proof of issue 7: every query of every dashboard, against a real Prometheus fed by the lab.

Two directors in the lab VM (lvs1 active with the master sync daemon, lvs2 standby with the
backup daemon), `lvsprobe export` in each director's namespace, Debian's Prometheus on the host
scraping both through the lab's port forwards. The test makes every condition a panel charts:
a replay (`lvsprobe replay run`) from many client addresses to a persistent wrr service (rates,
templates, the share of connections against weights), a drained real server on a second
service (weight 0), held connections (ESTABLISHED), entries synced to lvs2, then a failover so
lvs2 takes traffic (VIP holder). Then each panel query, variables substituted as Grafana does,
must parse and return at least one series. The keepalived panels' queries are proven the same
way in tests/lab/test_keepalived.py, where keepalived runs and fails over.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.dashboards import proof
from lvsprobe.dashboards.prometheus import DEFAULT_BINARY, Prometheus, PrometheusError
from lvsprobe.lab.listening import forward_when_listening
from lvsprobe.lab.topology import Mode, ServiceSpec, Topology

pytestmark = pytest.mark.lab

TOPOLOGY = Topology(
    mode=Mode.NAT,
    scheduler="wrr",
    real_servers=3,
    clients=64,
    sync=True,
    services=(
        ServiceSpec("tcp", 80, persistence_s=120, weights=(3, 2, 1)),
        ServiceSpec("tcp", 443, weights=(1, 1, 0)),
    ),
)
EXPORTER_PORT = 9954
# Under TCG a scrape of a guest exporter through the forward took 2-17 s on a busy 2-CPU host
# (several lab VMs at once, load 10): scrape every 30 s (timeout 30 s), rate() over 6 scrapes.
SCRAPE_S = 30
RATE_INTERVAL = "3m"
CLI = [sys.executable, "-c", "from lvsprobe.cli import main; main()"]
REPLAYS = Path(__file__).resolve().parents[2] / "replays"
EXPORT = [
    *CLI,
    "export",
    "--web.listen-address",
    f"127.0.0.1:{EXPORTER_PORT}",
    "--log.level",
    "warn",
]
# Holds N connections from distinct client addresses open for a bounded time (ESTABLISHED).
HOLD = """
import socket, sys, time
vip, seconds, sources = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
held = []
for src in sources:
    s = socket.socket(); s.settimeout(10); s.bind((src, 0)); s.connect((vip, 80)); held.append(s)
print(len(held), flush=True)
time.sleep(seconds)
"""


@pytest.fixture(scope="module")
def directors(lab: Any) -> Iterator[list[str]]:
    """The exporter running in lvs1 and lvs2; host:port of each (forwarded to the host)."""
    lab.ensure(TOPOLOGY)
    procs = [lab.spawn(ns, EXPORT) for ns in ("lvs1", "lvs2")]
    try:
        yield [
            forward_when_listening(lab, ns, EXPORTER_PORT, proc, bound_s=90)
            for ns, proc in zip(("lvs1", "lvs2"), procs, strict=True)
        ]
    finally:
        for proc in procs:
            proc.stop()
        lab.mark_dirty()


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, directors: list[str]
) -> Iterator[Prometheus]:
    if not os.access(DEFAULT_BINARY, os.X_OK):
        pytest.fail("prometheus missing: `make test` installs Debian's prometheus package")
    prom = Prometheus(directors, tmp_path_factory.mktemp("prometheus"), scrape_interval_s=SCRAPE_S)
    prom.start()
    try:
        try:
            prom.wait_until(
                "count_over_time(ipvs_up[5m])",
                lambda r: len(r) == 2 and all(int(s["value"][1]) >= 3 for s in r),
                attempts=300,
                pause_s=1,
            )
        except PrometheusError as exc:
            pytest.fail(f"{exc}; targets: {prom.target_health()}")
        yield prom
    finally:
        prom.stop()


def _replay(lab: Any, max_flows: int) -> dict[str, Any]:
    """Bounded traffic: `lvsprobe replay run replays/wrr-weights.yaml` (HTTP from 60 client
    addresses, at most `max_flows` flows and 2 minutes) in the client namespace; its summary."""
    out = Path(lab.shared_dir) / f"dash-replay-{time.monotonic_ns()}"
    argv = [*CLI, "replay", "run", str(REPLAYS / "wrr-weights.yaml"), "--out", str(out)]
    argv += ["--max-flows", str(max_flows), "--json", "--no-progress"]
    result = lab.run("client", argv, timeout=600)
    assert result.returncode == 0, f"replay: rc {result.returncode}\n{result.stderr[-3000:]}"
    summary: dict[str, Any] = json.loads(result.stdout)
    assert (summary["flows"], summary["ok"]) == (max_flows, max_flows), summary
    return summary


def _wait(prom: Prometheus, expr: str) -> list[dict[str, Any]]:
    """Until `expr` returns a series (bounded polls); on failure say how the scrapes went."""
    try:
        return prom.wait_until(expr, bool, attempts=600, pause_s=1)
    except PrometheusError as exc:
        durations = prom.query("scrape_duration_seconds")
        pytest.fail(f"{exc}\ntargets: {prom.target_health()}\nscrape durations: {durations}")


@pytest.mark.timeout(2400)  # a shared TCG VM: cluster rebuild, two exporters, traffic, failover
def test_every_panel_query_returns_series_on_the_lab(
    lab: Any, directors: list[str], prometheus: Prometheus, tmp_path: Path
) -> None:
    lvs1, lvs2 = directors
    sources = lab.client_addresses
    # 1. ESTABLISHED entries: 8 connections held open (bounded: 600 s, stopped below).
    hold = lab.spawn("client", [sys.executable, "-c", HOLD, lab.vip, "600", *sources[-8:]])
    try:
        # 2. A replay through lvs1 (active): persistence templates, rates, wrr shares.
        _replay(lab, 60)
        # 3. The backup daemon on lvs2 received entries (3rd inbound packet syncs a conn).
        _wait(prometheus, f'ipvs_conn_table_entries{{instance="{lvs2}",origin="sync"}} > 0')
        _wait(prometheus, f'sum(ipvs_conn_entries{{instance="{lvs1}",state="ESTABLISHED"}}) > 0')
        # 4. Failover: lvs2 takes the VIP and traffic (VIP holder, new conns/s per director).
        before = _wait(prometheus, f'ipvs_incoming_packets_total{{instance="{lvs2}"}}')
        lab.failover()
        _replay(lab, 16)
        _wait(
            prometheus,
            f'ipvs_incoming_packets_total{{instance="{lvs2}"}} > {before[0]["value"][1]}',
        )
    finally:
        hold.stop()
        lab.mark_dirty()

    range_s = 1200
    values = proof.grafana_values(directors, "", range_s=range_s, rate_interval=RATE_INTERVAL)
    options = proof.service_options(prometheus, values)
    assert "tcp 198.18.1.100:80" in options and "tcp 198.18.1.100:443" in options, options
    values["service"] = options["tcp 198.18.1.100:80"]
    # the keepalived queries: tests/lab/test_keepalived.py, on a cluster that runs keepalived
    outcomes = proof.prove(
        prometheus,
        proof.exporter_dashboards(),
        values,
        range_s=range_s,
        only=lambda q: not proof.needs_keepalived(q),
    )
    (tmp_path / "outcomes.txt").write_text("\n".join(o.describe() for o in outcomes))
    failed = [o.describe() for o in outcomes if not o.ok]
    assert not failed, f"{len(failed)} of {len(outcomes)} queries:\n" + "\n".join(failed)

    # What the panels show is what happened, not just "some series". A range query ending
    # now, as a panel asks: a subquery's steps are aligned to multiples of the step, so its
    # last one can precede the newest scrape, the only one after the traffic (CI, twice:
    # lvs1's counter read 0, 0, 0, 68 and max_over_time of its rate saw 0).
    def peak(expr: str) -> float:
        result = prometheus.query_range(expr, range_s, SCRAPE_S)
        return max((float(v) for s in result for _, v in s["values"]), default=0.0)

    rate1 = (
        f'sum(rate(ipvs_service_connections_total{{instance="{lvs1}",port="80"}}[{RATE_INTERVAL}]))'
    )
    counter = f'ipvs_service_connections_total{{instance="{lvs1}",port="80"}}'
    assert peak(rate1) > 0, prometheus.query_range(counter, range_s, SCRAPE_S)
    assert peak(f'ipvs_conn_templates{{instance="{lvs1}",port="80"}}') > 0
    assert prometheus.query(f'ipvs_backend_weight{{instance="{lvs1}",port="443"}} == 0')
    assert peak(f'ipvs_sync_daemon_up{{instance="{lvs1}",role="master"}}') == 1
    assert peak(f'ipvs_sync_daemon_up{{instance="{lvs2}",role="backup"}}') == 1
    assert peak(f'ipvs_conn_table_entries{{instance="{lvs2}",origin="sync"}}') > 0
    holder = f"sum by (instance) (rate(ipvs_incoming_packets_total[{RATE_INTERVAL}])) > bool 0"
    per_instance = {
        s["metric"]["instance"]: max(float(v) for _, v in s["values"])
        for s in prometheus.query_range(holder, range_s, SCRAPE_S)
    }
    assert per_instance == {lvs1: 1.0, lvs2: 1.0}  # each held the VIP at some point
