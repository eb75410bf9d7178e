"""Hypothesis: the columnar strategy for /proc/net/ip_vs real-server lines agrees with the
exact parser, on kernel-format input and on near-valid hostile input (the connection
table's strategies are in test_conn_strategies.py)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from ipaddress import IPv4Address
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn_count, _hex, ip_vs
from lvsprobe.model import Family, Forward, RealServer

from .test_properties import outcome


@st.composite
def real_server_lines(draw: st.DrawFn) -> str:
    """IPv4 real-server lines as the kernel prints them, numbers in and out of range, and
    some with one character changed (near-valid hostile input)."""
    addr = draw(st.integers(0, 2**32 - 1))
    number = st.integers(-(2**31) - 5, 2**31 + 5) | st.integers(-3, 3)
    forward = draw(st.sampled_from(["Masq", "Local", "Tunnel", "Route", "Bypass"]))
    weight, active, inactive = draw(number), draw(number), draw(number)
    port = draw(st.integers(0, 65535))
    numbers = f"{weight:<6d} {active:<10d} {inactive:<10d}"
    line = f"  -> {addr:08X}:{port:04X}      {forward:<7s} {numbers}"
    if draw(st.booleans()):
        at = draw(st.integers(0, len(line) - 1))
        line = line[:at] + draw(st.sampled_from(" -0A9aG:\t>é")) + line[at + 1 :]
    return line


IP_VS_HEAD = (
    "IP Virtual Server version 1.2.1 (size=4096)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n"
    "TCP  0A000001:0050 rr \n"
)


def _take_nothing(self: object, block: str) -> tuple[int, list[tuple[int, str]]]:
    lines = _hex.split_lines(block)
    return len(lines), list(enumerate(lines))


@settings(max_examples=300, deadline=None)
@given(lines=st.lists(real_server_lines(), min_size=1, max_size=5))
@pytest.mark.parametrize("numpy_min_chars", [0, 1 << 40], ids=["columnar", "exact"])
def test_fast_real_server_lines_agree_with_exact(lines: list[str], numpy_min_chars: int) -> None:
    text = IP_VS_HEAD + "".join(line + "\n" for line in lines)
    with patch.object(ip_vs, "NUMPY_MIN_CHARS", numpy_min_chars):
        fast = outcome(lambda: ip_vs.parse_ip_vs(text))
    with patch.object(ip_vs._Ipv4RealServers, "take", _take_nothing):
        exact = outcome(lambda: ip_vs.parse_ip_vs(text))
    if isinstance(exact, ParseError):
        assert isinstance(fast, ParseError)
        assert (fast.line_no, fast.reason) == (exact.line_no, exact.reason)
    else:
        assert fast == exact
        assert Counter(map(type, fast.services[0].real_servers)) == Counter(  # type: ignore[attr-defined]
            map(type, exact.services[0].real_servers)  # type: ignore[attr-defined]
        )


def test_fast_paths_take_blocks_of_many_services() -> None:
    """Several blocks, services split across them, exotic lines in between: the columnar
    strategy gives the same table as the exact parser."""
    numpy_min_chars = 0
    body = []
    for svc in range(300):
        body.append(f"TCP  0A0000{svc % 256:02X}:{svc:04X} wlc \n")
        for rs in range(svc % 7):
            body.append(
                f"  -> AC10{svc % 256:02X}{rs:02X}:0050      Route   "
                f"{rs:<6d} {svc:<10d} 0         \n"
            )
        if svc % 50 == 0:
            body.append(
                "  -> [2001:0002:0000:0001:0000:0000:0000:0011]:0050"
                "      Route   2      0          0\n"
            )
            body.append(
                "  -> c0a8010a:0050      Masq    1      0          0         \n"
            )  # lower case
            body.append("  -> C0A8010A:0050      Masq    1234567 0          0\n")  # wide weight
    text = IP_VS_HEAD.split("TCP")[0] + "".join(body)
    with (
        patch.object(ip_vs, "BLOCK_CHARS", 1000),
        patch.object(ip_vs, "NUMPY_MIN_CHARS", numpy_min_chars),
    ):
        fast = ip_vs.parse_ip_vs(text)
    with patch.object(ip_vs._Ipv4RealServers, "take", _take_nothing):
        exact = ip_vs.parse_ip_vs(text)
    assert fast == exact
    assert (
        sum(len(svc.real_servers) for svc in fast.services) == sum(s % 7 for s in range(300)) + 18
    )
    # Every service is a range of one table, exotic lines (joined in between) or not.
    table = fast.services[0].real_servers.table
    for number, svc in enumerate(fast.services):
        assert svc.real_servers.table is table
        if number % 7 == 0 and number % 50 != 0:
            assert svc.real_servers == ()


def test_whole_lines_cuts_after_newlines() -> None:
    pieces = [b"ab", b"c\nde", b"f\ng\n", b"", b"h", b"i"]
    assert list(_conn_count.whole_lines(pieces)) == [b"abc\n", b"def\ng\n", b"hi"]
    assert list(_conn_count.whole_lines([])) == []


def test_fast_real_servers_are_the_same_objects_init_makes() -> None:
    text = IP_VS_HEAD + "  -> C0A8010A:0050      Masq    3      1          2         \n"
    (fast,) = ip_vs.parse_ip_vs(text).services[0].real_servers
    made = RealServer(IPv4Address("192.168.1.10"), 80, Forward.MASQ, 3, 1, 2, family=Family.INET)
    assert type(fast) is RealServer
    assert fast == made
    assert hash(fast) == hash(made)
    assert repr(fast) == repr(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.weight = 4  # type: ignore[misc]


def test_fast_and_exact_real_servers_keep_file_order() -> None:
    text = (
        IP_VS_HEAD.replace("TCP  0A000001:0050 rr \n", "FWM  00000001 rr \n")
        + "  -> C0A8010A:0050      Masq    1      0          0         \n"
        + "  -> [2001:0002:0000:0001:0000:0000:0000:0011]:0050      Route   2      0          0\n"
        + "  -> C0A8010B:0050      Masq    3      0          0         \n"
        + "TCP  0A000001:0050 rr \n"
        + "  -> C0A8010C:0050      Masq    4      0          0         \n"
    )
    first, second = ip_vs.parse_ip_vs(text).services
    assert [rs.weight for rs in first.real_servers] == [1, 2, 3]
    assert [rs.family for rs in first.real_servers] == [Family.INET, Family.INET6, Family.INET]
    assert first.key.family is None  # mixed families: unknown
    assert [rs.weight for rs in second.real_servers] == [4]
