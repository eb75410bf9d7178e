"""/proc/net/ip_vs: golden against ipvsadm, hand-written era samples, hostile tables."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from lvsprobe.errors import IPVSUnavailable, ParseError
from lvsprobe.kernel.procfs.ip_vs import parse_ip_vs, read_ip_vs, read_ip_vs_header
from lvsprobe.model import Family, Forward, Protocol, ServiceFlag

from .ipvsadm_views import services_ln

HZ_DEBIAN = 250  # CONFIG_HZ of Debian 12's 6.1 kernel, where the fixtures were taken


def test_golden_against_ipvsadm_ln(nat_proc: Path, nat_ipvsadm: Path) -> None:
    table = read_ip_vs(nat_proc)
    assert (table.version, table.conn_table_size) == ("1.2.1", 4096)
    oracle = services_ln(nat_ipvsadm / "ipvsadm_-Ln.txt")
    assert len(table.services) == len(oracle) == 4
    for svc in table.services:
        assert svc.key.protocol is not None and svc.key.address is not None
        want = oracle[(svc.key.protocol.name, svc.key.address, svc.key.port)]
        assert svc.scheduler == want["scheduler"]
        assert ServiceFlag.HASHED in svc.flags
        if want["persistent_s"] is None:
            assert svc.persistence is None
            assert ServiceFlag.PERSISTENT not in svc.flags
        else:
            assert svc.persistence is not None
            assert svc.persistence.timeout_jiffies == want["persistent_s"] * HZ_DEBIAN  # type: ignore[operator]
            assert svc.persistence.timeout_s is None
            assert svc.persistence.prefix_len == 32
            assert ServiceFlag.PERSISTENT in svc.flags
        got = sorted(
            (d.address, d.port, d.forward.ipvsadm_name, d.weight, d.active_conns, d.inactive_conns)
            for d in svc.real_servers
        )
        assert got == sorted(want["dests"])  # type: ignore[type-var]


def test_real_servers_keep_file_order(nat_proc: Path) -> None:
    svc = read_ip_vs(nat_proc).services[0]
    assert [str(d.address) for d in svc.real_servers] == [
        "2001:2:0:1::13",
        "2001:2:0:1::12",
        "2001:2:0:1::11",
    ]
    assert svc.key.family is Family.INET6
    assert all(d.family is Family.INET6 for d in svc.real_servers)


# Rendered from the format strings of ip_vs_info_seq_show (identical in K4.0 and K6.12);
# `⏎`-less trailing blanks are kept as the kernel prints them.
ERA_SAMPLE = (
    "IP Virtual Server version 1.2.1 (size=4096)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
    "TCP  0A000001:0050 rr  \n"
    "  -> C0A8010A:0050      Route   1      3          5         \n"
    "  -> C0A8010B:1F90      Masq    2      0          1         \n"
    "UDP  0A000001:0035 rr ops  \n"
    "  -> C0A8010C:0035      Local   1      0          0         \n"
    "TCP  0A000002:01BB wlc  persistent 75000 FFFFFF00\n"
    "  -> C0A80114:01BB      Route   1      12         40        \n"
    "TCP  [2001:0db8:0000:0000:0000:0000:0000:0001]:01BB wlc persistent 75000 80000000\n"
    "  -> [2001:0db8:0000:0000:0000:0000:0000:0010]:01BB      Route   1      0          2   \n"
    "SCTP  0A000003:0F1C sh \n"
    "FWM  00000001 sh ops persistent 15000 FFFFFFFF\n"
    "  -> C0A8010D:0000      Tunnel  1      7          0         \n"
    "FWM  00000002 rr persistent 15000 00000040\n"
    "  -> [2001:0db8:0000:0000:0000:0000:0000:0011]:0000      Route   0      0          0  \n"
    "FWM  00000003 rr \n"
)


def test_era_sample_every_feature() -> None:
    table = parse_ip_vs(ERA_SAMPLE)
    tcp, udp, pers, v6, sctp, fwm4, fwm6, fwm_empty = table.services
    assert tcp.key.address == ipaddress.IPv4Address("10.0.0.1") and tcp.key.port == 80
    assert [d.forward for d in tcp.real_servers] == [Forward.ROUTE, Forward.MASQ]
    assert tcp.real_servers[1].port == 8080 and tcp.real_servers[1].weight == 2
    assert (tcp.real_servers[0].active_conns, tcp.real_servers[0].inactive_conns) == (3, 5)
    assert udp.key.protocol is Protocol.UDP and udp.one_packet
    assert udp.real_servers[0].forward is Forward.LOCAL
    assert pers.persistence is not None and pers.persistence.prefix_len == 24
    assert pers.persistence.timeout_jiffies == 75000
    # IPv6: the netmask field holds ntohl(128) on a little-endian host.
    assert v6.persistence is not None and v6.persistence.prefix_len == 128
    assert v6.key.address == ipaddress.IPv6Address("2001:db8::1")
    assert sctp.key.protocol is Protocol.SCTP and sctp.real_servers == ()
    assert fwm4.key.fwmark == 1 and fwm4.key.family is Family.INET
    assert fwm4.key.protocol is None and fwm4.key.address is None and fwm4.key.port == 0
    assert fwm4.flags == ServiceFlag.HASHED | ServiceFlag.PERSISTENT | ServiceFlag.ONEPACKET
    assert fwm4.real_servers[0].forward is Forward.TUNNEL
    # Big-endian hosts show the IPv6 prefix length unswapped: 00000040 is /64.
    assert fwm6.key.family is Family.INET6
    assert fwm6.persistence is not None and fwm6.persistence.prefix_len == 64
    assert fwm_empty.key.family is None and fwm_empty.key.fwmark == 3


def test_negative_persistent_is_unsigned_jiffies() -> None:
    text = ERA_SAMPLE.replace("persistent 75000 FFFFFF00", "persistent -1794967296 FFFFFF00")
    pers = parse_ip_vs(text).services[2]
    assert pers.persistence is not None
    assert pers.persistence.timeout_jiffies == 2_500_000_000


def test_header_only_is_empty_table() -> None:
    table = parse_ip_vs("\n".join(ERA_SAMPLE.splitlines()[:3]) + "\n")
    assert table.services == ()


def test_missing_file_is_ipvs_unavailable(tmp_path: Path) -> None:
    with pytest.raises(IPVSUnavailable, match="IPVS is not loaded"):
        read_ip_vs(tmp_path)


HEAD = "\n".join(ERA_SAMPLE.splitlines()[:3]) + "\n"


def test_the_header_read_takes_the_first_page_only(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    # a body the whole parse refuses, past the first page
    (tmp_path / "net/ip_vs").write_text(HEAD + "TCP  zz:zz rr\n" * 10_000)
    table = read_ip_vs_header(tmp_path)
    assert (table.version, table.conn_table_size, table.services) == ("1.2.1", 4096, ())
    with pytest.raises(ParseError, match="line 4"):
        read_ip_vs(tmp_path)


@pytest.mark.parametrize(
    ("text", "error"),
    [("", "empty file"), ("IP Virtual Server version 1.2\n", "line 1"), (HEAD[:-30], "line 3")],
)
def test_a_bad_header_is_named_by_the_header_read(tmp_path: Path, text: str, error: str) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/ip_vs").write_text(text)
    with pytest.raises(ParseError, match=error):
        read_ip_vs_header(tmp_path)
    with pytest.raises(IPVSUnavailable):
        read_ip_vs_header(tmp_path / "absent")


@pytest.mark.parametrize(
    ("text", "line_no", "reason"),
    [
        ("", None, "empty file"),
        ("IP Virtual Server version 1.2.1\n", 1, "IP Virtual Server version"),
        (HEAD[:60], 2, "header"),
        (HEAD + "  -> C0A8010A:0050      Route   1      3          5\n", 4, "before any service"),
        (HEAD + "TCP  0A000001:0050 rr\n  -> C0A8:0050 Masq 1 0 0\n", 5, "IPv4 address"),
        (HEAD + "TCP  0A000001:0050 rr\n  -> C0A8010A:0050 Masq 1 0\n", 5, "expected 6 fields"),
        (HEAD + "TCP  0A000001:0050 rr\n  -> C0A8010A:0050 Bypass 1 0 0\n", 5, "forwarding"),
        (HEAD + "TCP  0A000001:0050 rr\n  -> C0A8010A:0050 Masq -1 0 0\n", 5, "out of range"),
        (HEAD + "TCP  0A000001:0050 rr\n  -> C0A8010A:0050 Masq 1 99999999999 0\n", 5, "range"),
        (HEAD + "ICMP  0A000001:0050 rr\n", 4, "unknown service protocol"),
        (HEAD + "TCP  0A000001:50 rr\n", 4, "bad port"),
        (HEAD + "TCP  0A000001:0050\n", 4, "at least 3 fields"),
        (HEAD + "TCP  0A000001:0050 rr persistent 300\n", 4, "unexpected service flags"),
        (HEAD + "TCP  0A000001:0050 rr persistent 300 FF00FF00\n", 4, "not contiguous"),
        (HEAD + "TCP  [2001:0db8::1]:0050 rr\n", 4, "IPv6 address"),
        (
            HEAD + "TCP  [2001:0db8:0000:0000:0000:0000:0000:0001]:01BB rr persistent 1 0000FFFF\n",
            4,
            "IPv6 prefix",
        ),
        (HEAD + "FWM  00000000 rr\n", 4, "mark 0"),
        (HEAD + "FWM  1FFFFFFFF rr\n", 4, "exceeds 32 bits"),
        (HEAD + "TCP  0A000001:0050 r\x00r\n", 4, "scheduler"),
        (HEAD + "\n", 4, "at least 3 fields"),
    ],
)
def test_hostile_tables(text: str, line_no: int | None, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        parse_ip_vs(text)
    assert info.value.line_no == line_no
    assert info.value.source == "net/ip_vs"
    assert str(info.value).startswith("net/ip_vs")
