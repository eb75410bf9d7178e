"""sh, dh and mh models: table tiling, the kernel's hashes, Maglev table properties."""

from __future__ import annotations

import ipaddress
from collections import Counter

from lvsprobe.analyze import hashing as h

A = ipaddress.ip_address


def test_sh_buckets_tiled_by_weight_in_list_order() -> None:
    table = h.sh_table([2, 3, 4])
    assert len(table) == 256
    assert table[:9] == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert Counter(table) == {0: 58, 1: 86, 2: 112}


def test_sh_weight_zero_still_takes_a_bucket_and_overflow_starves() -> None:
    assert Counter(h.sh_table([0, 1])) == {0: 128, 1: 128}
    assert Counter(h.sh_table([300, 1])) == {0: 256}
    assert h.sh_table([]) == [None] * 256


def test_sh_hash_spreads_clients_the_legacy_hash_did_not() -> None:
    clients = [A(f"10.1.{i}.1") for i in range(250)]
    table = h.sh_table([1, 1, 1, 1])
    assert sorted(Counter(h.sh_pick(table, [1] * 4, c) for c in clients).values()) == [
        62,
        62,
        62,
        64,
    ]
    assert len({h.sh_bucket_legacy(c) for c in clients}) == 1


def test_sh_zero_weight_bucket_gives_none_unless_fallback() -> None:
    table = h.sh_table([1, 1])
    weights = [0, 1]
    client = next(
        A(f"198.18.0.{i}") for i in range(1, 255) if table[h.sh_bucket(A(f"198.18.0.{i}"))] == 0
    )
    assert h.sh_pick(table, weights, client) is None
    assert h.sh_pick(table, weights, client, fallback=True) == 1


def test_hash_32_and_ipv6_fold() -> None:
    assert h.hash_32(1, 8) == 0x61C88647 >> 24
    v6 = A("2001:2::1")
    assert h.addr_fold(v6) == 0x20010002 ^ 0 ^ 0 ^ 1


def test_hsiphash_is_siphash13_of_the_u32() -> None:
    # Pinned from a generic SipHash-c-d (checked against the reference 2-4 test vectors)
    # run with c=1, d=3 over the u32's four little-endian bytes, as lib/siphash.c does.
    assert h.hsiphash_u32(0x01020304, (5, 6)) == 0x9F548843
    assert h.hsiphash_u32(0x0A000001 + 80, h.MH_HASH1) == 0x439C0CBE
    assert h.hsiphash_u32(1, h.MH_HASH1) != h.hsiphash_u32(1, h.MH_HASH2)
    assert 0 <= h.hsiphash_u32(0xFFFFFFFF, h.MH_HASH1) <= 0xFFFFFFFF


def test_mh_table_fills_every_slot_with_balanced_shares() -> None:
    dests = [(A(f"10.0.0.{i}"), 80, 1) for i in range(1, 5)]
    table = h.mh_table(dests)
    assert len(table) == 4093
    assert None not in table
    assert sorted(Counter(table).values()) == [1023, 1023, 1023, 1024]


def test_mh_weights_are_quantised_to_six_bits() -> None:
    assert h.mh_turns([100, 1]) == [50, 1]
    assert h.mh_turns([4, 2, 0]) == [2, 1, 0]
    table = h.mh_table([(A("10.0.0.1"), 80, 100), (A("10.0.0.2"), 80, 1)])
    assert Counter(table) == {0: 4013, 1: 80}


def test_mh_removing_a_dest_moves_only_its_clients_and_a_fraction_more() -> None:
    dests = [(A(f"10.0.0.{i}"), 80, 1) for i in range(1, 5)]
    before = h.mh_table(dests)
    after_raw = h.mh_table(dests[1:])
    after = [None if d is None else d + 1 for d in after_raw]  # re-index to the old list
    moved = sum(1 for b, a in zip(before, after, strict=True) if b != 0 and b != a)
    assert moved / sum(1 for b in before if b != 0) < 0.01


def test_mh_pick_is_deterministic_per_client() -> None:
    dests = [(A(f"10.0.0.{i}"), 80, 1) for i in range(1, 4)]
    table = h.mh_table(dests)
    picks = [
        h.mh_pick(table, [1, 1, 1], A(f"198.18.{i // 250}.{i % 250 + 1}")) for i in range(3000)
    ]
    assert picks == [
        h.mh_pick(table, [1, 1, 1], A(f"198.18.{i // 250}.{i % 250 + 1}")) for i in range(3000)
    ]
    counts = Counter(picks)
    assert min(counts.values()) > 850


def test_dh_buckets() -> None:
    # the old hash: the last octet alone, one to one with the buckets
    assert len({h.dh_bucket_legacy(A(f"10.0.0.{i}")) for i in range(256)}) == 256
    # hash_32 (the lab kernel's): the lab VIP 198.18.1.100 lands in bucket 85, so the second
    # dest in list order serves it (the legacy hash said bucket 36: the first)
    assert h.dh_bucket(A("198.18.1.100")) == 85 and h.dh_bucket_legacy(A("198.18.1.100")) == 36
    assert Counter(h.dh_table(3)) == {0: 86, 1: 85, 2: 85}


def test_table_shares() -> None:
    assert h.table_shares([0, 0, 1, None], 2) == [2 / 3, 1 / 3]
