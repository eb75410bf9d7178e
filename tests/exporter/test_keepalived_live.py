"""The real keepalived 2.2.7: two instances in two network namespaces joined by a veth pair,
one VRRP instance between them, read by one exporter as `--netns A --netns B` would. Stopping
the MASTER shows in the backup's series within two scrapes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvsprobe.exporter.keepalived_options import KeepalivedOptions
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.sources import Target

pytestmark = [
    pytest.mark.needs_bin("keepalived", "ip"),
    pytest.mark.skipif(os.geteuid() != 0, reason="root missing: network namespaces need it"),
]

# Safety bounds, not expectations: keepalived elects a MASTER after 3 x advert_int + skew.
ELECTION_BOUND_S = 30.0
EXIT_BOUND_S = 15.0
SCRAPE_INTERVAL_S = 1.0
CONFIG = """\
global_defs {{
    router_id {name}
    vrrp_garp_master_delay 0
}}
vrrp_instance VI_lvsprobe {{
    state BACKUP
    interface {name}-v
    virtual_router_id 61
    priority {priority}
    advert_int 1
    virtual_ipaddress {{
        198.18.200.100/24
    }}
}}
"""


@dataclass
class Pair:
    names: tuple[str, str]  # the MASTER's namespace first
    processes: dict[str, subprocess.Popen[bytes]]
    scraper: Scraper


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    prefix = f"lpk{os.getpid() % 100000}"
    names = (f"{prefix}a", f"{prefix}b")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in names:
            _ip("netns", "add", name)
        _ip("link", "add", f"{names[0]}-v", "type", "veth", "peer", "name", f"{names[1]}-v")
        for index, name in enumerate(names):
            _ip("link", "set", f"{name}-v", "netns", name)
            _ip("-n", name, "addr", "add", f"198.18.200.{index + 1}/24", "dev", f"{name}-v")
            _ip("-n", name, "link", "set", f"{name}-v", "up")
            _ip("-n", name, "link", "set", "lo", "up")
        for name, priority in zip(names, (150, 100), strict=True):
            home = tmp_path / name
            (home / "tmp").mkdir(parents=True)
            (home / "keepalived.conf").write_text(CONFIG.format(name=name, priority=priority))
            command = ["ip", "netns", "exec", name, "keepalived", "-n", "-l", "-G", "-P"]
            command += ["-f", str(home / "keepalived.conf"), "-p", str(home / "keepalived.pid")]
            command += ["-r", str(home / "vrrp.pid"), "-c", str(home / "checkers.pid")]
            with (home / "log").open("wb") as log:
                processes[name] = subprocess.Popen(
                    command,
                    env={**os.environ, "TMPDIR": str(home / "tmp")},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        options = ExportOptions(
            targets=tuple(Target(netns=name) for name in names),
            keepalived=KeepalivedOptions(
                pid_file=f"{tmp_path}/{{netns}}/keepalived.pid",
                dump_dir=f"{tmp_path}/{{netns}}/tmp",
                min_interval_s=0,
                dump_timeout_s=5,
            ),
        )
        yield Pair(names, processes, Scraper(options))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(EXIT_BOUND_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(EXIT_BOUND_S)
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def _scrape(scraper: Scraper) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = scraper.scrape().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(("ipvs_keepalived_", "ipvs_scrape_source_success"))
    }


def _state(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], netns: str) -> str | None:
    for (name, labels), value in samples.items():
        if name == "ipvs_keepalived_vrrp_state" and ("netns", netns) in labels and value == 1:
            return dict(labels)["vrrp_state"]
    return None


def test_master_stopped_backup_takes_over_within_two_scrapes(pair: Pair) -> None:
    master, backup = pair.names
    until = time.monotonic() + ELECTION_BOUND_S
    while True:
        samples = _scrape(pair.scraper)
        if (_state(samples, master), _state(samples, backup)) == ("master", "backup"):
            break
        assert time.monotonic() < until, f"no MASTER/BACKUP pair elected: {samples}"
        time.sleep(0.5)
    vip = (
        "ipvs_keepalived_vrrp_vip",
        frozenset(
            {("netns", master), ("vrrp_instance", "VI_lvsprobe"), ("address", "198.18.200.100")}
        ),
    )
    assert samples[vip] == 1
    became = (
        "ipvs_keepalived_vrrp_become_master_total",
        frozenset({("netns", backup), ("vrrp_instance", "VI_lvsprobe")}),
    )
    assert samples[became] == 0

    pair.processes[master].terminate()
    pair.processes[master].wait(EXIT_BOUND_S)
    seen = []
    for _ in range(2):
        time.sleep(SCRAPE_INTERVAL_S)
        samples = _scrape(pair.scraper)
        seen.append(_state(samples, backup))
    assert "master" in seen, seen
    assert samples[("ipvs_keepalived_up", frozenset({("netns", master)}))] == 0
    assert samples[became] == 1
    for netns in pair.names:
        success = (
            "ipvs_scrape_source_success",
            frozenset({("netns", netns), ("source", "keepalived")}),
        )
        assert samples[success] == 1
