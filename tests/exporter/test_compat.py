"""`--compat node-exporter` against the real node_exporter binary on the same /proc tree."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvsprobe import sources
from lvsprobe.exporter.compat import (
    FULL_BACKEND_LABELS,
    NodeExporterCollector,
    parse_backend_labels,
)
from lvsprobe.exporter.render import Builder, render
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.model import (
    Forward,
    Protocol,
    RealServer,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    Stats,
)

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
Series = dict[str, tuple[str, str, frozenset[tuple[tuple[tuple[str, str], ...], float]]]]


def _series(text: str) -> Series:
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("node_ipvs_"):
            samples = frozenset((tuple(sorted(s.labels.items())), s.value) for s in fam.samples)
            out[fam.name] = (fam.type, fam.documentation, samples)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def node_exporter_scrape(procfs: Path, *flags: str) -> str:
    """Run node_exporter with only the ipvs collector on loopback and scrape it once."""
    port = _free_port()
    proc = subprocess.Popen(
        [
            NODE_EXPORTER,
            f"--path.procfs={procfs}",
            "--collector.disable-defaults",
            "--collector.ipvs",
            f"--web.listen-address=127.0.0.1:{port}",
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):  # bounded: 200 attempts
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    return str(r.read().decode())
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError("node_exporter exited") from None
                time.sleep(0.05)
        raise AssertionError("node_exporter did not answer")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def node_exporter() -> str:
    if not os.access(NODE_EXPORTER, os.X_OK):
        pytest.skip("node_exporter missing: make test installs prometheus-node-exporter")
    return NODE_EXPORTER


def _odd_services() -> tuple[Service, ...]:
    """An SCTP service (procfs's parser files its backends under the service before it), an
    IPv4 fwmark with a weight-0 backend and an IPv6-backed fwmark service."""
    ip = ipaddress.ip_address

    def rs(
        addr: str, port: int, weight: int, act: int, inact: int, fwd: Forward = Forward.ROUTE
    ) -> RealServer:
        return RealServer(ip(addr), port, fwd, weight, act, inact)

    key = ServiceKey
    return (
        Service(
            key(None, Protocol.TCP, ip("10.0.0.1"), 80),
            "rr",
            ServiceFlag.HASHED,
            None,
            (rs("192.168.1.10", 80, 1, 3, 5),),
        ),
        Service(
            key(None, Protocol.SCTP, ip("10.0.0.3"), 3868),
            "rr",
            ServiceFlag.HASHED,
            None,
            (rs("192.168.1.30", 3868, 2, 1, 1, Forward.MASQ),),
        ),
        Service(
            key(None, None, None, 0, fwmark=1),
            "sh",
            ServiceFlag.HASHED | ServiceFlag.ONEPACKET,
            None,
            (
                rs("192.168.1.13", 0, 1, 7, 0, Forward.TUNNEL),
                rs("192.168.1.14", 0, 0, 7, 0, Forward.TUNNEL),
            ),
        ),
        Service(
            key(None, None, None, 0, fwmark=10),
            "rr",
            ServiceFlag.HASHED,
            None,
            (rs("2001:db8::10", 443, 1, 0, 2),),
        ),
    )


@pytest.fixture
def trees(
    tmp_path: Path, bench_export: ModuleType, make_snapshot: Callable[..., Snapshot]
) -> list[tuple[Path, Snapshot]]:
    """(/proc tree, the snapshot it was written from) pairs."""
    nat = make_snapshot()
    odd = replace(nat, services=_odd_services())
    out = []
    for name, snap in (("nat", nat), ("odd", odd)):
        root = tmp_path / name
        (root / "net").mkdir(parents=True)
        (root / "net/ip_vs").write_text(bench_export.format_ip_vs(snap.services))
        t, r = snap.totals, snap.total_rates
        (root / "net/ip_vs_stats").write_text(
            bench_export.format_ip_vs_stats(
                (t.conns, t.in_pkts, t.out_pkts, t.in_bytes, t.out_bytes),
                (
                    r.conns_per_s,
                    r.in_pkts_per_s,
                    r.out_pkts_per_s,
                    r.in_bytes_per_s,
                    r.out_bytes_per_s,
                ),
            )
        )
        out.append((root, snap))
    return out


@pytest.mark.parametrize(
    "labels",
    [
        "local_address,local_port,remote_address,remote_port,proto,local_mark",
        "local_address,local_port,proto",
        "remote_address",
        "local_mark,proto",
    ],
)
def test_identical_series(
    node_exporter: str, trees: list[tuple[Path, Snapshot]], labels: str
) -> None:
    for root, snap in trees:
        theirs = _series(node_exporter_scrape(root, f"--collector.ipvs.backend-labels={labels}"))
        opts = ExportOptions(
            compat_node_exporter=True, compat_backend_labels=parse_backend_labels(labels)
        )
        ours = _series(Scraper(opts, read=lambda t, s=snap, **kw: s).scrape().decode())  # type: ignore[misc]
        assert len(theirs) == 8
        assert ours == theirs, root.name


def test_captured_fixture_tree(node_exporter: str, nat_proc: Path) -> None:
    """Through the real readers, on the captured tree."""
    opts = ExportOptions(
        targets=(sources.Target(procfs_root=nat_proc),), compat_node_exporter=True, netlink=False
    )
    ours = _series(Scraper(opts).scrape().decode())
    assert ours == _series(node_exporter_scrape(nat_proc))


def test_unknown_backend_label() -> None:
    with pytest.raises(ValueError, match="unknown label"):
        parse_backend_labels("local_address,vip")


def test_blocks_keep_a_braced_prefix_and_mapped_addresses() -> None:
    """Blocks are formatted from the Builder's own: a namespace prefix with braces stays as it
    is, an IPv4-mapped backend prints as IPv4 (net.IP.String()), no labels is one series."""
    ip = ipaddress.ip_address
    services = (
        Service(
            ServiceKey(None, Protocol.TCP, ip("::ffff:10.0.0.1"), 80),
            "rr",
            ServiceFlag.HASHED,
            None,
            (
                RealServer(ip("::ffff:192.168.1.10"), 80, Forward.MASQ, 2, 3, 4),
                RealServer(ip("2001:db8::1"), 80, Forward.MASQ, 1, 1, 1),
            ),
        ),
    )
    snap = Snapshot(loaded=True, via="procfs", services=services, totals=Stats(0, 0, 0, 0, 0))
    for labels, want in (
        (
            FULL_BACKEND_LABELS,
            [
                ("10.0.0.1", "80", "192.168.1.10", "80", "TCP", "", 3.0),
                ("10.0.0.1", "80", "2001:db8::1", "80", "TCP", "", 1.0),
            ],
        ),
        ((), [(4.0,)]),
    ):
        collector = NodeExporterCollector(labels)
        out = Builder(collector.specs)
        out.prefix = 'netns="{a}"'
        collector.collect(snap, out)
        (fam,) = (
            fam
            for fam in text_string_to_metric_families(render(out.families.values()).decode())
            if fam.name == "node_ipvs_backend_connections_active"
        )
        assert [s.labels.pop("netns") for s in fam.samples] == ["{a}"] * len(want)
        assert [(*(s.labels[name] for name in labels), s.value) for s in fam.samples] == want
