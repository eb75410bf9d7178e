"""Hypothesis: the fast paths (fixed-offset conn counting, IPv4 real-server lines) agree
with the exact parsers, on kernel-format input and on near-valid hostile input."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv4Address
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn_fast, _conn_row, _conn_summary, _hex, ip_vs
from lvsprobe.kernel.procfs._conn_fixed import FixedKeys
from lvsprobe.model import Family, Forward, RealServer

from .test_ip_vs_conn import HEADER, SYNC_HEADER
from .test_properties import conn_rows, mutated, outcome, summary_counts

PLAIN_STATES = {
    "TCP": ["ESTABLISHED", "TIME_WAIT", "NONE", "ASSURED", "SYN_RECV", "ERR!"],
    "UDP": ["UDP", "NONE", "ASSURED"],
    "IP": ["NONE", "ASSURED"],
}


@st.composite
def plain_rows(draw: st.DrawFn, sync: bool) -> bytes:
    """An IPv4 row with a 3-letter protocol, a %7u Expires and no PE data: fixed offsets."""
    proto = draw(st.sampled_from(sorted(PLAIN_STATES)))
    state = draw(st.sampled_from(PLAIN_STATES[proto]))
    addr = st.builds(lambda n: b"%08X" % n, st.integers(0, 2**32 - 1) | st.integers(0, 3))
    port = st.sampled_from([0, 80]) | st.integers(0, 65535)
    vaddr = b"%08X" % draw(st.integers(1, 2**32 - 1)) if proto == "IP" else draw(addr)
    row = b"%-3s %s %04X %s %04X %s %04X %-11s " % (
        proto.encode(),
        draw(addr),
        draw(port),
        vaddr,
        draw(port),
        draw(addr),
        draw(port),
        state.encode(),
    )
    if sync:
        row += b"%-6s " % draw(st.sampled_from([b"LOCAL", b"SYNC"]))
    return row + b"%7u\n" % draw(st.integers(0, 9_999_999))


def tables(sync: bool) -> st.SearchStrategy[bytes]:
    header = SYNC_HEADER if sync else HEADER
    plain = st.lists(plain_rows(sync), min_size=1, max_size=30)
    mixed = st.lists(plain_rows(sync) | conn_rows(sync=sync), max_size=30)
    table = st.builds(lambda rows: header + b"".join(rows), plain | mixed)
    return table | table.flatmap(mutated)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sync=st.booleans(),
    data=st.data(),
    block=st.sampled_from([1, 200, 1 << 20]),
    piece=st.sampled_from([0, 1, 7, 100, 1 << 20]),
)
def test_fixed_counting_agrees_with_exact(
    sync: bool, data: st.DataObject, block: int, piece: int
) -> None:
    """Whole (piece 0) or streamed in pieces of `piece` bytes as a reader gives them."""
    layout = _conn_row.CONN_SYNC if sync else _conn_row.CONN
    table = data.draw(tables(sync))
    exact = outcome(lambda: list(_conn_row.iter_conns(table, layout)))

    def given_as() -> bytes | Iterator[bytes]:
        if not piece:
            return table
        return (table[at : at + piece] for at in range(0, len(table), piece))

    with (
        patch.object(_conn_summary, "FIXED_BLOCK_BYTES", block),
        patch.object(_conn_fast, "CHUNK_BYTES", 128),
    ):
        for per_rs in (True, False):
            got = outcome(lambda p=per_rs: _conn_summary.summarize(given_as(), layout, p))  # type: ignore[misc]
            if isinstance(exact, ParseError):
                assert isinstance(got, ParseError)
                assert (got.line_no, got.reason) == (exact.line_no, exact.reason)
            else:
                assert isinstance(exact, list)
                assert not isinstance(got, ParseError)
                assert dict(got.counts) == summary_counts(exact, per_rs)  # type: ignore[attr-defined]


def test_fixed_counting_takes_plain_blocks_and_refuses_others() -> None:
    row = b"TCP C0A80001 0000 0A000001 0050 C0A8010A 0050 ASSURED         287\n"
    keys = FixedKeys(_conn_row.CONN, per_real_server=False)
    assert keys.count(row * 3)
    ((counted, n),) = keys.rows.items()
    assert n == 3
    key = keys.keys[counted]
    assert (key.protocol, key.state, key.template, key.virtual_port) == ("TCP", "ASSURED", True, 80)
    for bad in (
        row.replace(b"C0A80001", b"C0A8000G"),  # client address not hex
        row.replace(b"    287", b"  2 87"),  # a blank inside Expires
        row[:-1],  # no newline
        row.replace(b"TCP", b"SCTP"),  # another width
    ):
        assert not FixedKeys(_conn_row.CONN, per_real_server=False).count(bad), bad
    # Key fields are checked when a block brings a new row: a row that does not decode
    # refuses its block, whose counts are taken back (the exact parser then names the line).
    odd = FixedKeys(_conn_row.CONN, per_real_server=False)
    assert odd.count(row)
    assert not odd.count(row + row.replace(b"ASSURED ", b"ASSURED\t"))
    assert dict(odd.rows) == {counted: 1}
    assert list(odd.keys) == [counted]
    with pytest.raises(ValueError, match="unknown TCP state"):
        odd.decode(row.replace(b"ASSURED ", b"ASSURED\t"))


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
@pytest.mark.parametrize("numpy_min_chars", [0, 1 << 40], ids=["numpy", "regex"])
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


@pytest.mark.parametrize("numpy_min_chars", [0, 1 << 40], ids=["numpy", "regex"])
def test_fast_paths_take_blocks_of_many_services(numpy_min_chars: int) -> None:
    """Several blocks, services split across them, exotic lines in between: the same
    table as the exact parser's."""
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
    assert list(_conn_summary.whole_lines(pieces)) == [b"abc\n", b"def\ng\n", b"hi"]
    assert list(_conn_summary.whole_lines([])) == []


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
