"""Hypothesis: every parser ends in a model or a ParseError; the conn-table views agree."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from unittest.mock import patch

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn_count, ip_vs_conn, ip_vs_conn_sync, slab, sysctl
from lvsprobe.kernel.procfs._conn import STATES_BY_PROTOCOL
from lvsprobe.kernel.procfs.ip_vs import parse_ip_vs
from lvsprobe.kernel.procfs.ip_vs_stats import parse_ip_vs_stats
from lvsprobe.kernel.procfs.ip_vs_stats_percpu import parse_ip_vs_stats_percpu
from lvsprobe.model import Conn, ConnCountKey

from .test_ip_vs import ERA_SAMPLE
from .test_ip_vs_conn import HEADER, MODERN, SYNC_HEADER, key_of
from .test_ip_vs_stats import K40, PERCPU_612

PROTOCOLS = [*sorted(STATES_BY_PROTOCOL), "IP_50"]
OTHER_STATES = sorted(STATES_BY_PROTOCOL["IP"])


def v6(value: int) -> bytes:
    return ipaddress.IPv6Address(value).exploded.encode()


@st.composite
def conn_rows(draw: st.DrawFn, sync: bool = False) -> bytes:
    """One row exactly as ip_vs_conn_seq_show / ip_vs_conn_sync_seq_show print it."""
    proto = draw(st.sampled_from(PROTOCOLS))
    state = draw(st.sampled_from(sorted(STATES_BY_PROTOCOL.get(proto, OTHER_STATES))))
    six = draw(st.booleans())
    addr = (
        st.builds(v6, st.integers(0, 2**128 - 1))
        if six
        else st.builds(lambda n: b"%08X" % n, st.integers(0, 2**32 - 1))
    )
    caddr, vaddr = draw(addr), draw(addr)
    if proto == "IP":  # fwmark template: ToIP holds the mark
        mark = draw(st.integers(1, 2**32 - 1))
        vaddr = v6(mark << 96) if six else b"%08X" % mark
    daddr = draw(
        st.one_of(
            st.builds(v6, st.integers(0, 2**128 - 1)),
            st.builds(lambda n: b"%08X" % n, st.integers(0, 2**32 - 1)),
        )
    )
    cport, vport, dport = (
        draw(st.sampled_from([0, 80, 0xFFFF]) | st.integers(0, 65535)) for _ in range(3)
    )
    expires = draw(st.integers(0, 2**32 - 1) | st.integers(2**32, 2**64 - 1))
    head = b"%-3s %s %04X %s %04X %s %04X %-11s " % (
        proto.encode(),
        caddr,
        cport,
        vaddr,
        vport,
        daddr,
        dport,
        state.encode(),
    )
    if sync:
        origin = draw(st.sampled_from([b"LOCAL", b"SYNC"]))
        return head + b"%-6s %7u\n" % (origin, expires)
    pe = b""
    if draw(st.booleans()):
        data = draw(st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b))
        pe = b" sip " + data
    return head + b"%7u%s\n" % (expires, pe)


def summary_counts(conns: list[Conn], per_rs: bool) -> Counter[ConnCountKey]:
    return Counter(key_of(c, per_rs) for c in conns)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(conn_rows(), max_size=25),
    chunk=st.sampled_from([1, 64, 300, 1 << 16]),
)
def test_conn_views_agree_on_generated_tables(rows: list[bytes], chunk: int) -> None:
    data = HEADER + b"".join(rows)
    with patch.object(_conn_count, "BLOCK_BYTES", chunk):
        conns = list(ip_vs_conn.iter_ip_vs_conn(data))
        assert len(conns) == len(rows)
        assert ip_vs_conn.count_states(data) == Counter((c.protocol, c.state) for c in conns)
        for per_rs in (True, False):
            got = ip_vs_conn.summarize_ip_vs_conn(data, per_real_server=per_rs)
            assert dict(got.counts) == summary_counts(conns, per_rs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(conn_rows(sync=True), max_size=25), chunk=st.sampled_from([64, 1 << 16]))
def test_sync_views_agree_on_generated_tables(rows: list[bytes], chunk: int) -> None:
    data = SYNC_HEADER + b"".join(rows)
    with patch.object(_conn_count, "BLOCK_BYTES", chunk):
        conns = list(ip_vs_conn_sync.iter_ip_vs_conn_sync(data))
        assert ip_vs_conn_sync.count_states_by_origin(data) == Counter(
            (c.protocol, c.state, c.origin) for c in conns
        )
        got = ip_vs_conn_sync.summarize_ip_vs_conn_sync(data)
        assert dict(got.counts) == summary_counts(conns, True)


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with a few bytes replaced, inserted or deleted (near-valid hostile input)."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        new = draw(st.binary(min_size=1, max_size=3) | st.sampled_from([b" ", b"\n", b"0", b"F"]))
        if action == "replace":
            data[pos : pos + len(new)] = new
        elif action == "insert":
            data[pos:pos] = new
        elif action == "delete":
            del data[pos : pos + len(new)]
        else:
            del data[pos:]
    return bytes(data)


def outcome(fn: Callable[[], object]) -> object:
    """The parser's result, or the ParseError; anything else propagates and fails the test."""
    try:
        return fn()
    except ParseError as exc:
        return exc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=mutated(MODERN) | st.binary(max_size=300) | st.builds(lambda b: HEADER + b, st.binary())
)
def test_conn_hostile_bytes(data: bytes) -> None:
    with patch.object(_conn_count, "BLOCK_BYTES", 128):
        exact = outcome(lambda: list(ip_vs_conn.iter_ip_vs_conn(data)))
        fast = outcome(lambda: ip_vs_conn.count_states(data))
        summary = outcome(lambda: ip_vs_conn.summarize_ip_vs_conn(data))
    if isinstance(exact, ParseError):
        # The summary checks every field, whichever strategy counts it.
        assert isinstance(summary, ParseError)
        assert exact.source == summary.source == "net/ip_vs_conn"
    else:
        assert isinstance(exact, list)
        assert fast == Counter((c.protocol, c.state) for c in exact)
        assert not isinstance(summary, ParseError)
        assert dict(summary.counts) == summary_counts(exact, True)  # type: ignore[attr-defined]
    for reader in (ip_vs_conn_sync.count_states, ip_vs_conn_sync.summarize_ip_vs_conn_sync):
        outcome(lambda r=reader: r(data))  # type: ignore[misc]


TEXT_PARSERS: list[tuple[Callable[[str], object], str]] = [
    (parse_ip_vs, ERA_SAMPLE),
    (parse_ip_vs_stats, K40),
    (parse_ip_vs_stats_percpu, PERCPU_612),
    (lambda t: sysctl.parse_sysctl("sync_threshold", t), "3\t50\n"),
    (lambda t: sysctl.parse_sysctl("est_cpulist", t), "0-3,8\n"),
    (slab.parse_slabinfo, "slabinfo - version: 2.1\nip_vs_conn 1 2 320 12 1 : t\n"),
    (slab.parse_conn_tab_bits, "12\n"),
]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(TEXT_PARSERS) - 1), data=st.data())
def test_text_parsers_hostile(which: int, data: st.DataObject) -> None:
    parse, sample = TEXT_PARSERS[which]
    raw = data.draw(mutated(sample.encode()) | st.binary(max_size=200) | st.just(sample.encode()))
    # The readers decode /proc text as Latin-1 (never fails), so any bytes can arrive.
    outcome(lambda: parse(raw.decode("latin-1")))
    outcome(lambda: parse(data.draw(st.text(max_size=200))))
