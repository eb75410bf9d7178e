"""Exporter test fixtures: hand-built snapshots (the captured NAT director of
tests/fixtures/kernel-6.1 as netlink would give it, plus an fwmark service and a sync daemon),
the bench module (its /proc tree writer), and helpers to run promtool."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path
from types import ModuleType

import pytest

from lvsprobe.model import (
    ConnCountKey,
    ConnSummary,
    Daemon,
    DaemonState,
    Family,
    Forward,
    Origin,
    Persistence,
    Protocol,
    Rates,
    RealServer,
    Service,
    ServiceFlag,
    ServiceKey,
    Slab,
    Snapshot,
    SourceFailure,
    Stats,
    Timeouts,
)

V4 = "198.18.1.100"
V6 = "2001:2:0:1::100"


def _rs(
    addr: str, port: int, active: int, inactive: int, conns: int, persist: int = 0
) -> RealServer:
    return RealServer(
        address=ip_address(addr),
        port=port,
        forward=Forward.MASQ,
        weight=1,
        active_conns=active,
        inactive_conns=inactive,
        persistent_conns=persist,
        upper_threshold=0,
        lower_threshold=0,
        stats=Stats(conns, conns * 5, conns * 5, conns * 322, conns * 368),
        rates=Rates(5, 27, 27, 1746, 1996),
        family=Family.INET6 if ":" in addr else Family.INET,
    )


def _svc(
    proto: Protocol | None,
    addr: str | None,
    port: int,
    sched: str,
    rss: list[RealServer],
    fwmark: int = 0,
    persistence: Persistence | None = None,
    family: Family | None = Family.INET,
    flags: ServiceFlag = ServiceFlag.HASHED,
) -> Service:
    total = sum(rs.stats.conns for rs in rss if rs.stats)
    return Service(
        key=ServiceKey(family, proto, ip_address(addr) if addr else None, port, fwmark),
        scheduler=sched,
        flags=flags | (ServiceFlag.PERSISTENT if persistence else ServiceFlag(0)),
        persistence=persistence,
        real_servers=tuple(rss),
        stats=Stats(total, total * 5, total * 5, total * 322, total * 368),
        rates=Rates(16, 81, 81, 5238, 5986),
    )


def nat_snapshot(**changes: object) -> Snapshot:
    """The NAT director of the fixture, read via netlink, with everything filled."""
    services = (
        _svc(
            Protocol.TCP,
            V6,
            80,
            "rr",
            [
                _rs("2001:2:0:1::13", 80, 0, 4, 4),
                _rs("2001:2:0:1::12", 80, 0, 4, 4),
                _rs("2001:2:0:1::11", 80, 0, 4, 4),
            ],
            family=Family.INET6,
        ),
        _svc(
            Protocol.UDP,
            V4,
            53,
            "sh",
            [_rs("198.18.1.11", 53, 0, 0, 0)],
            flags=ServiceFlag.HASHED | ServiceFlag.SCHED1,
        ),
        _svc(
            Protocol.TCP,
            V4,
            21,
            "rr",
            [
                _rs("198.18.1.13", 21, 0, 10, 4, 4),
                _rs("198.18.1.12", 21, 0, 10, 4, 4),
                _rs("198.18.1.11", 21, 0, 10, 4, 4),
            ],
            persistence=Persistence(120, None, 32),
        ),
        _svc(
            Protocol.TCP,
            V4,
            80,
            "rr",
            [
                _rs("198.18.1.13", 80, 0, 134, 134),
                _rs("198.18.1.12", 80, 0, 133, 133),
                _rs("198.18.1.11", 80, 0, 133, 133),
            ],
        ),
        _svc(
            None,
            None,
            0,
            "wlc",
            [_rs("198.18.1.21", 0, 2, 1, 7)],
            fwmark=5,
            family=None,
            flags=ServiceFlag.HASHED | ServiceFlag.ONEPACKET,
        ),
    )
    vip, vip6 = ip_address(V4), ip_address(V6)

    def key(
        proto: str,
        vaddr: object,
        vport: int,
        dest: str,
        state: str,
        template: bool = False,
        origin: Origin = Origin.LOCAL,
        fwmark: int = 0,
    ) -> ConnCountKey:
        return ConnCountKey(
            proto,
            vaddr,
            vport,
            fwmark,
            ip_address(dest),
            vport,
            state,  # type: ignore[arg-type]
            template,
            origin,
        )

    counts = {
        key("TCP", vip, 80, "198.18.1.11", "TIME_WAIT"): 133,
        key("TCP", vip, 80, "198.18.1.12", "TIME_WAIT"): 133,
        key("TCP", vip, 80, "198.18.1.13", "TIME_WAIT"): 131,
        key("TCP", vip, 80, "198.18.1.13", "ESTABLISHED", origin=Origin.SYNC): 3,
        key("TCP", vip, 21, "198.18.1.11", "TIME_WAIT"): 10,
        key("TCP", vip, 0, "198.18.1.11", "NONE", template=True): 4,
        key("TCP", vip6, 80, "2001:2:0:1::11", "TIME_WAIT"): 4,
        key("IP", None, 0, "198.18.1.21", "NONE", template=True, fwmark=5): 1,
    }
    snap = Snapshot(
        loaded=True,
        via="netlink",
        version="1.2.1",
        conn_table_size=4096,
        services=services,
        totals=Stats(0x1A8, 0x8C1, 0x8EF, 0x2346F, 0x291CE),
        total_rates=Rates(0x16, 0x72, 0x74, 0x1CD5, 0x213F),
        conns=ConnSummary(counts, sum(counts.values())),
        sysctls={"am_droprate": (10,), "sync_threshold": (3, 50), "conntrack": (1,)},
        timeouts=Timeouts(900, 120, 300),
        daemons=(Daemon(DaemonState.MASTER, "e0", 7, 1472, ip_address("224.0.0.81"), 8848, 1),),
        slab=Slab(912, 912, 320, 12, 1, 288),
        failures=(),
        durations_s={
            "services": 0.0025,
            "stats": 0.0005,
            "conns": 0.125,
            "sysctls": 0.001,
            "slab": 0.0005,
            "daemons": 0.00025,
            "timeouts": 0.00025,
            "info": 0.00025,
        },
    )
    return _replace(snap, **changes)


def _replace(snap: Snapshot, **changes: object) -> Snapshot:
    from dataclasses import replace

    return replace(snap, **changes)  # type: ignore[arg-type]


def failing_snapshot() -> Snapshot:
    """Conn table and slab failed; the rest is there."""
    return nat_snapshot(
        conns=None,
        slab=None,
        failures=(
            SourceFailure("conns", "net/ip_vs_conn line 3: expected 10 fields, got 2"),
            SourceFailure("slab", "Permission denied /proc/slabinfo"),
        ),
    )


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_snapshot() -> Callable[..., Snapshot]:
    return nat_snapshot


@pytest.fixture
def broken_snapshot() -> Snapshot:
    return failing_snapshot()


@pytest.fixture(scope="session")
def bench_export() -> ModuleType:
    """bench/bench_export.py, for its /proc tree writer."""
    spec = importlib.util.spec_from_file_location("bench_export", ROOT / "bench/bench_export.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool missing: make test installs Debian's prometheus package")
    return path


@pytest.fixture(scope="session")
def check_metrics(promtool: str) -> Callable[[bytes], subprocess.CompletedProcess[bytes]]:
    """`promtool check metrics` on an exposition text."""

    def run(text: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
        )

    return run
