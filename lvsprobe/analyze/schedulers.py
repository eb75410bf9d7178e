"""Exact models of the IPVS schedulers that decide from state, not from a hash.

Pure: dests in, picks out. Each function mirrors one kernel file under net/netfilter/ipvs/
(6.1 and 6.12 are identical here). Dests are given in the kernel's list order, which is the
REVERSE of `ipvsadm -a` order (ip_vs_ctl.c adds with list_add_rcu at the head). A pick is the
index of the chosen dest in that order, or None when the kernel would say "no destination
available".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

EXACT = ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf")
HASHED = ("sh", "dh", "mh")
HISTORY = ("lblc", "lblcr")
RANDOM = ("twos",)
KNOWN = EXACT + HASHED + HISTORY + RANDOM


@dataclass(frozen=True, slots=True)
class Dest:
    """What a scheduler sees of one real server: weight, connection counts, OVERLOAD flag."""

    weight: int
    active: int = 0
    inactive: int = 0
    overloaded: bool = False


def conn_overhead(d: Dest) -> int:
    """ip_vs_dest_conn_overhead (include/net/ip_vs.h): active << 8 plus inactive.

    ip_vs_lc.c's comment still says << 5; the helper is what runs.
    """
    return (d.active << 8) + d.inactive


def pick_rr(dests: Sequence[Dest], last: int | None) -> int | None:
    """ip_vs_rr.c: the next dest after `last` (None = the list head) with weight > 0."""
    n = len(dests)
    start = -1 if last is None else last
    for step in range(1, n + 1):
        i = (start + step) % n
        if dests[i].weight > 0 and not dests[i].overloaded:
            return i
    return None


def pick_lc(dests: Sequence[Dest]) -> int | None:
    """ip_vs_lc.c: smallest overhead, weight ignored except 0; ties stay with the first."""
    least: int | None = None
    for i, d in enumerate(dests):
        if d.overloaded or d.weight == 0:
            continue
        if least is None or conn_overhead(d) < conn_overhead(dests[least]):
            least = i
    return least


def _pick_weighted(dests: Sequence[Dest], overhead: str) -> int | None:
    """ip_vs_wlc.c / ip_vs_sed.c: first available dest, then strict cross-multiplied compare."""
    cost = conn_overhead if overhead == "conn" else (lambda d: d.active + 1)
    least: int | None = None
    for i, d in enumerate(dests):
        if least is None:
            if not d.overloaded and d.weight > 0:
                least = i
            continue
        if d.overloaded:
            continue
        # (s64)loh * w(dest) > (s64)doh * w(least): doh/w(dest) < loh/w(least), strictly
        if cost(dests[least]) * d.weight > cost(d) * dests[least].weight:
            least = i
    return least


def pick_wlc(dests: Sequence[Dest]) -> int | None:
    """ip_vs_wlc.c: minimise (256·active + inactive) / weight; ties to the earlier dest."""
    return _pick_weighted(dests, "conn")


def pick_sed(dests: Sequence[Dest]) -> int | None:
    """ip_vs_sed.c: minimise (active + 1) / weight, inactive ignored; ties to the earlier."""
    return _pick_weighted(dests, "sed")


def pick_nq(dests: Sequence[Dest]) -> int | None:
    """ip_vs_nq.c: the first idle (active == 0) dest at once, else like sed."""
    least: int | None = None
    for i, d in enumerate(dests):
        if d.overloaded or d.weight == 0:
            continue
        if d.active == 0:
            return i
        lw = dests[least].weight if least is not None else 0
        lo = dests[least].active + 1 if least is not None else 0
        if least is None or lo * d.weight > (d.active + 1) * lw:
            least = i
    return least


def pick_fo(dests: Sequence[Dest]) -> int | None:
    """ip_vs_fo.c: the highest weight (> 0) not overloaded; ties to the first."""
    best: int | None = None
    for i, d in enumerate(dests):
        if not d.overloaded and d.weight > (dests[best].weight if best is not None else 0):
            best = i
    return best


def pick_ovf(dests: Sequence[Dest]) -> int | None:
    """ip_vs_ovf.c: the highest weight with active <= weight; ties to the first."""
    best: int | None = None
    for i, d in enumerate(dests):
        if d.overloaded or d.active > d.weight or d.weight == 0:
            continue
        if best is None or d.weight > dests[best].weight:
            best = i
    return best


STATE_PICKERS = {
    "lc": pick_lc,
    "wlc": pick_wlc,
    "sed": pick_sed,
    "nq": pick_nq,
    "fo": pick_fo,
    "ovf": pick_ovf,
}


@dataclass(frozen=True, slots=True)
class WrrMark:
    """struct ip_vs_wrr_mark: cl (None = list head), cw, mw, di."""

    cl: int | None
    cw: int
    mw: int
    di: int


def _wrr_di_mw(weights: Sequence[int]) -> tuple[int, int]:
    positive = [w for w in weights if w > 0]
    di = math.gcd(*positive) if positive else 1
    return di, max([0, *weights]) - (di - 1)


def wrr_init(weights: Sequence[int]) -> WrrMark:
    """ip_vs_wrr_init_svc: cl at the head, cw = mw."""
    di, mw = _wrr_di_mw(weights)
    return WrrMark(cl=None, cw=mw, mw=mw, di=di)


def wrr_dest_changed(mark: WrrMark, weights: Sequence[int]) -> WrrMark:
    """ip_vs_wrr_dest_changed: cl back to the head; cw kept unless it no longer fits.

    So a service built by adding dests one by one does NOT start at cw = max weight: with
    `ipvsadm -a` of weights 2, 3, 4 (list order 4, 3, 2) cw stays 1 and the first picks are
    A, B, C before the AABABCABC period starts. `wrr_after_adds` replays that history.
    """
    di, mw = _wrr_di_mw(weights)
    cw = mark.cw
    if cw > mw or cw == 0:
        cw = mw
    elif di > 1:
        cw = (cw // di) * di + 1
    return WrrMark(cl=None, cw=cw, mw=mw, di=di)


def wrr_after_adds(weights: Sequence[int]) -> WrrMark:
    """The mark of a fresh service whose dests were added with `ipvsadm -a` in reverse list
    order (the only add order that yields this list order), with no traffic yet."""
    mark = wrr_init([])
    for k in range(1, len(weights) + 1):
        mark = wrr_dest_changed(mark, weights[len(weights) - k :])
    return mark


def pick_wrr(dests: Sequence[Dest], mark: WrrMark) -> tuple[int | None, WrrMark]:
    """ip_vs_wrr_schedule: walk on from cl for weight >= cw; each wrap lowers cw by di."""
    n = len(dests)
    if mark.mw == 0 or n == 0:
        return None, mark
    cw = mark.cw
    pos = -1 if mark.cl is None else mark.cl
    # At most mw/di + 1 passes over the list; bounded like the kernel's last_pass logic.
    for _ in range((mark.mw // mark.di + 2) * (n + 1)):
        pos += 1
        if pos >= n:
            pos = -1
            cw -= mark.di
            if cw <= 0:
                cw = mark.mw
            continue
        d = dests[pos]
        if not d.overloaded and d.weight >= cw:
            return pos, replace(mark, cl=pos, cw=cw)
    return None, replace(mark, cw=cw)


def wrr_sequence(weights: Sequence[int], count: int, mark: WrrMark | None = None) -> list[int]:
    """The first `count` wrr picks for idle dests of these weights from `mark`."""
    dests = [Dest(weight=w) for w in weights]
    state = wrr_init(weights) if mark is None else mark
    out: list[int] = []
    for _ in range(count):
        pick, state = pick_wrr(dests, state)
        if pick is None:
            break
        out.append(pick)
    return out


def wrr_states(weights: Sequence[int]) -> list[WrrMark]:
    """Every mark a service with these weights can be in (for aligning an observed run)."""
    di, mw = _wrr_di_mw(weights)
    cls: list[int | None] = [None, *range(len(weights))]
    return [WrrMark(cl=c, cw=cw, mw=mw, di=di) for c in cls for cw in range(1, mw + 1)]


def rr_sequence(weights: Sequence[int], count: int, last: int | None = None) -> list[int]:
    """The first `count` rr picks from the pointer `last` (None = fresh service)."""
    dests = [Dest(weight=w) for w in weights]
    out: list[int] = []
    for _ in range(count):
        pick = pick_rr(dests, last)
        if pick is None:
            break
        out.append(pick)
        last = pick
    return out


def held_sequence(scheduler: str, weights: Sequence[int], count: int) -> list[int]:
    """Picks for `count` serialized TCP connections that each reach ESTABLISHED and stay
    open (so each one adds 1 to its dest's active count before the next is scheduled)."""
    picker = STATE_PICKERS[scheduler]
    dests = [Dest(weight=w) for w in weights]
    out: list[int] = []
    for _ in range(count):
        pick = picker(dests)
        if pick is None:
            break
        out.append(pick)
        dests[pick] = replace(dests[pick], active=dests[pick].active + 1)
    return out
