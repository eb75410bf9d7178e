"""keepalived_check.data (keepalived 2.2.7's real dumps) and hostile variants of it."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.keepalived.check_data import parse_keepalived_check_data
from lvsprobe.model import Forward, Protocol

CHECK = Path(__file__).parents[1] / "fixtures" / "keepalived-2.2.7" / "check"
ONE_DOWN = (CHECK / "a-one-down.data").read_text()
MIXED = (CHECK / "a-nat-dr-tun.data").read_text()


def test_one_real_server_down() -> None:
    (vs,) = parse_keepalived_check_data(ONE_DOWN)
    assert (vs.address, vs.port, vs.protocol, vs.family) == (
        ipaddress.IPv4Address("198.18.0.100"),
        8080,
        Protocol.TCP,
        4,
    )
    assert (vs.alive, vs.quorum_up, vs.fwmark, vs.group) == (True, True, 0, None)
    up, down = vs.real_servers
    assert (str(up.address), up.port, up.forward, up.weight, up.alive) == (
        "127.0.0.1",
        8081,
        Forward.MASQ,
        2,
        True,
    )
    assert (down.port, down.alive, down.failed_checkers, down.inhibit_on_failure) == (
        8082,
        False,
        1,
        True,
    )


def test_fwmark_dr_and_ipv6_tun() -> None:
    _, fwmark, v6 = parse_keepalived_check_data(MIXED)
    assert (fwmark.address, fwmark.fwmark, fwmark.protocol, fwmark.family) == (None, 7, None, 4)
    assert [rs.forward for rs in fwmark.real_servers] == [Forward.ROUTE]
    assert (str(v6.address), v6.port, v6.family) == ("fd00:198:18::100", 443, 6)
    assert [(str(rs.address), rs.forward) for rs in v6.real_servers] == [
        ("fd00:198:18::2", Forward.TUNNEL)
    ]


def test_no_virtual_server() -> None:
    head = ONE_DOWN.split("------< LVS Topology >------")[0]
    assert parse_keepalived_check_data(head) == ()


def _replace(old: str, new: str) -> str:
    assert old in ONE_DOWN
    return ONE_DOWN.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a checker dump"),
        ("garbage\n", "text before the first section"),
        (
            ONE_DOWN.split("   alive = 1\n   num failed")[0],
            "block without 'num failed checkers'",
        ),  # truncated
        (
            _replace(" VS VIP = 198.18.0.100, VPORT = 8080", " VS VIP = x, VPORT = 8080"),
            "not an address",
        ),
        (_replace("VPORT = 8080", "VPORT = 80800"), "VPORT out of range"),
        (_replace(" VS VIP = 198.18.0.100", " VS SOMETHING = 1"), "expected 'VS VIP'"),
        (_replace("   protocol = TCP", "   protocol = ICMP"), "unknown 'protocol'"),
        (
            _replace("   forwarding method = NAT", "   forwarding method = 0x7"),
            "unknown forwarding",
        ),
        (_replace("   alive = 1\n   num failed", "   alive = 2\n   num failed"), "is not 0 or 1"),
        (_replace("num failed checkers = 0", "num failed checkers = ٣"), "not a count"),
        (_replace("RPORT = 8081", "RPORT = " + "9" * 5000), "expected 'RIP"),
        (_replace("   alpha is OFF", "   alive = 1"), "'alive' twice"),
        (
            _replace(" ------< Virtual server >------", " ------< Virtual thing >------"),
            "unknown block",
        ),
        (
            _replace(
                " ------< Virtual server >------\n", " stray\n ------< Virtual server >------\n"
            ),
            "outside a server block",
        ),
    ],
)
def test_hostile(text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_keepalived_check_data(text)


def test_error_names_the_line() -> None:
    with pytest.raises(ParseError) as info:
        parse_keepalived_check_data(_replace("   protocol = TCP", "   protocol = ICMP"))
    assert info.value.line_no == ONE_DOWN.split("\n").index("   protocol = TCP") + 1


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(MIXED)), st.text(max_size=40))
def test_only_parse_errors_escape_edits(at: int, inserted: str) -> None:
    with contextlib.suppress(ParseError):
        parse_keepalived_check_data(MIXED[:at] + inserted + MIXED[at:])


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(MIXED)))
def test_truncated_anywhere(at: int) -> None:
    """A dump cut anywhere parses into a prefix of the real servers, or fails with ParseError."""
    whole = parse_keepalived_check_data(MIXED)
    try:
        part = parse_keepalived_check_data(MIXED[:at])
    except ParseError:
        return
    assert len(part) <= len(whole)
