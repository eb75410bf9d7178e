"""Failover loss: what happened to each long-lived connection when the VIP moved, and how
long new connections took to recover.

The sync daemon's documented gaps (ip_vs_sync.c `ip_vs_sync_conn_needed`): a TCP entry is sent
to the backup only in ESTABLISHED (or a closing state), and, with `sync_threshold` "T P"
(default "3 50"), only when its inbound packet count is T, T+P, T+2P, ... So an entry that is
not yet established, or that saw fewer than T inbound packets, is not on the backup. When the
run holds the backup's connection table from just before the failover (RUN/directors/, written
by the lab's failover drill), each connection is judged by that evidence; otherwise by an
estimate of its inbound packets.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lvsprobe.analyze.drillfiles import ConnKey
from lvsprobe.errors import AnalysisError

HEARTBEAT_S = 0.1
SYNC_MIN_INBOUND_PKTS = 3  # sync_threshold "3 50": first sync on the 3rd inbound packet
MAX_LISTED = 500


def classify(outcome: str, detail: str | None) -> str:
    """A flow's fate: survived, reset, timeout, refused, wrong_backend, unreachable or error."""
    text = f"{outcome} {detail or ''}".lower()
    if outcome == "ok":
        return "survived"
    if "backend" in text:
        return "wrong_backend"
    if outcome in ("reset", "timeout", "refused"):
        return outcome
    if outcome in ("error:ehostunreach", "error:enetunreach"):
        return "unreachable"  # ICMP from a director that had lost (or not yet got) the VIP
    return "error"


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
    connections: list[dict[str, Any]] = field(default_factory=list)
    evidence: str = "estimate"  # "backup-table": the backup's table before the failover
    sync_threshold: int = SYNC_MIN_INBOUND_PKTS
    failover_done_s: float | None = None
    in_flight: dict[str, int] = field(default_factory=dict)
    new_total: int = 0
    new_fates: dict[str, int] = field(default_factory=dict)
    worst_connect_s: float | None = None
    recovery_evidence: str = "flow-log"  # "new-director-table": first through the new director
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # per director, if recorded

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
        doc["connections"] = doc["connections"][:MAX_LISTED]
        return doc


def _timeline(flows: pd.DataFrame, step_s: float) -> dict[str, list[float]]:
    """Open connections over time (start <= t < end), on a fixed grid."""
    end = float(flows["end_s"].max())
    step_s = max(step_s, end / 20000)
    n = int(end / step_s) + 2
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


def _sync_state(
    row: Any,
    failover_s: float,
    heartbeat_s: float,
    threshold: int,
    backup: Mapping[ConnKey, str] | None,
) -> tuple[str, int | None]:
    """Why a connection was (or was not) on the backup, and its estimated inbound packets."""
    connect = row.connect_s if pd.notna(row.connect_s) else None
    if connect is None or row.start_s + connect >= failover_s:
        return "not_established", None
    # SYN, ACK, then one data packet per heartbeat from the first (sent on connect); the
    # flow's own pace (answered heartbeats over its life) when slower than `heartbeat_s`
    answered = int(row.heartbeats) if pd.notna(row.heartbeats) else 0
    pace = heartbeat_s
    if answered > 0:
        pace = max(pace, (float(row.end_s) - row.start_s - connect) / answered)
    beats = 1 + int((failover_s - row.start_s - connect) / pace) if pace > 0 else 0
    inbound = 2 + beats
    if backup is not None:
        port = int(row.client_port) if pd.notna(row.client_port) else -1
        if (str(row.client_address), port) in backup:
            return "synced", inbound
        return ("few_packets" if inbound < threshold else "not_on_backup"), inbound
    return ("few_packets" if inbound < threshold else "syncable"), inbound


def _recovery(
    later: pd.DataFrame, failover_s: float, via_new: Collection[ConnKey] | None
) -> tuple[float | None, float | None]:
    """Time to recover for new connections: from the failover to the first connection
    established through the new director (`via_new`: the client address:ports in its table
    after the move); without that, to the first established after the last one that failed.
    And the longest connect time among those that succeeded (SYN retransmits hide outages)."""
    ok = later[later["outcome"] == "ok"]
    worst = None if ok.empty else float(ok["connect_s"].astype(float).max())
    if via_new is not None:
        keys = zip(ok["client_address"].astype(str), ok["client_port"], strict=True)
        ok = ok[[(a, int(p) if pd.notna(p) else -1) in via_new for a, p in keys]]
    else:
        failed = later[later["outcome"] != "ok"]
        if not failed.empty:
            ok = ok[ok["start_s"].astype(float) > float(failed["start_s"].max())]
    if ok.empty:
        return None, worst
    established = ok["start_s"].astype(float) + ok["connect_s"].astype(float).fillna(0.0)
    return float(established.min()) - failover_s, worst


def analyze_failover(
    flows: pd.DataFrame,
    failover_s: float,
    failback_s: float | None = None,
    label: str = "run",
    sync: bool | None = None,
    heartbeat_s: float = HEARTBEAT_S,
    backup: Mapping[ConnKey, str] | None = None,
    sync_threshold: int = SYNC_MIN_INBOUND_PKTS,
    failover_done_s: float | None = None,
    heartbeat_timeout_s: float | None = None,
    via_new: Collection[ConnKey] | None = None,
) -> FailoverResult:
    """Classify every long-lived connection open across the failover; time new connections'
    recovery. `backup`: the new director's table just before the failover (the evidence of
    what was synced); without it, sync is estimated from each connection's packets. A flow
    ended by `timeout` broke `heartbeat_timeout_s` before it ended (when known). `via_new`:
    the connections the new director's table gained while it held the VIP (recovery evidence)."""
    if flows.empty:
        raise AnalysisError(f"{label}: the run has no flows")
    start = flows["start_s"].astype(float)
    across = flows[(start < failover_s) & (flows["end_s"].astype(float) >= failover_s)]
    if across.empty:
        raise AnalysisError(
            f"{label}: no connection was open at the failover ({failover_s:.3f} s): "
            "nothing to classify (was the failover inside the run?)"
        )
    # long-lived = carried heartbeats; other flows caught open (short probes) are counted apart
    beating = across["heartbeats"].fillna(0).astype(int) > 0
    held = across[beating] if beating.any() else across
    flight = across[~beating] if beating.any() else across.iloc[0:0]
    fates: Counter[str] = Counter()
    gaps: Counter[str] = Counter()
    lost_at: Counter[str] = Counter()
    broken: list[dict[str, Any]] = []
    conns: list[dict[str, Any]] = []
    broken_synced = 0
    for row in held.itertuples(index=False):
        fate = classify(str(row.outcome), row.detail)
        fates[fate] += 1
        gap, inbound = _sync_state(row, failover_s, heartbeat_s, sync_threshold, backup)
        gaps[gap] += 1
        phase = None
        broke_at = float(row.end_s)
        if fate == "timeout" and heartbeat_timeout_s is not None:
            broke_at -= heartbeat_timeout_s  # the unanswered heartbeat was sent this long before
        if fate != "survived":
            # a connection alive until the fail-back was lost to the fail-back, not the failover
            phase = "failback" if failback_s is not None and broke_at >= failback_s else "failover"
            lost_at[phase] += 1
            broken_synced += gap in ("synced", "syncable") and phase == "failover"
        port = int(row.client_port) if pd.notna(row.client_port) else "?"
        item = {
            "flow_id": int(row.flow_id),
            "client": f"{row.client_address}:{port}",
            "fate": fate,
            "lost_at": phase,
            "sync": gap,
            "inbound_pkts_est": inbound,
            "end_s": float(row.end_s),
            "broke_at_s": None if fate == "survived" else round(broke_at, 3),
            "backend": row.backend,
            "detail": row.detail,
        }
        conns.append(item)
        if fate != "survived":
            broken.append(item)
    later = flows[start >= failover_s]
    if failback_s is not None:
        later = later[later["start_s"].astype(float) < failback_s]
    recovery, worst = _recovery(later, failover_s, via_new)
    new_fates = Counter(classify(str(r.outcome), r.detail) for r in later.itertuples())
    return FailoverResult(
        label=label,
        sync=sync,
        failover_s=failover_s,
        failback_s=failback_s,
        long_lived=len(held),
        fates=dict(sorted(fates.items())),
        gaps=dict(sorted(gaps.items())),
        broken_synced=int(broken_synced),
        recovery_s=recovery,
        lost_at=dict(sorted(lost_at.items())),
        new_failed=int((later["outcome"] != "ok").sum()),
        timeline=_timeline(flows, heartbeat_s),
        broken=broken,
        connections=conns,
        evidence="backup-table" if backup is not None else "estimate",
        sync_threshold=sync_threshold,
        failover_done_s=failover_done_s,
        in_flight=dict(
            sorted(Counter(classify(str(r.outcome), r.detail) for r in flight.itertuples()).items())
        ),
        new_total=len(later),
        new_fates=dict(sorted(new_fates.items())),
        worst_connect_s=worst,
        recovery_evidence="flow-log" if via_new is None else "new-director-table",
    )


def conntrack_risk(sysctls: Mapping[str, Mapping[str, str]]) -> bool:
    """Does a director run conntrack=1 with strict TCP window tracking? In the lab, synced
    connections that carry traffic across the switch then die (timeouts) while conntrack=0,
    or nf_conntrack_tcp_be_liberal=1, keeps every one."""
    return any(
        d.get("vs.conntrack") == "1" and d.get("nf_conntrack_tcp_be_liberal", "0") == "0"
        for d in sysctls.values()
    )


def _named(items: list[dict[str, Any]], limit: int = 8) -> str:
    shown = ", ".join(f"flow {c['flow_id']} {c['client']} ({c['sync']})" for c in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def expectation(result: FailoverResult, max_loss_no_sync: float = 0.9) -> dict[str, Any]:
    """What the kernel documents: without sync nearly all break; with sync every synced
    connection survives (the unsynced ones are named, with the reason)."""
    if result.sync is None:
        return {"passed": None, "detail": "sync state unknown: loss reported, not judged"}
    lost = result.lost_at.get("failover", 0)
    if result.sync:
        at_failover = [c for c in result.broken if c["lost_at"] == "failover"]
        synced = [c for c in at_failover if c["sync"] in ("synced", "syncable")]
        unsynced = [c for c in at_failover if c["sync"] not in ("synced", "syncable")]
        on_backup = result.gaps.get("synced", 0) + result.gaps.get("syncable", 0)
        detail = (
            f"{lost}/{result.long_lived} broke at the failover; {on_backup} were synced "
            f"({result.evidence}: {result.gaps}), {len(synced)} of those broke"
        )
        if synced:
            detail += f"; synced yet broken: {_named(synced)}"
            if conntrack_risk(result.sysctls):
                detail += (
                    "; the directors track IPVS connections in conntrack (vs.conntrack=1) with "
                    "strict TCP windows (nf_conntrack_tcp_be_liberal=0): packets after the "
                    "switch fall outside a stale or picked-up entry's window and are lost; "
                    "conntrack=0, or be_liberal=1, or conntrackd keeps them"
                )
        if unsynced:
            detail += f"; never synced, so lost as documented: {_named(unsynced)}"
        return {"passed": not synced, "detail": detail}
    ok = result.loss_ratio >= max_loss_no_sync
    return {
        "passed": ok,
        "detail": f"{lost}/{result.long_lived} broke at the failover without sync "
        f"(expected ≥ {max_loss_no_sync:.0%}; lost at: {result.lost_at or 'none'})",
    }
