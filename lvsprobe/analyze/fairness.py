"""Fairness: did the director's scheduler do what the kernel's algorithm must?

Exact schedulers (rr, wrr, lc, wlc, sed, nq, fo, ovf): the observed pick sequence against the
model's. Hashing ones (sh, mh, dh): every client against the backend the kernel's hash must give
it, plus chi-square against the table's real shares. Others: chi-square and stickiness.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lvsprobe.analyze import hashing, schedulers
from lvsprobe.analyze.inputs import ServiceModel, backend_column, ip
from lvsprobe.analyze.metrics import ALPHA, Check, chi_square, jain_index, max_min_ratio
from lvsprobe.errors import AnalysisError

TIE_WINDOW_S = 0.0005  # flows started closer than this may reach the director in any order
MAX_LISTED = 20
SEQUENCE_SHOWN = 200  # picks kept in the JSON (and shown in the report) per service


@dataclass
class FairnessResult:
    service: str
    scheduler: str
    model_source: str
    backends: list[str]
    weights: list[int]
    counts: list[int]
    expected_share: list[float]
    checks: list[Check] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    excluded_flows: int = 0
    observed_sequence: list[str] = field(default_factory=list)
    predicted_sequence: list[str | None] = field(default_factory=list)

    @property
    def observed_share(self) -> list[float]:
        total = sum(self.counts)
        return [c / total if total else 0.0 for c in self.counts]

    @property
    def passed(self) -> bool:
        decided = [c.passed for c in self.checks if c.passed is not None]
        return bool(decided) and all(decided)

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["observed_share"] = self.observed_share
        doc["jain_index"] = jain_index(self.counts, self.expected_share)
        doc["max_min_ratio"] = max_min_ratio(self.counts, self.expected_share)
        doc["passed"] = self.passed
        return doc


def _index_flows(flows: pd.DataFrame, model: ServiceModel) -> tuple[pd.DataFrame, int]:
    """Flows that reached a backend, with `pick` = the backend's index in list order."""
    served = backend_column(flows)
    names = {b.name: i for i, b in enumerate(model.backends)}
    names.update({b.address: i for i, b in enumerate(model.backends)})
    mask = served.notna()
    picked = flows[mask].copy()
    picked["served_by"] = served[mask].astype(str)
    unknown = sorted(set(picked["served_by"]) - set(names))
    if unknown:
        raise AnalysisError(
            f"flows were served by {', '.join(unknown)}, which the service model "
            f"({model.source}: {', '.join(model.names)}) does not list"
        )
    picked["pick"] = picked["served_by"].map(names).astype(int)
    return picked.reset_index(drop=True), int((~mask).sum())


def _groups(starts: Sequence[float], window: float) -> list[tuple[int, int]]:
    """Runs of flows whose starts are closer than `window`: their order is not known."""
    out: list[tuple[int, int]] = []
    begin = 0
    for k in range(1, len(starts) + 1):
        if k == len(starts) or starts[k] - starts[k - 1] >= window:
            out.append((begin, k))
            begin = k
    return out


def compare_sequence(
    observed: Sequence[int], predicted: Sequence[int], starts: Sequence[float], window: float
) -> list[int]:
    """Positions where observed and predicted differ, order-free inside concurrent groups."""
    bad: list[int] = []
    for a, b in _groups(starts, window):
        if Counter(observed[a:b]) != Counter(predicted[a:b]):
            bad.extend(k for k in range(a, b) if observed[k] != predicted[k])
    return bad


def _sequence_check(
    result: FairnessResult, picked: pd.DataFrame, model: ServiceModel, window: float
) -> None:
    observed = picked["pick"].tolist()
    starts = picked["start_s"].tolist()
    weights = model.weights
    if model.scheduler == "rr":
        states: list[Any] = [None, *range(len(weights))]
        fresh: Any = None

        def run(state: Any) -> list[int]:
            return schedulers.rr_sequence(weights, len(observed), state)
    else:
        states = schedulers.wrr_states(weights)
        fresh = schedulers.wrr_after_adds(weights)
        states = [fresh, *[s for s in states if s != fresh]]

        def run(state: Any) -> list[int]:
            return schedulers.wrr_sequence(weights, len(observed), state)

    best: tuple[list[int], Any, list[int]] | None = None
    for state in states:
        predicted = run(state)
        bad = compare_sequence(observed, predicted, starts, window)
        if best is None or len(bad) < len(best[0]):
            best = (bad, state, predicted)
        if not bad:
            break
    assert best is not None
    bad, state, predicted = best
    where = "a freshly built service" if state == fresh else f"scheduler state {state}"
    detail = (
        f"{len(observed) - len(bad)}/{len(observed)} picks follow the kernel's "
        f"{model.scheduler} sequence from {where}"
    )
    result.checks.append(Check("sequence", not bad, detail))
    _list_mismatches(result, picked, predicted, bad, model)


def _list_mismatches(
    result: FairnessResult,
    picked: pd.DataFrame,
    predicted: Sequence[int | None],
    bad: Sequence[int],
    model: ServiceModel,
) -> None:
    names = model.names
    result.observed_sequence = [names[int(p)] for p in picked["pick"][:SEQUENCE_SHOWN]]
    result.predicted_sequence = [
        None if p is None else names[p] for p in predicted[:SEQUENCE_SHOWN]
    ]
    for k in bad[:MAX_LISTED]:
        row = picked.iloc[k]
        want = predicted[k]
        result.mismatches.append(
            {
                "position": int(k),
                "flow_id": int(row["flow_id"]),
                "client": f"{row['client_address']}:{row['client_port']}",
                "start_s": float(row["start_s"]),
                "observed": model.names[int(row["pick"])],
                "expected": None if want is None else model.names[want],
            }
        )


def reconstruct_state(
    picked: pd.DataFrame, k: int, count: int, weights: Sequence[int], fin_timeout_s: float
) -> list[schedulers.Dest]:
    """Each dest's active/inactive counts when flow k was scheduled, from earlier flows:
    open (or still connecting) = active; closed within the FIN/TIME_WAIT timeout = inactive."""
    t = float(picked.at[k, "start_s"])
    active = [0] * count
    inactive = [0] * count
    for j in range(k):
        end = float(picked.at[j, "end_s"])
        d = int(picked.at[j, "pick"])
        if end > t:
            active[d] += 1
        elif end + fin_timeout_s > t:
            inactive[d] += 1
    return [schedulers.Dest(w, a, i) for w, a, i in zip(weights, active, inactive, strict=True)]


def _state_check(
    result: FairnessResult, picked: pd.DataFrame, model: ServiceModel, fin_timeout_s: float
) -> None:
    picker = schedulers.STATE_PICKERS[model.scheduler]
    n = len(model.backends)
    predicted: list[int | None] = []
    for k in range(len(picked)):
        predicted.append(picker(reconstruct_state(picked, k, n, model.weights, fin_timeout_s)))
    observed = picked["pick"].tolist()
    bad = [k for k, (o, p) in enumerate(zip(observed, predicted, strict=True)) if o != p]
    detail = (
        f"{len(observed) - len(bad)}/{len(observed)} picks are what {model.scheduler} must "
        "choose given the connections open at each flow's start (read from the flow log)"
    )
    result.checks.append(Check("decisions", not bad, detail))
    _list_mismatches(result, picked, predicted, bad, model)


def hash_predictions(model: ServiceModel, picked: pd.DataFrame) -> tuple[list[int | None], str]:
    """The backend each flow's client must map to under sh/mh/dh, and the hash used."""
    weights = model.weights
    if model.scheduler == "sh":
        table = hashing.sh_table(weights)
        use_port = "sh-port" in model.flags
        fallback = "sh-fallback" in model.flags
        out = [
            hashing.sh_pick(
                table, weights, ip(a), int(p or 0) if use_port else 0, fallback=fallback
            )
            for a, p in zip(picked["client_address"], picked["client_port"], strict=True)
        ]
        return out, "sh: hash_32 of the source (4.x+), 256 buckets tiled by weight"
    if model.scheduler == "mh":
        dests = [(ip(b.address), b.port, b.weight) for b in model.backends]
        table = hashing.mh_table(dests)
        use_port = "mh-port" in model.flags
        fallback = "mh-fallback" in model.flags
        out = [
            hashing.mh_pick(table, weights, ip(a), int(p or 0) if use_port else 0, fallback)
            for a, p in zip(picked["client_address"], picked["client_port"], strict=True)
        ]
        return out, f"mh: 64-bit hsiphash, {len(table)}-slot Maglev table"
    table = hashing.dh_table(len(weights))
    out = [table[hashing.dh_bucket(ip(a))] for a in picked["server_address"]]
    return out, "dh: destination hash, 256 buckets one per dest"


def expected_shares(model: ServiceModel) -> list[float]:
    """What share each backend must get: the implementation's, not the nominal weights."""
    w = model.weights
    n = len(w)
    if model.scheduler == "sh":
        return hashing.table_shares(hashing.sh_table(w), n)
    if model.scheduler == "mh":
        dests = [(ip(b.address), b.port, b.weight) for b in model.backends]
        return hashing.table_shares(hashing.mh_table(dests), n)
    if model.scheduler in ("rr", "lc", "dh"):
        live = [1 if x > 0 else 0 for x in w]
    elif model.scheduler == "fo":
        top = max(w, default=0)
        first = w.index(top) if top > 0 else -1
        live = [1 if i == first else 0 for i in range(n)]
    else:
        live = [max(0, x) for x in w]
    total = sum(live)
    return [x / total if total else 0.0 for x in live]


def _first_per_client_net(picked: pd.DataFrame, prefix: int | None) -> pd.DataFrame:
    """Under persistence only the first connection of each client net is scheduled."""
    from lvsprobe.analyze.persistence import client_net

    nets = [client_net(a, prefix) for a in picked["client_address"]]
    keep = ~pd.Series(nets).duplicated().to_numpy()
    return picked[keep].reset_index(drop=True)


def analyze_fairness(
    flows: pd.DataFrame,
    model: ServiceModel,
    service: str,
    tie_window_s: float = TIE_WINDOW_S,
    fin_timeout_s: float = 120.0,
    alpha: float = ALPHA,
) -> FairnessResult:
    """All fairness checks of one service's flows against its model."""
    if flows.empty:
        raise AnalysisError(f"service {service}: the run sent it no flows")
    picked, excluded = _index_flows(flows, model)
    if picked.empty:
        raise AnalysisError(f"service {service}: no flow reached a backend ({excluded} failed)")
    if model.persistence_s:
        picked = _first_per_client_net(picked, model.netmask_prefix)
    shares = expected_shares(model)
    counts = [int(c) for c in picked["pick"].value_counts().reindex(range(len(shares))).fillna(0)]
    result = FairnessResult(
        service=service,
        scheduler=model.scheduler,
        model_source=model.source,
        backends=model.names,
        weights=model.weights,
        counts=counts,
        expected_share=shares,
        excluded_flows=excluded,
    )
    if model.persistence_s:
        result.checks.append(
            Check("persistence", None, "persistent service: first flow per client net counted")
        )
    sched = model.scheduler
    if sched in ("rr", "wrr"):
        _sequence_check(result, picked, model, tie_window_s)
    elif sched in schedulers.STATE_PICKERS:
        _state_check(result, picked, model, fin_timeout_s)
    elif sched in schedulers.HASHED:
        predicted, how = hash_predictions(model, picked)
        observed = picked["pick"].tolist()
        bad = [k for k, (o, p) in enumerate(zip(observed, predicted, strict=True)) if o != p]
        detail = f"{len(observed) - len(bad)}/{len(observed)} flows on the backend {how} gives"
        result.checks.append(Check("exact-mapping", not bad, detail))
        _list_mismatches(result, picked, predicted, bad, model)
    if sched in ("sh", "mh"):
        clients = picked.drop_duplicates("client_address")
        ccounts = Counter(int(x) for x in clients["pick"])
        check = chi_square([ccounts.get(i, 0) for i in range(len(shares))], shares, alpha)
        check.name = "chi-square (distinct clients vs table shares)"
        check.passed = None
        check.detail += " (informational: the exact mapping decides)"
        result.checks.append(check)
    elif sched in ("twos",):
        result.checks.append(chi_square(counts, shares, alpha))
    elif sched in schedulers.HISTORY:
        _stickiness(result, picked)
    result.checks.append(
        Check("jain", None, f"Jain's index {jain_index(counts, shares) or 0:.5f} over shares")
    )
    return result


def _stickiness(result: FairnessResult, picked: pd.DataFrame) -> None:
    """lblc/lblcr: each destination address stays on one backend unless overloaded."""
    per_dest = picked.groupby("server_address")["pick"].nunique()
    moved = per_dest[per_dest > 1]
    result.checks.append(
        Check(
            "locality",
            None,
            f"{len(per_dest) - len(moved)}/{len(per_dest)} destination addresses stayed on one "
            "backend (lblc may move a destination when its backend is overloaded)",
        )
    )


def analyze_counts(
    counts_by_name: Mapping[str, int], model: ServiceModel, service: str, alpha: float = ALPHA
) -> FairnessResult:
    """Fairness from connection counts alone (counter deltas of two snapshots)."""
    unknown = sorted(set(counts_by_name) - set(model.names))
    if unknown:
        raise AnalysisError(f"counts name backends the model does not list: {unknown}")
    counts = [int(counts_by_name.get(n, 0)) for n in model.names]
    total = sum(counts)
    if total == 0:
        raise AnalysisError(f"service {service}: no new connections between the snapshots")
    shares = expected_shares(model)
    result = FairnessResult(
        service, model.scheduler, model.source, model.names, model.weights, counts, shares
    )
    if model.scheduler in ("rr", "wrr"):
        prefixes = []
        starts: list[Any] = (
            [None, *range(len(counts))]
            if model.scheduler == "rr"
            else schedulers.wrr_states(model.weights)
        )
        for s in starts:
            seq = (
                schedulers.rr_sequence(model.weights, total, s)
                if model.scheduler == "rr"
                else schedulers.wrr_sequence(model.weights, total, s)
            )
            c = Counter(seq)
            prefixes.append([c.get(i, 0) for i in range(len(counts))])
        ok = counts in prefixes
        result.checks.append(
            Check("counts", ok, f"{counts} {'is' if ok else 'is not'} a {model.scheduler} split")
        )
    else:
        check = chi_square(counts, shares, alpha)
        if model.scheduler not in ("twos",):
            check.passed = None
            check.detail += " (informational: counts alone do not fix this scheduler's picks)"
        result.checks.append(check)
    return result
