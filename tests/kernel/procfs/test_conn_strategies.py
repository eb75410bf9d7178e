"""The connection table's counting strategies (`_conn_count.STRATEGIES`), each checked
against the exact parser: real captures, generated tables of every row kind (IPv4, IPv6,
templates, SCTP, PE data, both eras) and mutated ones, whole or in pieces as read."""

from __future__ import annotations

import dataclasses
import gc
import subprocess
import sys
from collections import Counter
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn, _conn_count, _packed, ip_vs_conn, ip_vs_conn_sync
from lvsprobe.kernel.procfs._columnar import Columns
from lvsprobe.kernel.procfs._conn_count import BY_REAL_SERVER, BY_SERVICE, BY_STATE, Grouping
from lvsprobe.kernel.procfs._format import RowFormat
from lvsprobe.kernel.procfs.cache import ParseCache

from .test_ip_vs_conn import HEADER, KERNEL_61, MODERN, SYNC_HEADER
from .test_properties import conn_rows, mutated, outcome

STRATEGIES = sorted(_conn_count.STRATEGIES)
GROUPINGS = [BY_SERVICE, BY_REAL_SERVER, BY_STATE]
ROW = b"TCP C0A80001 0000 0A000001 0050 C0A8010A 0050 ASSURED         287\n"
PLAIN_STATES = {
    "TCP": ["ESTABLISHED", "TIME_WAIT", "NONE", "ASSURED", "SYN_RECV", "ERR!"],
    "UDP": ["UDP", "NONE", "ASSURED"],
    "IP": ["NONE", "ASSURED"],
    "SCTP": ["ESTABLISHED", "C-ECHOED", "NONE"],
}


def fmt_of(sync: bool) -> RowFormat:
    return ip_vs_conn_sync.SYNC_ROW if sync else ip_vs_conn.CONN_ROW


def reference(table: bytes, fmt: RowFormat, grouping: Grouping) -> object:
    """The exact parser's rows counted by the grouping's key, or its ParseError."""
    return outcome(lambda: Counter(map(grouping.key, _conn.iter_conns(table, fmt))))


def assert_agrees(got: object, want: object) -> None:
    if isinstance(want, ParseError):
        assert isinstance(got, ParseError), got
        assert (got.source, got.line_no, got.reason) == (want.source, want.line_no, want.reason)
    else:
        assert not isinstance(got, ParseError), got
        assert got == want


@st.composite
def plain_rows(draw: st.DrawFn, sync: bool) -> bytes:
    """A row of the usual widths (a layout's): IPv4, 3- or 4-letter protocol, %7u Expires."""
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
    """Whole tables: rows of the usual widths, or those mixed with every kind of row, and
    either mutated (near-valid hostile input)."""
    header = SYNC_HEADER if sync else HEADER
    plain = st.lists(plain_rows(sync), min_size=1, max_size=30)
    mixed = st.lists(plain_rows(sync) | conn_rows(sync=sync), max_size=30)
    table = st.builds(lambda rows: header + b"".join(rows), plain | mixed)
    return table | table.flatmap(mutated)


def pieces(table: bytes, size: int) -> bytes | Iterator[bytes]:
    """The table whole (size 0), or in pieces of `size` bytes as a reader gives them."""
    if not size:
        return table
    return (table[at : at + size] for at in range(0, len(table), size))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sync=st.booleans(),
    data=st.data(),
    block=st.sampled_from([1, 200, 1 << 20]),
    piece=st.sampled_from([0, 1, 7, 100, 1 << 20]),
)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_agree_with_exact_on_generated_tables(
    strategy: str, sync: bool, data: st.DataObject, block: int, piece: int
) -> None:
    fmt = fmt_of(sync)
    table = data.draw(tables(sync))
    with patch.object(_conn_count, "BLOCK_BYTES", block):
        for grouping in GROUPINGS:
            got = outcome(
                lambda g=grouping: _conn_count.count(
                    pieces(table, piece), fmt, g, strategy=strategy
                )  # type: ignore[misc]
            )
            assert_agrees(got, reference(table, fmt, grouping))


CAPTURES = [("nat", False), ("nat-backup", False), ("nat", True)]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("topology", "sync"), CAPTURES)
def test_strategies_agree_on_the_captures(strategy: str, topology: str, sync: bool) -> None:
    root = KERNEL_61 / topology / "proc"
    read = ip_vs_conn_sync.read_ip_vs_conn_sync if sync else ip_vs_conn.read_ip_vs_conn
    table = read(root)
    fmt = fmt_of(sync)
    for grouping in GROUPINGS:
        got = _conn_count.count(table, fmt, grouping, strategy=strategy)
        assert got == reference(table, fmt, grouping)
        assert sum(got.values()) == table.count(b"\n") - 1


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategies_name_the_first_bad_line(strategy: str) -> None:
    """A bad row the columnar strategy would take (its state is only checked when its key
    is decoded), after a row it leaves to the exact parser: the first one is named."""
    rows = ROW * 300 + MODERN.split(b"\n", 1)[1] + ROW.replace(b"ASSURED", b"ASSUREX")
    table = HEADER + rows + ROW.replace(b"C0A8010A", b"C0A8010G")
    for grouping in GROUPINGS:
        got = outcome(
            lambda g=grouping: _conn_count.count(table, ip_vs_conn.CONN_ROW, g, strategy=strategy)
        )  # type: ignore[misc]
        assert isinstance(got, ParseError)
        assert (got.line_no, got.reason) == (2 + 300 + 12, "unknown TCP state 'ASSUREX'")


def test_the_columnar_strategy_takes_every_row_of_a_layout() -> None:
    """Only rows of no layout (PE data, an IP_<n> protocol, a wider Expires, lower-case
    IPv4) are left to the exact parser: IPv6, SCTP, templates and mixed families are taken."""
    rows = MODERN.split(b"\n", 1)[1]
    rows += ROW.replace(b"    287", b"12345678") + ROW.replace(b"C0A8010A", b"c0a8010a")
    split = Columns(ip_vs_conn.CONN_ROW.layouts()).split(rows)
    refused = [index for index, _ in split.refused]
    assert split.lines == 14
    assert refused == [7, 11, 12, 13]
    assert sum(len(taken.rows) for taken in split.taken) == 10


def test_small_tables_do_not_import_numpy() -> None:
    code = (
        "import sys\n"
        "from lvsprobe.kernel.procfs import ip_vs_conn\n"
        f"data = {HEADER + ROW * 100!r}\n"
        "s = ip_vs_conn.summarize_ip_vs_conn(data, per_real_server=True)\n"
        "assert s.total == 100, s\n"
        "assert 'numpy' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_first_block_chooses_the_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen: list[str] = []
    for name, cls in _conn_count.STRATEGIES.items():

        class Spy(cls):  # type: ignore[valid-type,misc]
            def __init__(self, *args: object, name: str = name) -> None:
                chosen.append(name)
                super().__init__(*args)

        monkeypatch.setitem(_conn_count.STRATEGIES, name, Spy)
    small = HEADER + ROW * 10
    big = HEADER + ROW * (_conn_count.COLUMNAR_MIN_BYTES // len(ROW) + 1)
    assert ip_vs_conn.summarize_ip_vs_conn(small).total == 10
    assert ip_vs_conn.summarize_ip_vs_conn(pieces(big, 1 << 20)).total == big.count(b"\n") - 1
    assert chosen == ["exact", "columnar"]


def decoded_rows(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The canonical rows the columnar strategy decodes from now on."""
    decoded: list[bytes] = []
    row = _conn_count._LayoutKeys.row

    def spy(self: _conn_count._LayoutKeys, *args: Any) -> bytes:
        decoded.append(row(self, *args))
        return decoded[-1]

    monkeypatch.setattr(_conn_count._LayoutKeys, "row", spy)
    return decoded


def many(n: int) -> bytes:
    """`n` rows over 7 services x 3 real servers x 2 states, some templates."""
    out = []
    for i in range(n):
        state = b"ESTABLISHED" if i % 2 else b"ASSURED    "
        out.append(
            b"TCP C0A8%04X %04X 0A0000%02X 0050 C0A801%02X 0050 %s %7u\n"
            % (i % 65536, 0 if i % 5 == 0 else 1024 + i % 60000, i % 7, i % 3, state, i % 900)
        )
    return b"".join(out)


def test_a_cache_decodes_only_new_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    table = HEADER + many(300)
    cache = ParseCache()

    def summary(data: bytes, per_real_server: bool = True, **kw: object) -> dict[Hashable, int]:
        counted = _conn_count.count(
            data,
            ip_vs_conn.CONN_ROW,
            BY_REAL_SERVER if per_real_server else BY_SERVICE,
            strategy="columnar",
            **kw,  # type: ignore[arg-type]
        )
        return counted

    first = summary(table, cache=cache)
    decoded = decoded_rows(monkeypatch)
    assert summary(table, cache=cache) == first
    assert decoded == []
    # Without a cache nothing is remembered: no module keeps keys behind the caller's back.
    assert summary(table) == first
    assert len(decoded) == len(set(decoded)) >= len(first)  # each once (a key has two rows
    # when a state that is no template's shows with client port 0 and without)
    decoded.clear()
    changed = table + ROW + ROW.replace(b"ASSURED", b"ASSUREX")  # a new key, a bad one
    got = outcome(lambda: summary(changed, cache=cache))
    assert isinstance(got, ParseError) and got.line_no == 2 + 300 + 1
    decoded.clear()
    again = summary(table + ROW, cache=cache)
    assert again == reference(table + ROW, ip_vs_conn.CONN_ROW, BY_REAL_SERVER)
    assert decoded == [b"TCP 00000000 0000 0A000001 0050 C0A8010A 0050 ASSURED 0000000"]
    # Another grouping never takes these keys.
    per_service = summary(table, per_real_server=False, cache=cache)
    assert per_service == reference(table, ip_vs_conn.CONN_ROW, BY_SERVICE)


def test_the_cache_keeps_one_table() -> None:
    """Each summary replaces what the cache held: it never grows past one table's keys."""
    cache = ParseCache()
    kind = (ip_vs_conn.CONN_ROW.printf, BY_REAL_SERVER.name)
    sizes = []
    for offset in range(3):
        table = HEADER + many(200).replace(b" 0A0000", b" 0B%04X" % offset)
        _conn_count.count(table, ip_vs_conn.CONN_ROW, BY_REAL_SERVER, cache, "columnar")
        kept = [key for table in cache.previous(kind).values() for key in table.keys]
        assert set(kept) == set(reference(table, ip_vs_conn.CONN_ROW, BY_REAL_SERVER))  # type: ignore[call-overload]
        sizes.append(len(kept))
    assert sizes == [sizes[0]] * 3


def test_a_summary_leaves_no_reference_cycle() -> None:
    """A scrape runs with the cyclic GC paused: a cycle made by each summary kept every
    scrape's tables until a full collection."""
    table = HEADER + many(3000)
    cache = ParseCache()
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            for strategy in STRATEGIES:
                counted = _conn_count.count(table, ip_vs_conn.CONN_ROW, BY_SERVICE, cache, strategy)
                assert sum(counted.values()) == 3000
        del counted
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_sync_summaries_keep_their_origin_apart() -> None:
    rows = many(500).replace(b"ESTABLISHED ", b"ESTABLISHED SYNC   ")
    rows = rows.replace(b"ASSURED     ", b"ASSURED     LOCAL  ")
    table = SYNC_HEADER + rows
    for strategy in STRATEGIES:
        got = _conn_count.count(table, ip_vs_conn_sync.SYNC_ROW, BY_STATE, strategy=strategy)
        assert sum(got.values()) == 500
        assert {origin.value for _, _, origin in got} == {"SYNC", "LOCAL"}
        assert got == reference(table, ip_vs_conn_sync.SYNC_ROW, BY_STATE)


def test_readers_take_a_cache(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net/ip_vs_conn").write_bytes(HEADER + many(2000))
    cache = ParseCache()
    for _ in range(2):
        summary = ip_vs_conn.summarize_ip_vs_conn(
            ip_vs_conn.stream_ip_vs_conn(tmp_path), per_real_server=False, cache=cache
        )
        assert summary.total == 2000


@pytest.mark.parametrize("grouping", GROUPINGS, ids=lambda g: g.name)
def test_a_shared_fingerprint_is_counted_exactly(
    grouping: Grouping, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key given one fingerprint: each block with two keys (in it, or one in it and
    one counted before) goes to the exact parser instead; the counts stay exact."""
    monkeypatch.setattr(_packed, "fingerprints", lambda words: np.zeros(len(words), np.uint64))
    table = HEADER + ROW * 5 + many(400) + MODERN.split(b"\n", 1)[1]
    with patch.object(_conn_count, "BLOCK_BYTES", 2000):
        got = _conn_count.count(table, ip_vs_conn.CONN_ROW, grouping, strategy="columnar")
    assert got == reference(table, ip_vs_conn.CONN_ROW, grouping)


@pytest.mark.parametrize("fmt", [ip_vs_conn.CONN_ROW, ip_vs_conn_sync.SYNC_ROW])
def test_every_name_has_its_own_code(fmt: RowFormat) -> None:
    """The perfect hash of each `%s` column's names, at each of its widths."""
    for layout in fmt.layouts():
        for column in fmt.columns:
            if not column.names:
                continue
            span = layout.span(column.name)
            codes = _packed.NameCodes(column.names, span.width)
            fitting = [name for name in column.names if len(name) <= span.width]
            assert [name.rstrip() for name in codes.names] == fitting
            rows = [name.ljust(span.width) for name in [*fitting, "BOGUS", "TC", "ESTABLISHEX"]]
            rows = [row + "|" * 8 for row in rows if len(row) == span.width]  # rows go on
            matrix = np.frombuffer("".join(rows).encode(), np.uint8).reshape(len(rows), -1)
            got = codes.codes(matrix, dataclasses.replace(span, start=0)).tolist()
            assert got == [*range(len(fitting)), *[-1] * (len(rows) - len(fitting))]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("block", [1, 1 << 16])
def test_a_last_row_without_its_newline_is_judged_by_the_exact_parser(
    strategy: str, block: int
) -> None:
    """Found by Hypothesis: a last row one byte short of a whole row (no newline, a NUL in
    its place) made the columnar strategy cut a row window past the block's end."""
    row = b"IP  00000000 0000 00000001 0000 00000000 0000 NONE        LOCAL        0"
    head = b"Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"
    table = head + (row + b"\n") * 3 + row + b"\x00"
    fmt = fmt_of(True)
    with patch.object(_conn_count, "BLOCK_BYTES", block):
        for grouping in GROUPINGS:
            got = outcome(lambda g=grouping: _conn_count.count(table, fmt, g, strategy=strategy))  # type: ignore[misc]
            assert_agrees(got, reference(table, fmt, grouping))
