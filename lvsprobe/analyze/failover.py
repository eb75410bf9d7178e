"""Failover loss: what happened to each long-lived connection when the VIP moved, and how
long new connections failed. The sync daemon's documented gaps (ip_vs_sync.c): entries not yet
ESTABLISHED, and entries that saw fewer than 3 inbound packets ("3 50" threshold), are not on
the backup; the analysis counts them apart."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lvsprobe.errors import AnalysisError

EVENTS_FILE = "events.json"
HEARTBEAT_S = 0.1
SYNC_MIN_INBOUND_PKTS = 3  # sync_threshold "3 50": first sync on the 3rd inbound packet
MAX_LISTED = 50


def classify(outcome: str, detail: str | None) -> str:
    """A flow's fate: survived, reset, timeout, refused, wrong_backend or error."""
    text = f"{outcome} {detail or ''}".lower()
    if outcome == "ok":
        return "survived"
    if "backend" in text:
        return "wrong_backend"
    if outcome in ("reset", "timeout", "refused"):
        return outcome
    return "error"


def read_events(run_dir: Path) -> list[dict[str, Any]]:
    """RUN/events.json: [{"t_s": seconds since run start, "event": "failover"|"failback"}]."""
    path = run_dir / EVENTS_FILE
    if not path.is_file():
        return []
    try:
        events = json.loads(path.read_text())
        out = [{"t_s": float(e["t_s"]), "event": str(e["event"])} for e in events]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AnalysisError(f"{path}: malformed event list: {exc}") from exc
    return sorted(out, key=lambda e: e["t_s"])


@dataclass
class FailoverResult:
    label: str
    sync: bool | None
    failover_s: float
    failback_s: float | None
    long_lived: int
    fates: dict[str, int]
    gaps: dict[str, int]
    broken_synced: int
    recovery_s: float | None
    new_failed: int
    lost_at: dict[str, int] = field(default_factory=dict)
    timeline: dict[str, list[float]] = field(default_factory=dict)
    broken: list[dict[str, Any]] = field(default_factory=list)

    @property
    def broken_total(self) -> int:
        return self.long_lived - self.fates.get("survived", 0)

    @property
    def loss_ratio(self) -> float:
        """Share of the connections open at the failover that the failover broke (breaks
        after the fail-back are counted apart, in `lost_at`)."""
        lost = self.lost_at.get("failover", 0)
        return lost / self.long_lived if self.long_lived else 0.0

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["broken_total"] = self.broken_total
        doc["loss_ratio"] = self.loss_ratio
        doc["broken"] = doc["broken"][:MAX_LISTED]
        return doc


def _timeline(flows: pd.DataFrame, step_s: float) -> dict[str, list[float]]:
    """Open connections over time (start <= t < end), on a fixed grid."""
    end = float(flows["end_s"].max())
    n = min(20000, int(end / step_s) + 2)
    grid = [round(i * step_s, 6) for i in range(n)]
    starts = sorted(flows["start_s"].astype(float))
    ends = sorted(flows["end_s"].astype(float))
    opened = closed = 0
    values: list[float] = []
    for t in grid:
        while opened < len(starts) and starts[opened] <= t:
            opened += 1
        while closed < len(ends) and ends[closed] <= t:
            closed += 1
        values.append(float(opened - closed))
    return {"t_s": grid, "open": values}


def analyze_failover(
    flows: pd.DataFrame,
    failover_s: float,
    failback_s: float | None = None,
    label: str = "run",
    sync: bool | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> FailoverResult:
    """Classify every connection open across the failover; time new connections' recovery."""
    if flows.empty:
        raise AnalysisError(f"{label}: the run has no flows")
    start = flows["start_s"].astype(float)
    across = flows[(start < failover_s) & (flows["end_s"].astype(float) >= failover_s)]
    if across.empty:
        raise AnalysisError(
            f"{label}: no connection was open at the failover ({failover_s:.3f} s): "
            "nothing to classify (was the failover inside the run?)"
        )
    fates: Counter[str] = Counter()
    gaps: Counter[str] = Counter()
    broken: list[dict[str, Any]] = []
    broken_synced = 0
    lost_at: Counter[str] = Counter()
    for row in across.itertuples(index=False):
        fate = classify(str(row.outcome), row.detail)
        fates[fate] += 1
        connect = row.connect_s if pd.notna(row.connect_s) else None
        if connect is None or row.start_s + connect >= failover_s:
            gap = "not_established"
        else:
            # SYN and ACK, then one data packet per heartbeat (client to director)
            sent = int((failover_s - row.start_s - connect) / heartbeat_s)
            gap = "few_packets" if 2 + sent < SYNC_MIN_INBOUND_PKTS else "syncable"
        gaps[gap] += 1
        if fate != "survived":
            # a connection alive until the fail-back was lost to the fail-back, not the failover
            phase = "failback" if failback_s is not None and row.end_s >= failback_s else "failover"
            lost_at[phase] += 1
            broken_synced += gap == "syncable" and phase == "failover"
            broken.append(
                {
                    "flow_id": int(row.flow_id),
                    "client": f"{row.client_address}:{row.client_port}",
                    "fate": fate,
                    "lost_at": phase,
                    "sync_gap": gap,
                    "end_s": float(row.end_s),
                    "backend": row.backend,
                    "detail": row.detail,
                }
            )
    later = flows[start >= failover_s]
    if failback_s is not None:
        later = later[later["start_s"].astype(float) < failback_s]
    ok_later = later[later["outcome"] == "ok"]
    recovery = None if ok_later.empty else float(ok_later["start_s"].min()) - failover_s
    return FailoverResult(
        label=label,
        sync=sync,
        failover_s=failover_s,
        failback_s=failback_s,
        long_lived=len(across),
        fates=dict(sorted(fates.items())),
        gaps=dict(sorted(gaps.items())),
        broken_synced=int(broken_synced),
        recovery_s=recovery,
        lost_at=dict(sorted(lost_at.items())),
        new_failed=int((later["outcome"] != "ok").sum()),
        timeline=_timeline(flows, heartbeat_s),
        broken=broken,
    )


def expectation(result: FailoverResult, max_loss_no_sync: float = 0.9) -> dict[str, Any]:
    """What the kernel documents: without sync nearly all break; with sync the synced
    (established, >= 3 inbound packets) connections survive."""
    if result.sync is None:
        return {"passed": None, "detail": "sync state unknown: loss reported, not judged"}
    if result.sync:
        ok = result.broken_synced == 0
        return {
            "passed": ok,
            "detail": f"{result.broken_synced} synced connections broke at the failover "
            f"(lost at: {result.lost_at or 'none'}; sync gaps: {result.gaps})",
        }
    ok = result.loss_ratio >= max_loss_no_sync
    lost = result.lost_at.get("failover", 0)
    return {
        "passed": ok,
        "detail": f"{lost}/{result.long_lived} broke at the failover without sync "
        f"(expected ≥ {max_loss_no_sync:.0%}; lost at: {result.lost_at or 'none'})",
    }
