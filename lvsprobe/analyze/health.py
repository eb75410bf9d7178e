"""The nanny drill judged: how long keepalived's checker took to remove a dead real server,
what the flows the kernel sent it in the meantime got, and how long it took to come back.

Evidence (lvsprobe.lab.healthdrill): the fault's effect and undo times, the active director's
notify lines (the checker's DOWN and UP), the victim's entries in its connection table (the
kernel's own account of which client address:port it scheduled to the victim), and its
tables while the checker said down. IPVS keeps a removed real server's connections but drops
their packets (expire_nodest_conn=0, ip_vs_in); `inhibit_on_failure` instead sets weight 0:
no new connections, the existing ones keep flowing. Either way nothing new goes to it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lvsprobe.analyze.failover import classify
from lvsprobe.analyze.vrrp import KeepalivedRecord, first_after, within
from lvsprobe.errors import AnalysisError, LvsprobeError

BIN_S = 0.5
MAX_LISTED = 200
# keepalived changes IPVS, then writes its notify line, which the lab's reader stamps when it
# reads it (tens of ms later under TCG: 12 ms seen): a flow started this close before the UP
# line may already have been sent to the returned server
NOTIFY_SLACK_S = 0.25


def read_victim_conns(run_dir: Path, rec: KeepalivedRecord) -> list[dict[str, Any]]:
    """RUN/directors/victim-conns.json: [{client, port, state, first_seen_s}]."""
    if not rec.victim_conns:
        return []
    path = run_dir / rec.victim_conns
    try:
        doc = json.loads(path.read_text())
        return [
            {
                "client": str(c["client"]),
                "port": int(c["port"]),
                "state": c.get("state"),
                "first_seen_s": float(c["first_seen_s"]),
            }
            for c in doc
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise AnalysisError(f"{path}: malformed victim connection list: {exc}") from exc


def victim_weight(run_dir: Path, rec: KeepalivedRecord, when: str) -> tuple[bool, int | None, int]:
    """From the active director's snapshot `when` (before, during, after): is the victim a
    destination of the service, its weight, its active connections. (False, None, 0) when
    the snapshot says it was removed."""
    from lvsprobe.snapshot_json import snapshot_from_json

    assert rec.victim is not None
    entry = next((d for d in rec.directors or [] if d.get("when") == when), None)
    if entry is None or "snapshot" not in entry:
        raise AnalysisError(f"{run_dir}: no snapshot of the director {when} the fault")
    path = run_dir / str(entry["snapshot"])
    try:
        snap = snapshot_from_json(json.loads(path.read_text()))
    except (OSError, ValueError, LvsprobeError) as exc:
        raise AnalysisError(f"{path}: {exc}") from exc
    vip = rec.victim["vs"].split("]")[0].lstrip("[")
    for svc in snap.services:
        key = svc.key
        if str(key.address) == vip and key.port == int(rec.victim["port"]):
            for rs in svc.real_servers:
                if str(rs.address) == rec.victim["address"]:
                    return True, rs.weight, rs.active_conns
            return False, None, 0
    raise AnalysisError(f"{path}: no service {rec.victim['vs']} on the director")


def _fates(rows: pd.DataFrame) -> dict[str, int]:
    fates = Counter(classify(str(r.outcome), r.detail) for r in rows.itertuples())
    return dict(sorted(fates.items()))


def _timeline(flows: pd.DataFrame, victim: set[int]) -> dict[str, list[float]]:
    """Flows started per BIN_S: succeeded, failed, and those the kernel sent to the victim."""
    end = float(flows["start_s"].max()) if not flows.empty else 0.0
    n = int(end / BIN_S) + 1
    ok, failed, to_victim = [0.0] * n, [0.0] * n, [0.0] * n
    for r in flows.itertuples():
        i = min(int(float(r.start_s) / BIN_S), n - 1)
        (ok if r.outcome == "ok" else failed)[i] += 1
        to_victim[i] += int(r.flow_id) in victim
    return {
        "t_s": [round(i * BIN_S, 3) for i in range(n)],
        "ok": ok,
        "failed": failed,
        "to_victim": to_victim,
    }


def analyze_health(
    flows: pd.DataFrame,
    rec: KeepalivedRecord,
    conns: list[dict[str, Any]],
    weights: dict[str, tuple[bool, int | None, int]],
    tolerance_s: float,
) -> dict[str, Any]:
    """Judge the drill (see the module docstring); `weights`: victim_weight per snapshot,
    or why it could not be read."""
    if rec.victim is None or not rec.faults:
        raise AnalysisError("not a health drill: no victim or fault in events.json")
    if flows.empty:
        raise AnalysisError("the run has no flows")
    fault, victim, timers = rec.faults[0], rec.victim, rec.timers
    timed_out = fault["fault"] == "slow-backend"
    rs = f"[{victim['address']}]:tcp:{victim['port']}"
    since = float(fault.get("started_s") or fault["t_s"])
    t_fault = fault["t_s"]
    down = first_after(rec.notify, since, rec.active, "rs", "DOWN", rs)
    checks: list[dict[str, Any]] = []

    def check(name: str, passed: bool | None, detail: str) -> None:
        checks.append({"check": name, "passed": passed, "detail": detail})

    window = timers.checker_down_window(timed_out)
    doc: dict[str, Any] = {
        "kind": "health",
        "fault": fault["fault"],
        "victim": victim,
        "fault_s": t_fault,
        "predicted_removal_s": list(window),
        "inhibit_on_failure": timers.inhibit_on_failure,
        "tolerance_s": tolerance_s,
    }
    t_down = down.t_s if down is not None else float(flows["end_s"].max())
    if down is None:
        check("removal", False, f"the checker never declared {rs} down")
    else:
        removal = t_down - t_fault
        doc["removal_s"] = round(removal, 4)
        check(
            "removal",
            within(removal, window, tolerance_s),
            f"{rs} down {removal:.3f} s after the {fault['fault']}; predicted "
            f"{window[0]:.3f}..{window[1]:.3f} s (delay_loop {timers.delay_loop_s:g}, retry "
            f"{timers.retry}, delay_before_retry {timers.delay_before_retry_s:g}"
            + (f", connect_timeout {timers.connect_timeout_s:g})" if timed_out else ")"),
        )
    keys = {(c["client"], c["port"]) for c in conns}
    addr, port = flows["client_address"].astype(str), flows["client_port"]
    sent = [(a, int(p) if pd.notna(p) else -1) in keys for a, p in zip(addr, port, strict=True)]
    to_victim = flows[sent]
    start = flows["start_s"].astype(float)
    in_window = flows[(start >= t_fault) & (start < t_down)]
    victim_window = in_window[in_window["flow_id"].isin(to_victim["flow_id"])]
    failed_window = in_window[in_window["outcome"] != "ok"]
    doc["window"] = {
        "flows": len(in_window),
        "fates": _fates(in_window),
        "to_victim": len(victim_window),
        "victim_fates": _fates(victim_window),
        "failed": len(failed_window),
    }
    if not timed_out:
        unmatched = set(failed_window["flow_id"]) ^ set(victim_window["flow_id"])
        check(
            "window counts",
            not unmatched,
            f"{len(victim_window)} flows sent to the dead {victim['name']} before its "
            f"removal (the director's table), {len(failed_window)} failed in the flow log"
            + (f"; differing flows: {sorted(unmatched)[:20]}" if unmatched else ": the same"),
        )
    else:
        check(
            "window counts",
            None,
            f"{len(victim_window)} flows sent to the slow "
            f"{victim['name']} before its removal: {_fates(victim_window)}",
        )
    up = first_after(
        rec.notify, float(fault.get("undo_started_s") or t_down), rec.active, "rs", "UP", rs
    )
    t_up = up.t_s if up is not None else float(flows["end_s"].max()) + 1
    victim_start = to_victim["start_s"].astype(float)
    out = to_victim[(victim_start >= t_down) & (victim_start < t_up - NOTIFY_SLACK_S)]
    if down is not None:
        check(
            "none after removal",
            out.empty,
            f"{len(out)} flows sent to {victim['name']} between its removal and its return",
        )
    check(*_kept_or_removed(weights, timers.inhibit_on_failure, victim["name"]))
    undo = fault.get("undo_s")
    if up is None or undo is None:
        check("return", False, f"{rs} never came back up after the undo")
    else:
        bound = timers.checker_up_bound(timed_out)
        doc["readd_s"] = round(t_up - undo, 4)
        check(
            "return",
            within(t_up - undo, (0.0, bound), tolerance_s),
            f"{rs} up {t_up - undo:.3f} s after the {victim['name']} recovered (≤ {bound:.3f} s)",
        )
    doc["after_return"] = {"to_victim": int((to_victim["start_s"].astype(float) >= t_up).sum())}
    doc["events"] = {
        "down_s": None if down is None else t_down,
        "undo_s": undo,
        "up_s": None if up is None else t_up,
    }
    doc["timeline"] = _timeline(flows, set(to_victim["flow_id"].astype(int)))
    doc["victim_flows"] = [
        {
            "flow_id": int(r.flow_id),
            "client": f"{r.client_address}:{int(r.client_port)}",
            "start_s": float(r.start_s),
            "fate": classify(str(r.outcome), r.detail),
        }
        for r in to_victim[to_victim["start_s"].astype(float) >= t_fault].itertuples()
    ][:MAX_LISTED]
    doc["checks"] = checks
    decided = [c["passed"] for c in checks if c["passed"] is not None]
    doc["passed"] = all(decided) if decided else None
    return doc


def _kept_or_removed(
    weights: Mapping[str, tuple[bool, int | None, int] | str], inhibit: bool, name: str
) -> tuple[str, bool | None, str]:
    during = weights.get("during", "no director snapshot while it was down")
    if isinstance(during, str):
        return "inhibit or removal", None, during
    present, weight, active = during
    if inhibit:
        ok = present and weight == 0
        what = f"weight {weight}, {active} active connections kept" if present else "removed"
        return "inhibit or removal", ok, f"inhibit_on_failure: {name} {what} while down"
    what = f"still a destination (weight {weight})" if present else "removed"
    return (
        "inhibit or removal",
        not present,
        (
            f"removal: {name} {what} while down (IPVS drops its connections' packets until it "
            "returns)"
        ),
    )
