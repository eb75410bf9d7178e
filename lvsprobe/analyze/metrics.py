"""Fairness metrics: Jain's index, max/min, Pearson chi-square against the implementation's
shares (docs/lvs/schedulers.md#fairness-metrics), and the Check record every analyzer reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.001  # chi-square rejection level: low, so correct directors do not flake


@dataclass
class Check:
    name: str
    passed: bool | None  # None: informational, decides nothing
    detail: str
    p_value: float | None = None


def jain_index(counts: Sequence[int], shares: Sequence[float]) -> float | None:
    """Jain's index over count/expected share (1.0 = exactly as the shares say)."""
    xs = [c / s for c, s in zip(counts, shares, strict=True) if s > 0]
    if not xs or not any(xs):
        return None
    return sum(xs) ** 2 / (len(xs) * sum(x * x for x in xs))


def max_min_ratio(counts: Sequence[int], shares: Sequence[float]) -> float | None:
    """max/min of count/expected share over backends meant to get traffic."""
    xs = [c / s for c, s in zip(counts, shares, strict=True) if s > 0]
    if not xs or min(xs) == 0:
        return None
    return max(xs) / min(xs)


def chi_square(counts: Sequence[int], shares: Sequence[float], alpha: float = ALPHA) -> Check:
    """Pearson chi-square of counts against the implementation's shares."""
    from scipy.stats import chisquare

    total = sum(counts)
    stray = [i for i, (c, s) in enumerate(zip(counts, shares, strict=True)) if s == 0 and c]
    if stray:
        return Check("chi-square", False, f"backends {stray} got traffic with expected share 0")
    pairs = [(c, s * total) for c, s in zip(counts, shares, strict=True) if s > 0]
    if len(pairs) < 2 or total < 5 * len(pairs):
        return Check("chi-square", None, f"too few samples ({total}) for a chi-square test")
    stat, p = chisquare([c for c, _ in pairs], [e for _, e in pairs])
    ok = bool(p >= alpha)
    return Check(
        "chi-square",
        ok,
        f"X²={stat:.2f}, df={len(pairs) - 1}, p={p:.4g} ({'≥' if ok else '<'} α={alpha})",
        float(p),
    )
