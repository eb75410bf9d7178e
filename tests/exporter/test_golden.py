"""Exact /metrics for known snapshots, checked by `promtool check metrics` too.

Regenerate after an intended change with `LVSPROBE_UPDATE_GOLDEN=1 pytest tests/exporter` and
review the diff.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lvsprobe.errors import NamespaceError
from lvsprobe.exporter.filters import ServiceFilter, parse_service_match
from lvsprobe.exporter.names import NamesFile, encode_names
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.model import Snapshot

GOLDEN = Path(__file__).parent / "golden"


@dataclass(frozen=True)
class Target:
    """Stands in for lvsprobe.sources.Target: the scraper only reads netns and pid."""

    netns: str | None = None
    pid: int | None = None


BUILD = ("0.1.0", "3.11.0")


def _scrape(read: Callable[..., Snapshot], **opts: object) -> bytes:
    """The golden files hold every family: the per-real-server rates and extras included."""
    opts.setdefault("backend_rates", True)
    opts.setdefault("backend_extra", True)
    return Scraper(ExportOptions(**opts), read=read, build=BUILD).scrape()  # type: ignore[arg-type]


def _golden(name: str, text: bytes) -> None:
    path = GOLDEN / name
    if os.environ.get("LVSPROBE_UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(text)
    assert path.exists(), f"{path} missing: run with LVSPROBE_UPDATE_GOLDEN=1"
    assert text.decode() == path.read_text()


def _cases(make: Callable[..., Snapshot], broken: Snapshot, tmp: Path) -> dict[str, bytes]:
    names_file = tmp / "names.yml"
    names_file.write_text(
        encode_names(
            {
                ("tcp", ipaddress.ip_address("198.18.1.100"), 80, 0): 'web "front"',
                ("", None, 0, 5): "mail",
            }
        )
    )

    def two_namespaces(target: Target | None, **kw: object) -> Snapshot:
        assert target is not None
        if target.netns == "gone":
            raise NamespaceError("cannot enter network namespace 'gone': No such file or directory")
        if target.netns == "blue":
            return make(namespace="blue")
        return Snapshot(loaded=False, via="procfs", namespace=target.netns)

    return {
        "nat.prom": _scrape(lambda t, **kw: make(), conns="per-real-server"),
        "nat-compat.prom": _scrape(lambda t, **kw: make(), compat_node_exporter=True),
        "failing.prom": _scrape(lambda t, **kw: broken),
        "not-loaded.prom": _scrape(lambda t, **kw: Snapshot(loaded=False, via="procfs")),
        "namespaces.prom": _scrape(
            two_namespaces,
            targets=(Target(netns="blue"), Target(netns="green"), Target(netns="gone")),
        ),
        "limited.prom": _scrape(
            lambda t, **kw: make(),
            service_filter=ServiceFilter(
                include=(parse_service_match("198.18.1.0/24"), parse_service_match("fwmark:5")),
                exclude=(parse_service_match(":53"),),
            ),
            max_backends=3,
            names=NamesFile(names_file),
            compat_node_exporter=True,
            compat_backend_labels=("local_address", "local_port", "proto"),
        ),
    }


@pytest.fixture
def cases(
    make_snapshot: Callable[..., Snapshot], broken_snapshot: Snapshot, tmp_path: Path
) -> dict[str, bytes]:
    return _cases(make_snapshot, broken_snapshot, tmp_path)


@pytest.mark.parametrize(
    "name",
    [
        "nat.prom",
        "nat-compat.prom",
        "failing.prom",
        "not-loaded.prom",
        "namespaces.prom",
        "limited.prom",
    ],
)
def test_golden(cases: dict[str, bytes], name: str) -> None:
    _golden(name, cases[name])


@pytest.mark.parametrize(
    "name", ["nat.prom", "nat-compat.prom", "failing.prom", "namespaces.prom", "limited.prom"]
)
def test_promtool_check_metrics(
    cases: dict[str, bytes],
    check_metrics: Callable[[bytes], subprocess.CompletedProcess[bytes]],
    name: str,
) -> None:
    result = check_metrics(cases[name])
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert result.stdout.decode().strip() == ""


def test_failed_source_exports_nothing_of_it_and_says_so(cases: dict[str, bytes]) -> None:
    text = cases["failing.prom"].decode()
    assert 'ipvs_scrape_source_success{source="conns"} 0' in text
    assert 'ipvs_scrape_source_success{source="slab"} 0' in text
    assert 'ipvs_scrape_source_success{source="services"} 1' in text
    assert "ipvs_conn_entries{" not in text and "ipvs_conn_slab" not in text
    assert "ipvs_backend_weight{" in text


def test_not_loaded_is_a_state(cases: dict[str, bytes]) -> None:
    text = cases["not-loaded.prom"].decode()
    assert "ipvs_up 0\n" in text
    assert "ipvs_scrape_source_success" not in text


def test_every_series_has_netns_with_several(cases: dict[str, bytes]) -> None:
    lines = [ln for ln in cases["namespaces.prom"].decode().splitlines() if not ln.startswith("#")]
    own = [ln for ln in lines if not ln.startswith("ipvs_exporter_")]
    assert own and all(ln.split("{", 1)[1].startswith('netns="') for ln in own)
    assert 'ipvs_up{netns="green"} 0' in lines
    assert 'ipvs_scrape_source_success{netns="gone",source="namespace"} 0' in lines


def test_cap_and_filters(cases: dict[str, bytes]) -> None:
    text = cases["limited.prom"].decode()
    lines = text.splitlines()
    assert len([ln for ln in lines if ln.startswith("ipvs_backend_weight{")]) == 3
    assert "ipvs_exporter_dropped_backends 4" in lines
    assert 'ipvs_exporter_dropped_series_total{reason="backend_cap"} 4' in lines
    assert 'port="53"' not in text.split("# HELP node_ipvs")[0]
    assert "2001:2:0:1::100" not in text.split("# HELP node_ipvs")[0]
    assert 'name="web \\"front\\""' in text and 'name="mail"' in text
