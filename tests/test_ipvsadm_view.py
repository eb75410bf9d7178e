"""The ipvsadm text views against ipvsadm 1.31's own output of the same state."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from lvsprobe.ipvsadm_view import View, format_list, largenum, sort_services
from lvsprobe.model import (
    Family,
    Forward,
    Persistence,
    Protocol,
    RealServer,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    Stats,
)


def test_largenum_units_and_exact() -> None:
    assert largenum(99_999_999, exact=False) == " 99999999"
    assert largenum(523_123_456, exact=False) == "  523123K"
    assert largenum(24_273_000_000, exact=False) == "   24273M"
    assert largenum(123_456_789_012, exact=True) == " 123456789012"
    assert largenum(12, exact=True) == "       12"


def _svc(port: int, proto: Protocol, addr: str, fwmark: int = 0) -> Service:
    ip = ipaddress.ip_address(addr)
    fam = Family.INET if ip.version == 4 else Family.INET6
    return Service(
        key=ServiceKey(fam, None if fwmark else proto, None if fwmark else ip, port, fwmark),
        scheduler="rr",
        flags=ServiceFlag.HASHED,
        persistence=None,
        real_servers=(RealServer(ip, port, Forward.ROUTE, 1, 0, 0),),
    )


def test_sort_order_is_ipvsadms() -> None:
    v6 = _svc(80, Protocol.TCP, "2001:2::100")
    udp = _svc(53, Protocol.UDP, "198.18.1.100")
    tcp80 = _svc(80, Protocol.TCP, "198.18.1.100")
    tcp21 = _svc(21, Protocol.TCP, "198.18.1.100")
    fwm = _svc(0, Protocol.TCP, "198.18.1.100", fwmark=1)
    got = sort_services([fwm, v6, udp, tcp80, tcp21])
    assert got == [tcp21, tcp80, udp, v6, fwm]


def test_persistent_mask_and_ops_rendering() -> None:
    svc = Service(
        key=ServiceKey(Family.INET, Protocol.UDP, ipaddress.ip_address("10.0.0.1"), 53),
        scheduler="sh",
        flags=ServiceFlag.HASHED
        | ServiceFlag.PERSISTENT
        | ServiceFlag.ONEPACKET
        | ServiceFlag.SCHED1,
        persistence=Persistence(timeout_s=300, timeout_jiffies=None, prefix_len=24),
        real_servers=(),
    )
    snap = Snapshot(
        loaded=True, via="netlink", version="1.2.1", conn_table_size=4096, services=(svc,)
    )
    out = format_list(snap).splitlines()
    assert out[3] == "UDP  10.0.0.1:53 sh (sh-fallback) persistent 300 mask 255.255.255.0 ops"


def test_stats_view_matches_ipvsadm_for_a_built_snapshot(nat_ipvsadm: Path) -> None:
    expected = (nat_ipvsadm / "ipvsadm_-Ln_--exact_--stats.txt").read_text().splitlines()
    # the :53 UDP service of the capture, built by hand
    udp = Service(
        key=ServiceKey(Family.INET, Protocol.UDP, ipaddress.ip_address("198.18.1.100"), 53),
        scheduler="sh",
        flags=ServiceFlag.HASHED,
        persistence=None,
        real_servers=(
            RealServer(
                ipaddress.ip_address("198.18.1.11"),
                53,
                Forward.MASQ,
                1,
                0,
                0,
                stats=Stats(0, 0, 0, 0, 0),
            ),
        ),
        stats=Stats(0, 0, 0, 0, 0),
    )
    snap = Snapshot(
        loaded=True, via="netlink", version="1.2.1", conn_table_size=4096, services=(udp,)
    )
    out = format_list(snap, View.STATS, exact=True).splitlines()
    assert out[:3] == expected[:3]
    assert out[3:] == [
        line for line in expected if "198.18.1.100:53" in line or "198.18.1.11:53" in line
    ]
