"""The exact scheduler models against the kernel rules (docs/lvs/schedulers.md#exact-schedulers)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsprobe.analyze import schedulers as s


def letters(seq: list[int]) -> str:
    return "".join("ABCDEFGH"[i] for i in seq)


@pytest.mark.parametrize(
    ("weights", "period"),
    [
        ((4, 3, 2), "AABABCABC"),
        ((5, 1, 1), "AAAAABC"),
        ((2, 4, 6), "CBCABC"),
        ((1, 2), "BAB"),
        ((3, 3), "AB"),
    ],
)
def test_wrr_period_from_init(weights: tuple[int, ...], period: str) -> None:
    assert letters(s.wrr_sequence(weights, 2 * len(period))) == period * 2


def test_wrr_service_built_by_adds_starts_with_one_low_pass() -> None:
    # ipvsadm -a weights 2, 3, 4 (list order 4, 3, 2): dest_changed keeps cw = 1
    mark = s.wrr_after_adds([4, 3, 2])
    assert (mark.cl, mark.cw, mark.mw, mark.di) == (None, 1, 4, 1)
    assert letters(s.wrr_sequence([4, 3, 2], 12, mark)) == "ABC" + "AABABCABC"


def test_wrr_gcd_step_and_zero_weights() -> None:
    assert letters(s.wrr_sequence([4, 2], 6)) == "AABAAB"
    assert letters(s.wrr_sequence([0, 2, 0], 3)) == "BBB"
    assert s.wrr_sequence([0, 0], 3) == []


@given(st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=6))
def test_wrr_counts_are_weight_proportional_per_period(weights: list[int]) -> None:
    total = sum(weights)
    seq = s.wrr_sequence(weights, total * 3)
    if total == 0:
        assert seq == []
        return
    for i, w in enumerate(weights):
        assert seq.count(i) == 3 * w


def test_rr_cycles_in_list_order_skipping_weight_zero() -> None:
    assert letters(s.rr_sequence([1, 0, 5, 1], 6)) == "ACDACD"
    assert letters(s.rr_sequence([1, 1, 1], 4, last=1)) == "CABC"


def test_lc_tie_goes_to_first_in_list_order() -> None:
    assert s.pick_lc([s.Dest(1), s.Dest(1), s.Dest(1)]) == 0
    assert s.pick_lc([s.Dest(1, active=1), s.Dest(1), s.Dest(1)]) == 1
    # one active == 256 inactive: a tie stays with the first
    assert s.pick_lc([s.Dest(1, active=1), s.Dest(1, inactive=256)]) == 0
    assert s.pick_lc([s.Dest(1, active=1), s.Dest(1, inactive=255)]) == 1
    # weights are ignored except 0
    assert s.pick_lc([s.Dest(0), s.Dest(9, active=3)]) == 1
    assert letters(s.held_sequence("lc", [1, 1, 1], 7)) == "ABCABCA"


def test_wlc_cross_multiplication_and_ties() -> None:
    assert letters(s.held_sequence("wlc", [3, 1], 12)) == "ABAAABAAABAA"
    assert s.held_sequence("wlc", [3, 1], 400).count(0) == 300
    assert s.pick_wlc([s.Dest(2, active=1), s.Dest(1, inactive=128)]) == 0  # 128 = 128: tie
    assert s.pick_wlc([s.Dest(0), s.Dest(1, active=5)]) == 1


def test_sed_ignores_inactive_and_nq_takes_idle_first() -> None:
    assert s.pick_sed([s.Dest(1, inactive=1000), s.Dest(1, active=1)]) == 0
    assert letters(s.held_sequence("sed", [1, 3], 4)) == "BBAB"
    assert letters(s.held_sequence("nq", [1, 5], 4)) == "ABBB"


def test_fo_and_ovf() -> None:
    assert s.pick_fo([s.Dest(2), s.Dest(5), s.Dest(5)]) == 1
    assert s.pick_fo([s.Dest(0), s.Dest(0)]) is None
    assert s.pick_fo([s.Dest(2), s.Dest(5, overloaded=True)]) == 0
    # ovf: highest weight while active <= weight, then spill to the next
    assert letters(s.held_sequence("ovf", [2, 1], 6)) == "AAABB"  # then none: all over


def test_overloaded_dests_are_skipped() -> None:
    dests = [s.Dest(1, overloaded=True), s.Dest(1)]
    assert s.pick_rr(dests, None) == 1
    assert s.pick_lc(dests) == 1
    assert s.pick_wlc(dests) == 1
    assert s.pick_wrr(dests, s.wrr_init([1, 1]))[0] == 1
