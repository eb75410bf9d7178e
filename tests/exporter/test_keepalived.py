"""--collector.keepalived: the series from keepalived 2.2.7's real dumps, one shared reading per
interval, a failed reading as a failed source, and the command-line options."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from lvsprobe.cli import cli
from lvsprobe.errors import LvsprobeError
from lvsprobe.exporter.keepalived import KeepalivedCollector
from lvsprobe.exporter.keepalived_options import KeepalivedOptions
from lvsprobe.exporter.metrics import SPECS
from lvsprobe.exporter.render import Builder, render
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.keepalived.check_data import parse_keepalived_check_data
from lvsprobe.keepalived.dump import KeepalivedDump
from lvsprobe.keepalived.files import KeepalivedFiles
from lvsprobe.keepalived.vrrp_json import parse_keepalived_json
from lvsprobe.model import Snapshot

FIXTURES = Path(__file__).parents[1] / "fixtures" / "keepalived-2.2.7"
GOLDEN = Path(__file__).parent / "golden" / "keepalived.prom"
DUMP = KeepalivedDump(
    running=True,
    vrrp=parse_keepalived_json((FIXTURES / "vrrp/a-master.json").read_bytes()),
    virtual_servers=parse_keepalived_check_data((FIXTURES / "check/a-nat-dr-tun.data").read_text()),
)
FILES = KeepalivedFiles(Path("/run/keepalived.pid"), Path("/tmp"))


@dataclass
class FakeRead:
    """Stands in for read_keepalived: counts readings, answers a dump or raises."""

    answer: KeepalivedDump | LvsprobeError = DUMP
    calls: int = 0

    def __call__(self, files: KeepalivedFiles, timeout_s: float) -> KeepalivedDump:
        self.calls += 1
        if isinstance(self.answer, LvsprobeError):
            raise self.answer
        return self.answer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _text(collector: KeepalivedCollector) -> str:
    out = Builder(SPECS)
    collector.collect(out, None)
    return render(out.families.values()).decode()


def _collector(read: FakeRead, clock: Clock | None = None, **options: float) -> KeepalivedCollector:
    return KeepalivedCollector(
        FILES, KeepalivedOptions(**options), read=read, clock=clock or Clock()
    )  # type: ignore[arg-type]


def test_golden() -> None:
    text = _text(_collector(FakeRead()))
    if os.environ.get("LVSPROBE_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_promtool_check_metrics(
    check_metrics: Callable[[bytes], subprocess.CompletedProcess[bytes]],
) -> None:
    result = check_metrics(GOLDEN.read_bytes())
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_state_set_and_vips() -> None:
    samples = _samples(_text(_collector(FakeRead())))
    states = {
        dict(labels)["vrrp_state"]: value
        for (name, labels), value in samples.items()
        if name == "ipvs_keepalived_vrrp_state" and ("vrrp_instance", "VI_web") in labels
    }
    assert states == {"init": 0, "backup": 0, "master": 1, "fault": 0, "deleted": 0, "stop": 0}
    vip = ("ipvs_keepalived_vrrp_vip", (("address", "198.18.0.100"), ("vrrp_instance", "VI_web")))
    assert samples[vip] == 1


def test_backend_labels_join_the_ipvs_ones() -> None:
    """keepalived's verdict carries exactly the labels of ipvs_backend_weight, spelled alike."""
    samples = _samples(_text(_collector(FakeRead())))
    down = dict(
        next(
            labels
            for (name, labels), value in samples.items()
            if name == "ipvs_keepalived_backend_up" and value == 0 and ("fwmark", "7") in labels
        )
    )
    assert down == {
        "protocol": "",
        "address": "",
        "port": "0",
        "fwmark": "7",
        "family": "inet",
        "backend_address": "198.18.0.2",
        "backend_port": "0",
        "forward": "route",
    }


def test_one_reading_per_interval() -> None:
    read, clock = FakeRead(), Clock()
    collector = _collector(read, clock, min_interval_s=5.0)
    first = _text(collector)
    clock.now += 4.9
    assert _text(collector) == first
    assert read.calls == 1
    clock.now += 0.2
    _text(collector)
    assert read.calls == 2


def test_a_failed_reading_is_a_failed_source_and_is_shared_too() -> None:
    read, clock = FakeRead(LvsprobeError("keepalived did not write keepalived.json")), Clock()
    collector = _collector(read, clock)
    out = Builder(SPECS)
    assert collector.collect(out, None) == "keepalived did not write keepalived.json"
    text = render(out.families.values()).decode()
    assert 'ipvs_scrape_source_success{source="keepalived"} 0' in text
    assert "ipvs_keepalived_" not in text
    _text(collector)
    assert read.calls == 1


def test_not_running_is_a_state() -> None:
    text = _text(_collector(FakeRead(KeepalivedDump(running=False))))
    assert "ipvs_keepalived_up 0" in text
    assert 'ipvs_scrape_source_success{source="keepalived"} 1' in text


def test_scraper_reads_the_keepalived_of_each_namespace(tmp_path: Path) -> None:
    """Through the real reader: no pid file in a namespace's directory is keepalived down
    there, with the netns label on its series."""

    @dataclass(frozen=True)
    class Target:
        netns: str | None = None
        pid: int | None = None

    options = ExportOptions(
        targets=(Target("lvs1"), Target("lvs2")),  # type: ignore[arg-type]
        keepalived=KeepalivedOptions(pid_file=f"{tmp_path}/{{netns}}/keepalived.pid"),
    )
    text = Scraper(options, read=lambda *a, **k: Snapshot(loaded=False, via="procfs")).scrape()
    assert b'ipvs_keepalived_up{netns="lvs1"} 0' in text
    assert b'ipvs_keepalived_up{netns="lvs2"} 0' in text
    assert b'ipvs_scrape_source_success{netns="lvs2",source="keepalived"} 1' in text


def test_options_reach_the_collector(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "export",
            "--once",
            "--procfs-root",
            str(tmp_path),
            "--collector.keepalived",
            "--keepalived.pid-file",
            str(tmp_path / "keepalived.pid"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "ipvs_keepalived_up 0" in result.output


def test_several_namespaces_need_the_placeholder() -> None:
    result = CliRunner().invoke(
        cli, ["export", "--once", "--netns", "a", "--netns", "b", "--collector.keepalived"]
    )
    assert result.exit_code == 2
    assert "--keepalived.pid-file" in result.output and "{netns}" in result.output


@pytest.mark.parametrize("signum", ["15", "10", "63"])
def test_only_the_json_signal_numbers(signum: str) -> None:
    """A typo must not send keepalived SIGTERM (15) or the stats-clearing signal (63)."""
    result = CliRunner().invoke(
        cli, ["export", "--once", "--collector.keepalived", "--keepalived.json-signal", signum]
    )
    assert result.exit_code == 2
    assert "--keepalived.json-signal" in result.output
