"""A drill's record: what happened (`Drill`, by the guest's wall clock) and RUN/events.json
made from it, times relative to the replay's start, for `lvsprobe analyze failover|health`.

Apart from the drill's steps (`drill`, `healthdrill`) so the record can be written and read
back without a lab, and both drills write their keepalived part the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvsprobe.analyze.drillfiles import EVENTS_FILE
from lvsprobe.analyze.vrrp import NotifyEvent, first_after, master_at, read_notify_log
from lvsprobe.lab.faults import FaultKind, Injection
from lvsprobe.lab.keepalived import DIRECTORS

if TYPE_CHECKING:
    from lvsprobe.lab.lab import Lab, Switch


@dataclass
class Drill:
    """What happened, by the guest's wall clock (seconds since the epoch)."""

    switches: list[Switch] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)
    sync_wait: dict[str, Any] = field(default_factory=dict)
    sync_threshold: list[int] | None = None
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # per director
    injections: list[Injection] = field(default_factory=list)
    # keepalived's own transition times: {"ns", "after", "state", "last_transition_unix"}
    vrrp_dumps: list[dict[str, Any]] = field(default_factory=list)
    notify: dict[str, str] = field(default_factory=dict)  # per director: its events.jsonl
    keepalived: dict[str, Any] | None = None  # the settings (ha: keepalived)


def keepalived_settings(lab: Lab) -> dict[str, Any]:
    """The topology's keepalived settings as RUN/events.json records them."""
    ka = lab.topology.keepalived
    return {
        "advert_int_s": ka.advert_int_s,
        "priorities": dict(zip(DIRECTORS, ka.priorities, strict=True)),
        "preempt": ka.preempt,
        "delay_loop_s": ka.delay_loop_s,
        "connect_timeout_s": ka.connect_timeout_s,
        "retry": ka.retry,
        "delay_before_retry_s": ka.delay_before_retry_s,
        "inhibit_on_failure": ka.inhibit_on_failure,
    }


def run_start_unix(run_dir: Path) -> float:
    """The replay's start (Unix s, the guest's clock): what every `t_s` is relative to."""
    from lvsprobe.analyze import inputs

    flows = inputs.load_run(run_dir).flows
    return float((flows["start_unix"] - flows["start_s"]).min())


def notify_record(texts: dict[str, str], t0: float) -> list[NotifyEvent]:
    """Both directors' notify logs (events.jsonl text), times relative to `t0`, in order."""
    events = [e for ns, text in texts.items() for e in read_notify_log(text, ns, t0, ns)]
    return sorted(events, key=lambda e: e.t_s)


def keepalived_record(drill: Drill, t0: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The keepalived part of RUN/events.json, and the failover/fail-back events it implies:
    the fault's effect to the backup's MASTER (keepalived's own time when dumped), the undo to
    lvs1's MASTER again (if it took the VIPs back)."""
    notify = notify_record(drill.notify, t0)
    dumps = [
        {k: v for k, v in d.items() if k != "last_transition_unix"}
        | {"last_transition_s": round(d["last_transition_unix"] - t0, 6)}
        for d in drill.vrrp_dumps
    ]
    events: list[dict[str, Any]] = []
    for inj in drill.injections:
        doc = inj.to_json(t0)
        took = master_at(dumps, notify, "lvs2", "takeover", doc["started_s"])
        events.append(
            {
                "event": "failover",
                "t_s": doc["t_s"],
                "from": "lvs1",
                "to": "lvs2",
                "done_s": None if took is None else took[0],
            }
        )
        if doc["undo_s"] is not None:
            back = master_at(dumps, notify, "lvs1", "failback", doc["undo_started_s"])
            if inj.fault.kind is FaultKind.FREEZE:  # lvs1 never left MASTER: lvs2 steps down
                down = first_after(notify, doc["undo_started_s"], "lvs2", "instance", "BACKUP")
                back = None if down is None else (down.t_s, "notify")
            if back is not None:
                events.append(
                    {
                        "event": "failback",
                        "t_s": doc["undo_s"],
                        "done_s": back[0],
                        "from": "lvs2",
                        "to": "lvs1",
                    }
                )
    record = {
        "ha": "keepalived",
        "keepalived": drill.keepalived,
        "faults": [inj.to_json(t0) for inj in drill.injections],
        "notify": [e.to_json() for e in notify],
        "vrrp_dumps": dumps,
    }
    return record, events


def write_events(run_dir: Path, drill: Drill, sync: bool) -> Path:
    """RUN/events.json, times relative to the run's start (from the flow log)."""
    t0 = run_start_unix(run_dir)
    events = [
        {
            "event": "failover" if sw.new == "lvs2" else "failback",
            "t_s": round(sw.started_unix - t0, 6),
            "done_s": round(sw.done_unix - t0, 6),
            "from": sw.old,
            "to": sw.new,
        }
        for sw in drill.switches
    ]
    extra: dict[str, Any] = {}
    if drill.keepalived is not None:
        extra, events = keepalived_record(drill, t0)
    tables = [
        {k: v for k, v in t.items() if k != "unix"} | {"t_s": round(t["unix"] - t0, 6)}
        for t in drill.tables
    ]
    doc = {
        "events": events,
        "sync": sync,
        "sync_threshold": drill.sync_threshold,
        "sync_wait": {k: (None if v == float("inf") else v) for k, v in drill.sync_wait.items()},
        "sysctls": drill.sysctls,
        "directors": tables,
        **extra,
    }
    path = run_dir / EVENTS_FILE
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path
