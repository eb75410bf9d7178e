"""/proc/net/ip_vs_conn(_sync): golden against ipvsadm -Lnc, era samples, hostile tables."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from lvsprobe.errors import IPVSUnavailable, ParseError
from lvsprobe.kernel.procfs import ip_vs_conn, ip_vs_conn_sync
from lvsprobe.kernel.procfs.ip_vs_conn import (
    NO_DEST,
    count_states,
    iter_ip_vs_conn,
    read_ip_vs_conn,
    summarize_ip_vs_conn,
)
from lvsprobe.model import Conn, ConnCountKey, Origin

from .ipvsadm_views import conns_lnc

KERNEL_61 = Path(__file__).parents[2] / "fixtures" / "kernel-6.1"
HEADER = b"Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData\n"
SYNC_HEADER = b"Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"


def key_of(conn: Conn, per_real_server: bool = True) -> ConnCountKey:
    """The summary key, computed independently of the implementation."""
    return ConnCountKey(
        protocol=conn.protocol,
        virtual_address=conn.virtual_address,
        virtual_port=conn.virtual_port,
        fwmark=conn.fwmark,
        dest_address=conn.dest_address if per_real_server else NO_DEST,
        dest_port=conn.dest_port if per_real_server else 0,
        state=conn.state,
        template=conn.is_template,
        origin=conn.origin,
    )


def assert_views_agree(data: bytes) -> list[Conn]:
    """iter, count_states and summarize (both granularities) tell the same story."""
    conns = list(iter_ip_vs_conn(data))
    assert count_states(data) == Counter((c.protocol, c.state) for c in conns)
    for per_rs in (True, False):
        summary = summarize_ip_vs_conn(data, per_real_server=per_rs)
        assert dict(summary.counts) == Counter(key_of(c, per_rs) for c in conns)
        assert summary.total == len(conns)
    return conns


@pytest.mark.parametrize("topology", ["nat", "nat-backup"])
def test_golden_against_ipvsadm_lnc(topology: str) -> None:
    data = read_ip_vs_conn(KERNEL_61 / topology / "proc")
    oracle_path = KERNEL_61 / topology / "ipvsadm" / "ipvsadm_-Lnc.txt"
    if not oracle_path.exists():
        oracle_path = KERNEL_61 / topology / "ipvsadm_-Lnc.txt"
    conns = assert_views_agree(data)
    oracle = conns_lnc(oracle_path)
    ours = [
        (
            c.protocol,
            c.state,
            (c.client_address, c.client_port),
            (c.virtual_address, c.virtual_port),
            (c.dest_address, c.dest_port),
        )
        for c in conns
    ]
    # Same rows in the same (hash-table) order; ipvsadm read the file a moment later.
    assert ours == oracle
    minutes_seconds = [line.split()[1] for line in oracle_path.read_text().splitlines()[2:]]
    for conn, shown in zip(conns, minutes_seconds, strict=True):
        m, s = shown.split(":")
        assert 0 <= conn.expires_s - (int(m) * 60 + int(s)) <= 10


def test_fixture_templates_and_families() -> None:
    data = read_ip_vs_conn(KERNEL_61 / "nat" / "proc")
    conns = list(iter_ip_vs_conn(data))
    assert Counter(c.state for c in conns) == {"TIME_WAIT": 436, "ASSURED": 12, "LISTEN": 6}
    # ftp persistence: <TCP, caddr, 0, vaddr, 0, daddr, 0> templates in ASSURED
    templates = [c for c in conns if c.is_template]
    assert len(templates) == 12
    assert all(c.client_port == c.virtual_port == c.dest_port == 0 for c in templates)
    assert summarize_ip_vs_conn(data).templates == 12
    assert sum(c.client_address.version == 6 for c in conns) == 12
    assert all(c.pe_name is None and c.origin is None for c in conns)


def test_sync_file_matches_conn_file_and_says_local() -> None:
    root = KERNEL_61 / "nat" / "proc"
    plain = list(iter_ip_vs_conn(read_ip_vs_conn(root)))
    data = ip_vs_conn_sync.read_ip_vs_conn_sync(root)
    synced = list(ip_vs_conn_sync.iter_ip_vs_conn_sync(data))
    strip = [(c.protocol, c.client_address, c.client_port, c.dest_address, c.state) for c in plain]
    assert strip == [
        (c.protocol, c.client_address, c.client_port, c.dest_address, c.state) for c in synced
    ]
    assert {c.origin for c in synced} == {Origin.LOCAL}
    assert ip_vs_conn_sync.count_states_by_origin(data) == {
        ("TCP", "TIME_WAIT", Origin.LOCAL): 436,
        ("TCP", "ASSURED", Origin.LOCAL): 12,
        ("TCP", "LISTEN", Origin.LOCAL): 6,
    }
    summary = ip_vs_conn_sync.summarize_ip_vs_conn_sync(data)
    assert {k.origin for k in summary.counts} == {Origin.LOCAL}
    assert ip_vs_conn_sync.count_states(data) == count_states(read_ip_vs_conn(root))


# Rendered from ip_vs_conn_seq_show's format strings (K4.19 … K6.12), one row per feature.
MODERN = HEADER + (
    b"TCP CB007107 C93A 0A000001 0050 C0A8010A 0050 ESTABLISHED     897\n"
    b"TCP CB007108 9C56 0A000001 0050 C0A8010B 1F90 TIME_WAIT       118\n"
    b"UDP CB007109 80E8 0A000001 0035 C0A8010C 0035 UDP             299\n"
    b"TCP CB007107 0000 0A000002 01BB C0A80114 01BB ASSURED         287\n"
    b"IP  CB007100 0000 00000001 0000 C0A8010D 0000 NONE             59\n"
    b"SCTP CB00710A 0F1C 0A000003 0F1C C0A8011E 0F1C ESTABLISHED     899\n"
    b"SCTP CB00710A 0F1D 0A000003 0F1C C0A8011E 0F1C C-ECHOED         59\n"
    b"UDP CB00710B 13C4 0A000004 13C4 C0A80128 13C4 UDP             178"
    b" sip a84b4c76e66710@pc33.example.com\n"
    b"TCP 2001:0db8:00ff:0000:0000:0000:0000:0005 C350 2001:0db8:0000:0000:0000:0000:0000:0001 01BB"
    b" 2001:0db8:0000:0000:0000:0000:0000:0010 01BB SYN_RECV         59\n"
    b"IP  2001:0db8:00ff:0000:0000:0000:0000:0000 0000 0000:0007:0000:0000:0000:0000:0000:0000 0000"
    b" 2001:0db8:0000:0000:0000:0000:0000:0010 0000 ASSURED         200\n"
    b"TCP CB00710C A028 0A000001 0050 2001:0db8:0000:0000:0000:0000:0000:0020 0050"
    b" ESTABLISHED     900\n"
    b"IP_50 CB00710D 0000 0A000001 0000 C0A8010A 0000 ERR!             10\n"
)


def test_modern_sample_every_column() -> None:
    conns = assert_views_agree(MODERN)
    est, tw, udp, tpl, fwm, sctp, sctp2, sip, v6, fwm6, hetero, esp = conns
    assert est == Conn(
        protocol="TCP",
        client_address=ipaddress.IPv4Address("203.0.113.7"),
        client_port=0xC93A,
        virtual_address=ipaddress.IPv4Address("10.0.0.1"),
        virtual_port=80,
        dest_address=ipaddress.IPv4Address("192.168.1.10"),
        dest_port=80,
        state="ESTABLISHED",
        expires_s=897,
    )
    assert tw.dest_port == 8080 and udp.state == "UDP"
    assert tpl.is_template and tpl.state == "ASSURED"
    assert fwm.is_template and fwm.virtual_address is None and fwm.fwmark == 1
    assert sctp.protocol == "SCTP" and sctp2.state == "C-ECHOED"
    assert (sip.pe_name, sip.pe_data) == ("sip", "a84b4c76e66710@pc33.example.com")
    assert v6.client_address == ipaddress.IPv6Address("2001:db8:ff::5")
    assert v6.virtual_address == ipaddress.IPv6Address("2001:db8::1")
    assert fwm6.virtual_address is None and fwm6.fwmark == 7
    # DestIP follows cp->daf: an IPv4 connection tunnelled to an IPv6 real server.
    assert hetero.client_address.version == 4 and hetero.dest_address.version == 6
    assert esp.protocol == "IP_50" and esp.state == "ERR!"
    assert count_states(MODERN)[("SCTP", "ESTABLISHED")] == 1


def test_k40_sample_wrapped_expires_and_protocol_named_template_states() -> None:
    # K4.0: Expires is `%7lu` of (expires - jiffies) / HZ, wrapped for an overdue timer;
    # a TCP template shows TCP's NONE, a UDP template shows "UDP".
    data = HEADER + (
        b"TCP C0A80001 D431 0A000001 0050 C0A8010A 0050 TIME_WAIT   73786976294838206\n"
        b"TCP C0A80000 0000 0A000001 0050 C0A8010A 0050 NONE            300\n"
        b"UDP C0A80000 0000 0A000001 0035 C0A8010A 0035 UDP             300\n"
    )
    overdue, tcp_template, udp_template = assert_views_agree(data)
    assert overdue.expires_s == 0
    assert tcp_template.is_template
    assert udp_template.state == "UDP" and udp_template.client_port == 0
    assert udp_template.is_template  # K4.0 named a UDP template's state by UDP's table
    assert summarize_ip_vs_conn(data).templates == 2


def test_sync_sample_origins() -> None:
    data = SYNC_HEADER + (
        b"TCP CB007107 C93A 0A000001 0050 C0A8010A 0050 ESTABLISHED LOCAL      897\n"
        b"TCP CB00710C A028 0A000001 0050 C0A8010B 1F90 ESTABLISHED SYNC       180\n"
        b"TCP CB00710C 0000 0A000001 0050 C0A8010B 1F90 ASSURED     SYNC       180\n"
    )
    conns = list(ip_vs_conn_sync.iter_ip_vs_conn_sync(data))
    assert [c.origin for c in conns] == [Origin.LOCAL, Origin.SYNC, Origin.SYNC]
    assert ip_vs_conn_sync.count_states_by_origin(data) == {
        ("TCP", "ESTABLISHED", Origin.LOCAL): 1,
        ("TCP", "ESTABLISHED", Origin.SYNC): 1,
        ("TCP", "ASSURED", Origin.SYNC): 1,
    }
    summary = ip_vs_conn_sync.summarize_ip_vs_conn_sync(data)
    assert dict(summary.counts) == Counter(key_of(c) for c in conns)
    assert summary.templates == 1


def test_header_only_is_empty() -> None:
    assert assert_views_agree(HEADER) == []
    assert summarize_ip_vs_conn(HEADER).total == 0


def test_unterminated_last_line_is_read() -> None:
    assert len(assert_views_agree(MODERN.rstrip(b"\n"))) == 12


def test_reader(tmp_path: Path) -> None:
    with pytest.raises(IPVSUnavailable):
        read_ip_vs_conn(tmp_path)
    (tmp_path / "net").mkdir()
    (tmp_path / "net/ip_vs_conn").write_bytes(MODERN)
    assert read_ip_vs_conn(tmp_path) == MODERN


def test_streamed_reader_gives_the_same_summary(tmp_path: Path) -> None:
    with pytest.raises(IPVSUnavailable):
        next(ip_vs_conn.stream_ip_vs_conn(tmp_path))
    (tmp_path / "net").mkdir()
    (tmp_path / "net/ip_vs_conn").write_bytes(MODERN)
    (tmp_path / "net/ip_vs_conn_sync").write_bytes(SYNC_HEADER)
    assert b"".join(ip_vs_conn.stream_ip_vs_conn(tmp_path)) == MODERN
    for per_rs in (True, False):
        streamed = summarize_ip_vs_conn(
            ip_vs_conn.stream_ip_vs_conn(tmp_path), per_real_server=per_rs
        )
        assert streamed == summarize_ip_vs_conn(MODERN, per_real_server=per_rs)
    synced = ip_vs_conn_sync.stream_ip_vs_conn_sync(tmp_path)
    assert ip_vs_conn_sync.summarize_ip_vs_conn_sync(synced).total == 0
    (tmp_path / "net/ip_vs_conn").write_bytes(b"")
    with pytest.raises(ParseError, match="empty file"):
        summarize_ip_vs_conn(ip_vs_conn.stream_ip_vs_conn(tmp_path))


ROW = b"TCP CB007107 C93A 0A000001 0050 C0A8010A 0050 ESTABLISHED     897\n"
READERS: list[Callable[[bytes], object]] = [
    lambda d: list(iter_ip_vs_conn(d)),
    count_states,
    lambda d: summarize_ip_vs_conn(d),
    lambda d: summarize_ip_vs_conn(d, per_real_server=False),
]
HOSTILE = [
    (b"", None, "empty file"),
    (b"\x00\xff\xfe garbage\n", 1, "expected the header"),
    (HEADER + ROW + b"TCP CB007107 C93A 0A000001 0050 C0A8010A\n", 3, "expected 9 fields, got 6"),
    (HEADER + ROW + ROW[:40] + b"\n", 3, "expected 9 fields"),
    (HEADER + ROW.replace(b"CB007107", b"CB00710"), 2, "bad IPv4 address"),
    (HEADER + ROW.replace(b"CB007107", b"CB00710G"), 2, "bad IPv4 address"),
    (HEADER + ROW.replace(b"C93A", b"C93"), 2, "bad port"),
    (HEADER + ROW.replace(b"C93A", b"C93AA"), 2, "bad port"),
    (HEADER + ROW.replace(b"ESTABLISHED", b"ESTABLISHEX"), 2, "unknown TCP state"),
    (HEADER + ROW.replace(b"TCP", b"XYZ"), 2, "unknown protocol"),
    (HEADER + ROW.replace(b"TCP", b"IP_999"), 2, "unknown protocol"),
    (HEADER + ROW.replace(b"897", b"-897"), 2, "bad Expires"),
    (HEADER + ROW.replace(b"897", b"99999999999999999999999"), 2, "out of range"),
    (HEADER + ROW.replace(b"897", b"8x7"), 2, "bad Expires"),
    (HEADER + ROW.replace(b"897", b"897 2 x"), 2, "bad PEName"),
    (HEADER + ROW + b"\n" + ROW, 3, "expected 9 fields, got 0"),
    (
        HEADER + ROW.replace(b"0A000001", b"2001:0db8:0000:0000:0000:0000:0000:0001"),
        2,
        "different address families",
    ),
    (HEADER + ROW.replace(b"C0A8010A", b"2001:db8::1"), 2, "bad IPv6 address"),
    (HEADER + ROW.replace(b"TCP", b"IP ").replace(b"ESTABLISHED", b"NONE       "), 2, None),
    (HEADER + ROW.replace(b"C93A", b"\x00\x00\x00\x00"), 2, "bad port"),
    (HEADER + b"\xff" * 300 + b"\n", 2, "expected 9 fields"),
]


@pytest.mark.parametrize("reader", READERS, ids=["iter", "count", "summary", "summary-svc"])
@pytest.mark.parametrize(("data", "line_no", "reason"), HOSTILE)
def test_hostile_tables(
    reader: Callable[[bytes], object], data: bytes, line_no: int | None, reason: str | None
) -> None:
    if reason is None:  # a valid oddity: an IP row with a plain VIP is an fwmark template
        reader(data)
        return
    with pytest.raises(ParseError, match=reason) as info:
        reader(data)
    assert info.value.source == "net/ip_vs_conn"
    assert info.value.line_no == line_no


def test_sync_hostile_origin() -> None:
    data = SYNC_HEADER + b"TCP CB007107 C93A 0A000001 0050 C0A8010A 0050 NONE LOCALX 1\n"
    for reader in (
        lambda d: list(ip_vs_conn_sync.iter_ip_vs_conn_sync(d)),
        ip_vs_conn_sync.count_states,
        ip_vs_conn_sync.summarize_ip_vs_conn_sync,
    ):
        with pytest.raises(ParseError, match="net/ip_vs_conn_sync line 2: bad Origin"):
            reader(data)
    with pytest.raises(ParseError, match="expected the header"):
        ip_vs_conn_sync.count_states(HEADER)
    with pytest.raises(ParseError, match="net/ip_vs_conn_sync line 2: expected 10 fields"):
        ip_vs_conn_sync.count_states(SYNC_HEADER + ROW)


def test_source_name_is_reported() -> None:
    with pytest.raises(ParseError, match="netns-a/ip_vs_conn line 2"):
        ip_vs_conn.count_states(HEADER + b"junk\n", source="netns-a/ip_vs_conn")


def test_expires_within_the_timeouts_ipvsadm_reports(nat_ipvsadm: Path) -> None:
    # `ipvsadm -Ln --timeout` (tcp tcpfin udp) and the fixed per-state defaults
    # (ip_vs_proto_tcp.c); templates count down from the persistence timeout (-p 120).
    tcp, tcpfin, udp = map(
        int, (nat_ipvsadm / "ipvsadm_-Ln_--timeout.txt").read_text().split()[-3:]
    )
    assert (tcp, tcpfin, udp) == (900, 120, 300)
    limit = {"ESTABLISHED": tcp, "FIN_WAIT": tcpfin, "UDP": udp, "TIME_WAIT": 120, "LISTEN": 120}
    persistent_s = 120
    for conn in iter_ip_vs_conn(read_ip_vs_conn(KERNEL_61 / "nat" / "proc")):
        bound = persistent_s if conn.is_template else limit[conn.state]
        assert 0 <= conn.expires_s <= bound
