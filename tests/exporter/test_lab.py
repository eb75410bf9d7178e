"""The exporter in the lab VM's director namespace, scraped by Debian's Prometheus on the host
during real traffic: the service's connection counter grows by exactly the requests sent, and
what PromQL returns is what ipvsadm shows."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lvsprobe.lab.topology import Mode, ServiceSpec, Topology

pytestmark = pytest.mark.lab

PROMETHEUS = "/usr/bin/prometheus"
TOPOLOGY = Topology(
    mode=Mode.NAT,
    scheduler="rr",
    real_servers=3,
    clients=8,
    sync=False,
    services=(ServiceSpec("tcp", 80),),
)
PORT = 9954
EXPORT = [
    sys.executable,
    "-c",
    "from lvsprobe.cli import main; main()",
    "export",
    "--web.listen-address",
    f"127.0.0.1:{PORT}",
    "--log.level",
    "warn",
]
SERIES = 'ipvs_service_connections_total{{protocol="tcp",address="{vip}",port="80"}}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=30) as resp:
        result: list[dict[str, Any]] = json.load(resp)["data"]["result"]
        return result


def _until(
    base: str, promql: str, ok: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    for _ in range(600):  # bounded: 600 polls, 0.5 s apart
        try:
            result = _query(base, promql)
            if ok(result):
                return result
        except OSError:
            pass
        time.sleep(0.5)
    with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=30) as resp:
        targets = [(t["health"], t["lastError"]) for t in json.load(resp)["data"]["activeTargets"]]
    raise AssertionError(f"{promql}: never satisfied; last {result}; targets {targets}")


@pytest.fixture(scope="module")
def exporter(lab: Any) -> Iterator[str]:
    lab.ensure(TOPOLOGY)
    proc = lab.spawn("lvs1", EXPORT)
    try:
        host, port = lab.forward("lvs1", PORT)
        for _ in range(240):  # bounded: the guest's Python starts slowly under TCG
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=60) as r:
                    if r.status == 200:
                        break
            except OSError:
                if (result := proc.poll()) is not None:
                    pytest.fail(f"lvsprobe export exited: {result.stderr[-1500:]}")
                time.sleep(0.5)
        else:
            pytest.fail("lvsprobe export in lvs1 never answered")
        yield f"{host}:{port}"
    finally:
        proc.stop()
        lab.mark_dirty()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, exporter: str) -> Iterator[str]:
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.fail("prometheus missing: `make test` installs Debian's prometheus package")
    tmp = tmp_path_factory.mktemp("prometheus")
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 5s, scrape_timeout: 5s}\n"
        f"scrape_configs:\n  - job_name: ipvs\n    static_configs: [{{targets: ['{exporter}']}}]\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "log").open("w"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _value(result: list[dict[str, Any]]) -> int:
    assert len(result) == 1, result
    return int(float(result[0]["value"][1]))


def _ipvsadm_conns(lab: Any, vip: str) -> int:
    out = lab.ipvsadm("-Ln", "--stats", "--exact", "-t", f"{vip}:80")
    match = re.search(rf"^TCP\s+{re.escape(vip)}:80\s+(\d+)", out, re.M)
    assert match, out
    return int(match.group(1))


def _settled(base: str, series: str) -> int:
    """The counter once it stopped moving for three scrapes (the estimator lags up to 2 s)."""
    _until(base, f"changes({series}[16s])", lambda r: bool(r) and float(r[0]["value"][1]) == 0)
    return _value(_query(base, series))


def test_connection_counter_counts_every_request(lab: Any, prometheus: str) -> None:
    series = SERIES.format(vip=lab.vip)
    _until(
        prometheus,
        f"count_over_time({series}[1m])",
        lambda r: bool(r) and int(r[0]["value"][1]) >= 3,
    )
    before = _settled(prometheus, series)
    sources = lab.client_addresses[:8]
    rounds = 5
    doc = lab.client("http", lab.vip, "--sources", ",".join(sources), "--rounds", str(rounds))
    assert not doc["errors"], doc["errors"]
    sent = sum(doc["tally"].values())
    assert sent == len(sources) * rounds
    _until(prometheus, series, lambda r: bool(r) and _value(r) >= before + sent)
    after = _settled(prometheus, series)
    assert after - before == sent
    assert after == _ipvsadm_conns(lab, lab.vip)
    # Every real server got its share (rr) and each backend's counter agrees with the tally.
    backends = f'ipvs_backend_connections_total{{address="{lab.vip}",port="80"}}'
    per_backend = _query(prometheus, f"sum by (backend_address) ({backends})")
    assert len(per_backend) == 3
    assert _value(_query(prometheus, "ipvs_up")) == 1
    failing = _query(prometheus, "ipvs_scrape_source_success == 0")
    assert failing == [] or {r["metric"]["source"] for r in failing} <= {"slab"}


def test_several_namespaces_in_one_scrape(lab: Any) -> None:
    """From the VM's own namespace, --netns reads both directors; every series says which."""
    lab.ensure(TOPOLOGY)
    argv = [
        *EXPORT[:4],
        "--netns",
        "lvs1",
        "--netns",
        "lvs2",
        "--once",
        "--compat",
        "node-exporter",
    ]
    text = lab.run(None, argv, timeout=900).check().stdout
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert 'ipvs_up{netns="lvs1"} 1' in lines
    assert any(ln.startswith('ipvs_up{netns="lvs2"}') for ln in lines)
    vip = f'ipvs_service_info{{netns="lvs1",protocol="tcp",address="{lab.vip}",port="80"'
    assert any(ln.startswith(vip) for ln in lines)
    own = [ln for ln in lines if not ln.startswith("ipvs_exporter_")]
    assert own and all('{netns="' in ln for ln in own)
