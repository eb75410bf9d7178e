"""The nanny drill: a real server dies (or turns slow) during a replay in a keepalived cluster;
record what `lvsprobe analyze health RUN/` needs.

While the fault lasts the drill polls the active director (lvs1) about twice a second: its
notify log (the checker's DOWN and UP) and its connection table, keeping every entry the
kernel scheduled to the victim (client address:port, first seen), which is the director's
own account of the flows sent to the dead server. It writes:

    RUN/events.json                  drill "health", the victim, the fault (its effect and
                                     undo), keepalived's settings and notify lines
    RUN/directors/victim-conns.json  the victim's entries on lvs1: client, port, state, first
                                     seen (s since the run's start)
    RUN/directors/*-lvs1.json|txt    `lvsprobe status --json` and `ipvsadm -Ln` of lvs1
                                     before, during (checker said down) and after
    RUN/keepalived/                  both directors' configs, notify logs and own logs
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsprobe.analyze.drillfiles import DIRECTORS_DIR, EVENTS_FILE
from lvsprobe.analyze.vrrp import first_after, read_notify_log
from lvsprobe.errors import LabError, LvsprobeError
from lvsprobe.lab import faults, kastate, keepalived
from lvsprobe.lab.drill import require_master, wait_exit, warm_snapshots
from lvsprobe.lab.drillrecord import keepalived_settings, notify_record, run_start_unix
from lvsprobe.lab.faults import DEFAULT_DELAY_MS, Fault, FaultKind, Injection
from lvsprobe.lab.guest import Process
from lvsprobe.lab.lab import Lab
from lvsprobe.lab.snapshot import guest_snapshot_json

VICTIM_CONNS_FILE = f"{DIRECTORS_DIR}/victim-conns.json"
ACTIVE = "lvs1"


@dataclass(frozen=True, slots=True)
class HealthPlan:
    """What to break and how long to wait (seconds; every wait is bounded)."""

    victim: str = "rs1"
    fault: FaultKind = FaultKind.KILL_BACKEND
    port: int = 80  # the virtual service whose checker is judged (HTTP_GET on 80)
    warmup_s: float = 4.0  # the replay running before the fault
    outage_s: float = 5.0  # checker said down -> undo
    after_s: float = 3.0  # checker said up -> stop polling
    start_wait_s: float = 240.0  # bound: the replay's first connections (guest Python start)
    checker_wait_s: float = 30.0  # bound of each wait for the checker's verdict
    delay_ms: int = DEFAULT_DELAY_MS  # slow-backend: netem delay
    poll_s: float = 0.5


@dataclass
class HealthDrill:
    """What happened (Unix times, the guest's clock)."""

    injection: Injection | None = None
    victim_conns: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    notify: dict[str, str] = field(default_factory=dict)


class _Poller:
    """One guest call per poll: lvs1's notify log and connection table."""

    def __init__(self, lab: Lab, drill: HealthDrill, victim: str, port: int, poll_s: float):
        self.lab, self.drill, self.victim, self.port = lab, drill, victim, port
        self.poll_s = poll_s
        events = f"{keepalived.director_dir(ACTIVE)}/events.jsonl"
        self.script = (
            f'echo "$EPOCHREALTIME"; [ -e {events} ] && echo "$(<{events})"; echo "@@"; '
            'echo "$(</proc/net/ip_vs_conn)"'
        )

    def poll(self) -> list[Any]:
        """lvs1's notify events (Unix times); the victim's new table entries are kept."""
        from lvsprobe.kernel.procfs.ip_vs_conn import iter_ip_vs_conn

        out = self.lab.sh(ACTIVE, self.script).check().stdout
        head, _, table = out.partition("@@\n")
        stamp, _, notify = head.partition("\n")
        for conn in iter_ip_vs_conn(table.encode(), source=f"{ACTIVE} /proc/net/ip_vs_conn"):
            if str(conn.dest_address) != self.victim or conn.virtual_port != self.port:
                continue
            key = (str(conn.client_address), conn.client_port)
            seen = self.drill.victim_conns.setdefault(key, {"first_seen_unix": float(stamp)})
            seen["state"] = conn.state
        return read_notify_log(notify, ACTIVE, 0.0, f"{ACTIVE} events.jsonl")

    def until(self, state: str, since: float, rs: str, bound_s: float) -> bool:
        deadline = time.monotonic() + bound_s
        while time.monotonic() < deadline:
            events = self.poll()
            if first_after(events, since, ACTIVE, "rs", state, rs) is not None:
                return True
            time.sleep(self.poll_s)
        return False

    def hold(self, seconds: float) -> None:
        """Keep polling (the victim's entries) for `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.poll()
            time.sleep(self.poll_s)


def _snapshot(lab: Lab, run_dir: Path, drill: HealthDrill, when: str) -> None:
    name = f"{DIRECTORS_DIR}/{when}-{ACTIVE}"
    (run_dir / DIRECTORS_DIR).mkdir(parents=True, exist_ok=True)
    text = lab.sh(ACTIVE, 'echo "$EPOCHREALTIME"; ipvsadm -Ln').check().stdout
    stamp, _, table = text.partition("\n")
    (run_dir / f"{name}.txt").write_text(table)
    entry: dict[str, Any] = {
        "when": when,
        "ns": ACTIVE,
        "unix": float(stamp),
        "file": f"{name}.txt",
    }
    try:
        (run_dir / f"{name}.json").write_text(guest_snapshot_json(lab, ACTIVE))
        entry["snapshot"] = f"{name}.json"
    except (LvsprobeError, TimeoutError) as exc:
        entry["snapshot_error"] = str(exc)
    drill.snapshots.append(entry)


def _await_start(lab: Lab, proc: Process, port: int, bound_s: float) -> None:
    """Until lvs1's table has a connection to VIP:`port` (the replay is running)."""
    needle = f" {port:04X} "
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        table = lab.sh(ACTIVE, 'echo "$(</proc/net/ip_vs_conn)"').check().stdout
        if any(needle in line for line in table.splitlines()[1:]):
            return
        if (done := proc.poll()) is not None:
            raise LabError(
                f"health drill: the replay ended early: {(done.stderr or done.stdout)[-800:]}"
            )
        time.sleep(1.0)
    raise LabError(f"health drill: no connection to port {port} within {bound_s:.0f} s")


def run_health_drill(
    lab: Lab, run_dir: Path, argv: Sequence[str], plan: HealthPlan, run_timeout_s: float = 400.0
) -> HealthDrill:
    """Start the replay `argv` (writing `run_dir`), break `plan.victim` once the replay runs,
    undo it after the checker took it out, wait for the replay to end, write the record."""
    if plan.victim not in lab.real_server_names:
        raise LabError(f"health drill: no real server {plan.victim!r}")
    address = lab.real_server_addresses[lab.real_server_names.index(plan.victim)]
    rs = f"[{address}]:tcp:{plan.port}"
    drill = HealthDrill()
    poller = _Poller(lab, drill, address, plan.port, plan.poll_s)
    run_dir.mkdir(parents=True, exist_ok=True)
    warm_snapshots(lab)
    require_master(lab, ACTIVE, plan.checker_wait_s)
    proc = lab.spawn("client", list(argv))
    try:
        _await_start(lab, proc, plan.port, plan.start_wait_s)
        time.sleep(plan.warmup_s)
        _snapshot(lab, run_dir, drill, "before")
        fault = Fault(plan.fault, plan.victim, delay_ms=plan.delay_ms)
        injection = faults.inject(lab, fault)
        try:
            poller.until("DOWN", injection.started_unix, rs, plan.checker_wait_s)
            _snapshot(lab, run_dir, drill, "during")
            poller.hold(plan.outage_s)
        finally:
            injection = faults.undo(lab, injection)
            drill.injection = injection
        poller.until("UP", injection.undo_started_unix or 0.0, rs, plan.checker_wait_s)
        poller.hold(plan.after_s)
        _snapshot(lab, run_dir, drill, "after")
        wait_exit(proc, run_timeout_s)
    finally:
        if proc.result is None and proc.poll() is None:
            proc.stop()
        drill.notify = {ns: kastate.notify_text(lab, ns) for ns in keepalived.DIRECTORS}
        kastate.save_files(lab, run_dir)  # evidence, also of a drill that failed
    write_health_events(run_dir, drill, lab, plan, address)
    return drill


def write_health_events(
    run_dir: Path, drill: HealthDrill, lab: Lab, plan: HealthPlan, address: str
) -> Path:
    """RUN/events.json and RUN/directors/victim-conns.json, times relative to the run."""
    t0 = run_start_unix(run_dir)
    conns = [
        {
            "client": a,
            "port": p,
            "state": v.get("state"),
            "first_seen_s": round(v["first_seen_unix"] - t0, 6),
        }
        for (a, p), v in sorted(drill.victim_conns.items())
    ]
    (run_dir / VICTIM_CONNS_FILE).write_text(json.dumps(conns, indent=1) + "\n")
    notify = notify_record(drill.notify, t0)
    doc = {
        "drill": "health",
        "ha": "keepalived",
        "keepalived": keepalived_settings(lab),
        "victim": {
            "name": plan.victim,
            "address": address,
            "port": plan.port,
            "vs": f"[{lab.vip}]:tcp:{plan.port}",
        },
        "active_director": ACTIVE,
        "faults": [drill.injection.to_json(t0)] if drill.injection else [],
        "notify": [e.to_json() for e in notify],
        "victim_conns": VICTIM_CONNS_FILE,
        "directors": [
            {k: v for k, v in s.items() if k != "unix"} | {"t_s": round(s["unix"] - t0, 6)}
            for s in drill.snapshots
        ],
    }
    path = run_dir / EVENTS_FILE
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path
