"""The numpy-hashed counting of big fixed-layout blocks (`_conn_hashed`): same counts as
the exact parser, hash collisions seen and counted the plain way, hostile rows refused."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections import Counter
from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _conn_fast, _conn_fixed, _conn_row, _conn_summary
from lvsprobe.kernel.procfs._conn_fixed import FixedKeys
from lvsprobe.kernel.procfs._conn_hashed import HashedRows, _hex_number, _windows, _word, key_runs

from .test_fast_paths import tables
from .test_ip_vs_conn import HEADER, SYNC_HEADER, key_of
from .test_properties import outcome, summary_counts

ROW = b"TCP C0A80001 0000 0A000001 0050 C0A8010A 0050 ASSURED         287\n"


def rows(n: int, sync: bool = False) -> bytes:
    """`n` plain rows over 7 services x 3 real servers x 2 states, some templates."""
    out = []
    for i in range(n):
        state = b"ESTABLISHED" if i % 2 else b"ASSURED    "
        row = b"TCP C0A8%04X %04X 0A0000%02X 0050 C0A801%02X 0050 %s " % (
            i % 65536,
            0 if i % 5 == 0 else 1024 + i % 60000,
            i % 7,
            i % 3,
            state,
        )
        if sync:
            row += b"SYNC   " if i % 4 == 0 else b"LOCAL  "
        out.append(row + b"%7u\n" % (i % 900))
    return b"".join(out)


def summarize(table: bytes, sync: bool, per_rs: bool) -> object:
    layout = _conn_row.CONN_SYNC if sync else _conn_row.CONN
    return outcome(lambda: _conn_summary.summarize(table, layout, per_rs))


def exact_counts(table: bytes, sync: bool, per_rs: bool) -> Counter[object]:
    layout = _conn_row.CONN_SYNC if sync else _conn_row.CONN
    return summary_counts(list(_conn_row.iter_conns(table, layout)), per_rs)  # type: ignore[return-value]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sync=st.booleans(),
    data=st.data(),
    block=st.sampled_from([1, 200, 1 << 20]),
    collide=st.booleans(),
)
def test_hashed_counting_agrees_with_exact(
    sync: bool, data: st.DataObject, block: int, collide: bool
) -> None:
    """Every block hashed (however small), with a real hash or one that always collides."""
    layout = _conn_row.CONN_SYNC if sync else _conn_row.CONN
    table = data.draw(tables(sync))
    exact = outcome(lambda: list(_conn_row.iter_conns(table, layout)))
    hash_fn = (lambda self, words: np.zeros(len(words), np.uint64)) if collide else HashedRows.hash
    with (
        patch.object(_conn_fixed, "HASHED_MIN_ROWS", 1),
        patch.object(_conn_summary, "FIXED_BLOCK_BYTES", block),
        patch.object(_conn_fast, "CHUNK_BYTES", 128),
        patch.object(HashedRows, "hash", hash_fn),
    ):
        for per_rs in (True, False):
            got = outcome(lambda p=per_rs: _conn_summary.summarize(table, layout, p))  # type: ignore[misc]
            if isinstance(exact, ParseError):
                assert isinstance(got, ParseError)
                assert (got.line_no, got.reason) == (exact.line_no, exact.reason)
            else:
                assert isinstance(exact, list)
                assert not isinstance(got, ParseError)
                assert dict(got.counts) == summary_counts(exact, per_rs)  # type: ignore[attr-defined]


@pytest.mark.parametrize("sync", [False, True])
@pytest.mark.parametrize("per_rs", [False, True])
def test_big_blocks_are_hashed_and_exact(sync: bool, per_rs: bool) -> None:
    layout = _conn_row.CONN_SYNC if sync else _conn_row.CONN
    table = (SYNC_HEADER if sync else HEADER) + rows(3 * _conn_fixed.HASHED_MIN_ROWS + 17, sync)
    keys = FixedKeys(layout, per_rs)
    for block in _conn_summary.body_blocks(table, layout, 200_000):
        assert keys.count(block)
    # Only a last block smaller than HASHED_MIN_ROWS goes the Counter way.
    assert sum(keys.rows.values()) < _conn_fixed.HASHED_MIN_ROWS
    hashed = Counter[object]()
    for key, n in keys.hashed.items():
        hashed[key] += n
    conns = list(_conn_row.iter_conns(table, layout))
    distinct_rows = {(key_of(c, per_rs), c.client_port == 0) for c in conns}
    assert len(keys.hashed.keys) == len(distinct_rows)  # each row decoded once over all blocks
    assert hashed.total() > 2 * _conn_fixed.HASHED_MIN_ROWS
    got = Counter[object]()
    for key, n in keys.counted():
        got[key] += n
    assert got == exact_counts(table, sync, per_rs)


@pytest.mark.parametrize("per_rs", [False, True])
def test_a_hash_collision_is_counted_exactly(per_rs: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A constant hash: every block with two keys collides (in the block, or with a key of
    an earlier block) and is counted by Counter instead; the counts stay exact. Per service
    only the text columns are hashed (the address and port are packed exactly): `other`,
    another service, is no collision there, but two states in one block are."""
    monkeypatch.setattr(HashedRows, "hash", lambda self, words: np.zeros(len(words), np.uint64))
    monkeypatch.setattr(_conn_fixed, "HASHED_MIN_ROWS", 1)
    same = ROW * 5
    other = ROW.replace(b"0A000001 0050", b"0A000002 0050") * 3
    table = same + other + same + rows(400)
    keys = FixedKeys(_conn_row.CONN, per_rs)
    for block in (same, other, same, rows(400)):
        assert keys.count(block)
    if per_rs:
        assert [n for _, n in keys.hashed.items()] == [10]  # `same` twice, by hash
        assert sum(keys.rows.values()) == 3 + 400  # collided: counted by Counter
    else:
        assert [n for _, n in keys.hashed.items()] == [10, 3]
        assert sum(keys.rows.values()) == 400
    got = Counter[object]()
    for key, n in keys.counted():
        got[key] += n
    assert got == exact_counts(HEADER + table, False, per_rs)
    summary = summarize(HEADER + table, False, per_rs)
    assert dict(summary.counts) == got  # type: ignore[attr-defined]


def test_a_block_that_does_not_decode_is_refused_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_conn_fixed, "HASHED_MIN_ROWS", 1)
    keys = FixedKeys(_conn_row.CONN, per_real_server=True)
    assert keys.count(ROW * 2)
    bad = ROW.replace(b"ASSURED ", b"ASSURED\t")
    assert not keys.count(ROW + rows(50) + bad)
    assert [n for _, n in keys.hashed.items()] == [2]
    assert len(keys.hashed.keys) == 1
    assert not keys.rows
    assert keys.count(ROW)
    assert [n for _, n in keys.hashed.items()] == [3]


def test_hostile_big_table_still_names_its_line() -> None:
    table = rows(3 * _conn_fixed.HASHED_MIN_ROWS)
    at = table.index(b"ESTABLISHED", len(table) // 2)
    bad = table[:at] + b"ESTABLISHEX" + table[at + 11 :]
    got = summarize(HEADER + bad, False, True)
    assert isinstance(got, ParseError)
    assert got.line_no == 2 + bad[:at].count(b"\n")


def test_key_runs() -> None:
    assert key_runs([0, 1, 2, 13, 18, 19, 21]) == [(0, 3), (13, 14), (18, 20), (21, 22)]
    assert key_runs([]) == []


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


@pytest.mark.parametrize("hashed_min", [1, 1 << 30])
def test_the_next_summary_decodes_only_new_rows(
    hashed_min: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_conn_fixed, "HASHED_MIN_ROWS", hashed_min)
    monkeypatch.setattr(_conn_fixed, "_REMEMBERED", {})
    table = HEADER + rows(300)
    first = _conn_summary.summarize(table, _conn_row.CONN, True)
    decoded: list[bytes] = []
    decode = FixedKeys.decode

    def counting(self: FixedKeys, row: bytes) -> object:
        decoded.append(row)
        return decode(self, row)

    monkeypatch.setattr(FixedKeys, "decode", counting)
    assert _conn_summary.summarize(table, _conn_row.CONN, True) == first
    assert decoded == []
    changed = table + ROW + ROW.replace(b"ASSURED", b"ASSUREX")  # a new row, a bad one
    with pytest.raises(ParseError) as bad:
        _conn_summary.summarize(changed, _conn_row.CONN, True)
    assert bad.value.line_no == 2 + 300 + 1
    assert decoded  # the new rows are decoded (until the bad one)
    decoded.clear()
    again = _conn_summary.summarize(table + ROW, _conn_row.CONN, True)
    assert dict(again.counts) == exact_counts(table + ROW, False, True)
    assert len(decoded) == 1  # ROW only
    # Another granularity or layout never takes these keys.
    per_service = _conn_summary.summarize(table, _conn_row.CONN, False)
    assert dict(per_service.counts) == exact_counts(table, False, False)


def test_a_summary_leaves_no_reference_cycle() -> None:
    """A scrape runs with the cyclic GC paused: a cycle made by each summary (the counter
    and its hash table holding each other) kept every scrape's tables, ~5 MB each on a
    10^6-entry table, until a full collection."""
    table = HEADER + rows(3 * _conn_fixed.HASHED_MIN_ROWS)
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            summary = _conn_summary.summarize(table, _conn_row.CONN, per_real_server=False)
            assert summary.total == 3 * _conn_fixed.HASHED_MIN_ROWS
        del summary
        assert gc.collect() == 0
    finally:
        gc.enable()


@given(st.lists(st.text("0123456789ABCDEFabcdef", min_size=8, max_size=8), min_size=1))
def test_packed_hex_words_decode_as_int(digits: list[str]) -> None:
    """The SWAR decode of 8 and of 4 hex digits (either case) per row, read in place."""
    block = b"".join(f"{d} {d[:4]}    \n".encode() for d in digits)  # 18-byte rows
    for start, width in ((0, 8), (9, 4)):
        word = _word(block, len(digits), 18, start)
        got = _hex_number(word, width).tolist()
        assert got == [int(d[:width], 16) for d in digits]


def test_text_windows_cover_the_columns_within_the_row() -> None:
    # Protocol, state and Origin of a sync row (73 bytes): the last window ends in the row.
    columns = [0, 1, 2, *range(46, 57), *range(58, 64)]
    windows = _windows(columns, 73)
    covered = {s + i for s, mask in windows for i in range(8) if mask >> 8 * i & 0xFF}
    assert covered == set(columns)
    assert all(start + 8 <= 73 for start, _ in windows)
    assert _windows([70, 71], 73) == [(65, 0xFF << 40 | 0xFF << 48)]
