"""Every dashboard query against a real Prometheus, without the lab VM.

Two exporters on loopback, scraped every second by Debian's /usr/bin/prometheus:
- `lvsprobe export --procfs-root tests/fixtures/kernel-6.1/nat/proc` (a subprocess: the CLI as
  users run it; procfs only, so no per-service counters, daemons or timeouts);
- the same tree plus the captured generic-netlink conversation of that director, served
  in-process (per-service and per-backend counters, persistent connections, thresholds,
  the master sync daemon, timeouts), with --collector.keepalived answered by `FailingOver`:
  keepalived 2.2.7's real VRRP dump, MASTER and BACKUP in turn, and a checker verdict for
  each real server of the capture.
Every query must parse; every query must return a series except the ones listed in
`NEEDS_THE_LAB`, which need what a static capture cannot have (and the lab test provides).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.dashboards import proof, render, variables
from lvsprobe.dashboards.prometheus import DEFAULT_BINARY, Prometheus, free_port
from lvsprobe.exporter.flights import scrape_formats
from lvsprobe.exporter.keepalived import KeepalivedOptions
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.exporter.server import ExporterServer
from lvsprobe.keepalived.dump import KeepalivedDump, KeepalivedFiles
from lvsprobe.keepalived.model import CheckedRealServer, CheckedVirtualServer, VrrpState
from lvsprobe.keepalived.vrrp_json import parse_keepalived_json
from lvsprobe.model import Snapshot
from lvsprobe.sources import Target, read_snapshot

RANGE_S = 60
SERVICE = "tcp 198.18.1.100:21"  # the persistent (FTP) service of the capture
# (dashboard uid, panel title, refId) -> why a static fixture cannot fill it.
NEEDS_THE_LAB: dict[tuple[str, str, str], str] = {
    ("lvsprobe-ipvs-overview", "Backends with weight 0", "A"): "a drained real server",
    ("lvsprobe-ipvs-overview", "Backends with weight 0", "B"): "a drained real server",
    ("lvsprobe-ipvs-service", "Persistence templates", "A"): (
        "templates of a persistent service other than FTP: an FTP service's templates carry "
        'virtual port 0 (ip_vs_ftp), which the exporter labels port=""'
    ),
    ("lvsprobe-ipvs-sync", "Synced entries", "A"): "a backup director with synced entries",
    ("lvsprobe-ipvs-sync", "Backup coverage", "A"): "a backup director with synced entries",
    ("lvsprobe-ipvs-sync", "Established entries per director", "A"): "ESTABLISHED entries",
}
VRRP_DUMP = Path(__file__).parents[1] / "fixtures" / "keepalived-2.2.7" / "vrrp" / "a-master.json"
READINGS_PER_TERM = 5  # one scrape a second: a failover every 5 s


@dataclass
class FailingOver:
    """A keepalived reader for the captured director: its VRRP instances swap MASTER and BACKUP
    every READINGS_PER_TERM readings (counting the transitions), and its checkers find every
    real server of the capture up but the last of each service."""

    snapshot: Snapshot
    readings: int = 0

    def __call__(self, files: KeepalivedFiles, timeout_s: float) -> KeepalivedDump:
        self.readings += 1
        terms = self.readings // READINGS_PER_TERM
        swapped = {VrrpState.MASTER: VrrpState.BACKUP, VrrpState.BACKUP: VrrpState.MASTER}
        vrrp = tuple(
            replace(
                inst,
                state=swapped[inst.state] if terms % 2 else inst.state,
                become_master=inst.become_master + (terms + (inst.state is VrrpState.BACKUP)) // 2,
            )
            for inst in parse_keepalived_json(VRRP_DUMP.read_bytes())
        )
        return KeepalivedDump(running=True, vrrp=vrrp, virtual_servers=self._checked())

    def _checked(self) -> tuple[CheckedVirtualServer, ...]:
        return tuple(
            CheckedVirtualServer(
                address=svc.key.address,
                port=svc.key.port,
                fwmark=svc.key.fwmark,
                group=None,
                protocol=svc.key.protocol,
                family=svc.key.address.version if svc.key.address is not None else 4,
                alive=True,
                quorum_up=True,
                real_servers=tuple(
                    CheckedRealServer(
                        rs.address, rs.port, rs.forward, rs.weight, False, index > 0, index == 0
                    )
                    for index, rs in enumerate(reversed(tuple(svc.real_servers)))
                ),
            )
            for svc in self.snapshot.services
        )


def _wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    """Until `proc` accepts on `port` (bounded polls); its stderr if it exits first."""
    for _ in range(300):
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise AssertionError(f"lvsprobe export exited {proc.returncode}: {err[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"lvsprobe export never listened on {port}")


@pytest.fixture(scope="module")
def exporters(nat_proc: Path) -> Iterator[list[str]]:
    """Both exporters' host:port, serving."""
    port = free_port()
    cli = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from lvsprobe.cli import main; main()",
            "export",
            "--procfs-root",
            str(nat_proc),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--log.level",
            "warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _wait_listening(cli, port)
    capture = nat_proc.parent / "genl" / "ipvs_conversation.hex"
    target = Target(procfs_root=nat_proc, genl_capture=capture)
    options = ExportOptions(targets=(target,), keepalived=KeepalivedOptions(min_interval_s=0))
    keepalived = FailingOver(read_snapshot(target))
    scraper = Scraper(options, keepalived_read=keepalived)
    server = ExporterServer(("127.0.0.1", 0), scrape_formats(scraper))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield [f"127.0.0.1:{port}", f"127.0.0.1:{server.server_address[1]}"]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        cli.terminate()
        try:
            cli.wait(timeout=10)
        except subprocess.TimeoutExpired:
            cli.kill()
            cli.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, exporters: list[str]
) -> Iterator[Prometheus]:
    if not os.access(DEFAULT_BINARY, os.X_OK):
        pytest.skip("prometheus missing: `make test` installs Debian's prometheus package")
    prom = Prometheus(exporters, tmp_path_factory.mktemp("prometheus"), scrape_interval_s=1)
    prom.start()
    try:
        # Enough samples in the range window for rate() (bounded polls, not a clock).
        prom.wait_until(
            "count_over_time(ipvs_up[1m])",
            lambda r: len(r) == len(exporters) and all(int(s["value"][1]) >= 5 for s in r),
        )
        yield prom
    finally:
        prom.stop()


def _dashboards() -> list[dict[str, Any]]:
    """The exporter's dashboards (Replay run needs a replay: tests/replay/test_metrics_prom.py)."""
    files = render.render_all()
    exporters = [d for d in render.DASHBOARDS if d.name != "replay-run"]
    return [json.loads(files[f"provisioning/{d.name}.json"]) for d in exporters]


def test_both_exporters_are_scraped(prometheus: Prometheus, exporters: list[str]) -> None:
    assert prometheus.targets_up() == dict.fromkeys(exporters, True)


def test_variable_queries_return_options(prometheus: Prometheus, exporters: list[str]) -> None:
    values = proof.grafana_values(exporters, "", range_s=RANGE_S)
    assert proof.label_values(prometheus, variables.INSTANCE_QUERY, values) == sorted(exporters)
    assert proof.label_values(prometheus, variables.NETNS_QUERY, values) == []  # one namespace
    options = proof.service_options(prometheus, values)
    v4 = 'address="198.18.1.100",family="inet",fwmark="0",port="{}",protocol="{}"'
    v6 = 'address="2001:2:0:1::100",family="inet6",fwmark="0",port="80",protocol="tcp"'
    assert options == {
        "tcp 198.18.1.100:21": v4.format(21, "tcp"),
        "tcp 198.18.1.100:80": v4.format(80, "tcp"),
        "udp 198.18.1.100:53": v4.format(53, "udp"),
        "tcp [2001:2:0:1::100]:80": v6,
    }


def test_every_panel_query_parses_and_returns_series(
    prometheus: Prometheus, exporters: list[str]
) -> None:
    values = proof.grafana_values(exporters, "", range_s=RANGE_S)
    service = proof.service_options(prometheus, values)[SERVICE]
    values = proof.grafana_values(exporters, service, range_s=RANGE_S)
    outcomes = proof.prove(prometheus, _dashboards(), values, range_s=RANGE_S)
    assert len(outcomes) == sum(1 for d in _dashboards() for _ in proof.promql.panel_queries(d))
    errors = [o.describe() for o in outcomes if o.error]
    assert not errors, "\n".join(errors)
    empty = {(o.query.dashboard, o.query.panel_title, o.query.ref_id) for o in outcomes if not o.ok}
    unexpected = sorted(empty - NEEDS_THE_LAB.keys())
    assert not unexpected, "\n".join(
        o.describe()
        for o in outcomes
        if (o.query.dashboard, o.query.panel_title, o.query.ref_id) in unexpected
    )
    # The list of lab-only queries stays exact: a query that now returns data leaves it.
    assert empty == NEEDS_THE_LAB.keys()
