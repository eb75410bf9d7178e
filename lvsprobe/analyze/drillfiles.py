"""What a failover drill leaves in the run directory, read for the failover analysis:
RUN/events.json (when the VIP moved, the sync daemon's settings, what the drill saw),
the directors' connection tables it saved under RUN/directors/, and the held flows'
heartbeat from the scenario the replay copied. The lab's drills write the first two
(`lvsprobe.lab.drill`, `lvsprobe.lab.drillrecord`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsprobe.errors import AnalysisError, LvsprobeError
from lvsprobe.replay import hooks

EVENTS_FILE = hooks.EVENTS_FILE
DIRECTORS_DIR = "directors"
# the drill's snapshots of the new director while it holds the VIP
WHILE_ACTIVE = ("after-failover", "before-failback")

ConnKey = tuple[str, int]  # (client address, client port)


@dataclass(frozen=True)
class DrillRecord:
    """RUN/events.json: the failover/fail-back times and what the drill saw on the directors.

    The file is either a bare event list `[{"t_s": S, "event": "failover"|"failback"}]` or
    the drill's object `{"events": [...], "sync": bool, "sync_threshold": [T, P],
    "directors": [{"when", "ns", "t_s", "file"}]}`.
    """

    events: list[dict[str, Any]]
    sync: bool | None = None
    sync_threshold: tuple[int, int] | None = None
    directors: list[dict[str, Any]] = field(default_factory=list)
    sync_wait: dict[str, Any] = field(default_factory=dict)
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # per director

    def time_of(self, event: str) -> float | None:
        return next((e["t_s"] for e in self.events if e["event"] == event), None)

    def done_of(self, event: str) -> float | None:
        return next((e.get("done_s") for e in self.events if e["event"] == event), None)

    def new_director(self) -> str | None:
        return next((e.get("to") for e in self.events if e["event"] == "failover"), None)


def read_drill(run_dir: Path) -> DrillRecord:
    """RUN/events.json, checked; an empty record if the run has none."""
    path = run_dir / EVENTS_FILE
    if not path.is_file():
        return DrillRecord([])
    try:
        doc = json.loads(path.read_text())
        raw = doc["events"] if isinstance(doc, dict) else doc
        events = [
            {"t_s": float(e["t_s"]), "event": str(e["event"])}
            | {k: e[k] for k in ("done_s", "from", "to") if e.get(k) is not None}
            for e in raw
        ]
        meta = doc if isinstance(doc, dict) else {}
        threshold = meta.get("sync_threshold")
        sync = meta.get("sync")
        return DrillRecord(
            sorted(events, key=lambda e: e["t_s"]),
            sync if isinstance(sync, bool) else None,
            (int(threshold[0]), int(threshold[1])) if threshold else None,
            [dict(d) for d in meta.get("directors", [])],
            dict(meta.get("sync_wait") or {}),
            {
                str(k): {str(n): str(v) for n, v in d.items()}
                for k, d in meta.get("sysctls", {}).items()
            },
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise AnalysisError(f"{path}: malformed event list: {exc}") from exc


def heartbeat_settings(run_dir: Path) -> tuple[float, float] | None:
    """(heartbeat, heartbeat timeout) in seconds of the run's held flows, from the scenario
    the replay copied into RUN/scenario.yaml; None if it has no held flows or no scenario."""
    path = run_dir / "scenario.yaml"
    if not path.is_file():
        return None
    from lvsprobe.replay.scenario import load_scenario

    try:
        scenario = load_scenario(path)
    except LvsprobeError as exc:
        raise AnalysisError(f"{path}: {exc}") from exc
    mixes = [m for m in scenario.flows if m.hold_s > 0]
    mixes += [r.mix for r in scenario.recorded if r.mix.hold_s > 0]
    if not mixes:
        return None
    return min(m.heartbeat_s for m in mixes), max(m.heartbeat_timeout_s for m in mixes)


def director_table(
    run_dir: Path,
    drill: DrillRecord,
    ns: str,
    when: str = "before-failover",
    origin: str | None = None,
) -> dict[ConnKey, str] | None:
    """(client address, port) -> state of director `ns`'s entries at `when` (only those of
    `origin` LOCAL or SYNC, if given); None if the run did not record it."""
    entry = next((d for d in drill.directors if d.get("ns") == ns and d.get("when") == when), None)
    if entry is None:
        return None
    path = run_dir / str(entry["file"])
    from lvsprobe.kernel.procfs.ip_vs_conn_sync import iter_ip_vs_conn_sync

    try:
        conns = list(iter_ip_vs_conn_sync(path.read_bytes(), source=str(path)))
    except OSError as exc:
        raise AnalysisError(f"{path}: cannot read the director's table: {exc}") from exc
    except LvsprobeError as exc:
        raise AnalysisError(f"{path}: {exc}") from exc
    return {
        (str(c.client_address), c.client_port): c.state
        for c in conns
        if not c.is_template and (origin is None or (c.origin and c.origin.value == origin))
    }
