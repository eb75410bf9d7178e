"""A failover drill around a replay running in the lab: wait until the long-lived connections
are established (and, with the sync daemon, on the backup), fail over, wait, fail back, and
record into the run directory what `lvsprobe analyze failover RUN/` needs from the directors:

    RUN/events.json          failover and fail-back times (s since the run's start), the sync
                             daemon's state and threshold, how long the sync wait took; with
                             keepalived also the fault, keepalived's settings, its notify lines
                             and its own transition times (JSON dumps)
    RUN/directors/*.txt      /proc/net/ip_vs_conn_sync of lvs1 and lvs2 (Origin column) before
                             the failover, after it, before and after the fail-back
    RUN/directors/*.json     `lvsprobe status --json` of both directors at the same points
    RUN/keepalived/          (keepalived) both directors' configs, notify logs and own logs

The steps are here; what they saw is a `Drill`, which `drillrecord` writes as RUN/events.json.

Without keepalived (`ha: manual`) the lab moves the VIPs; with it, a fault on lvs1 (stop,
freeze, link) makes VRRP move them, and undoing the fault may bring them back (preempt).

Every wait is bounded; a wait that runs out is recorded, not hidden: the analyzer then judges
each connection by what the backup's table really held.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lvsprobe.analyze.drillfiles import DIRECTORS_DIR
from lvsprobe.analyze.vrrp import first_after
from lvsprobe.errors import LabError, LvsprobeError
from lvsprobe.lab import faults, kastate
from lvsprobe.lab.drillrecord import Drill, keepalived_settings, write_events
from lvsprobe.lab.faults import Fault, FaultKind
from lvsprobe.lab.keepalived import DIRECTORS
from lvsprobe.lab.snapshot import guest_snapshot_json

if TYPE_CHECKING:
    from lvsprobe.lab.guest import Process
    from lvsprobe.lab.lab import Lab

READ_TABLE = 'echo "$EPOCHREALTIME"; echo "$(</proc/net/ip_vs_conn_sync)"'
SYSCTLS = {
    "vs.sync_threshold": "ipv4/vs/sync_threshold",
    "vs.sync_refresh_period": "ipv4/vs/sync_refresh_period",
    "vs.conntrack": "ipv4/vs/conntrack",
    "nf_conntrack_tcp_be_liberal": "netfilter/nf_conntrack_tcp_be_liberal",
}


@dataclass(frozen=True, slots=True)
class DrillPlan:
    """What to watch and how long to wait (seconds; every wait is bounded)."""

    port: int  # the VIP port of the long-lived connections
    long_lived: frozenset[str]  # their client addresses (one connection each)
    sync: bool  # is the sync daemon running (then wait for the backup's copies)
    outage_s: float = 8.0  # failover done -> fail-back
    settle_s: float = 1.0  # after the wait, before the failover
    wait_s: float = 240.0  # bound of the wait for the connections (guest Python start-up)
    sync_wait_s: float = 45.0  # bound of the wait for the backup's copies (then fail over anyway)
    sync_clients: frozenset[str] | None = None  # whose copies to wait for (default long_lived)
    poll_s: float = 1.0
    fault: FaultKind | None = None  # keepalived: the fault on lvs1; None: move the VIPs by hand
    vrrp_wait_s: float = 30.0  # bound of each wait for a VRRP transition (keepalived)


def _keys(text: str, port: int, clients: Collection[str]) -> dict[tuple[str, int], str]:
    """(client address, client port) -> state of the TCP entries to VIP:`port` from `clients`."""
    from lvsprobe.kernel.procfs.ip_vs_conn_sync import iter_ip_vs_conn_sync

    out = {}
    for conn in iter_ip_vs_conn_sync(text.encode()):
        ours = conn.protocol == "TCP" and conn.virtual_port == port and not conn.is_template
        if ours and str(conn.client_address) in clients:
            out[(str(conn.client_address), conn.client_port)] = conn.state
    return out


class _Director:
    def __init__(self, lab: Lab, run_dir: Path, drill: Drill):
        self.lab, self.run_dir, self.drill = lab, run_dir, drill
        (run_dir / DIRECTORS_DIR).mkdir(parents=True, exist_ok=True)

    def table(self, ns: str) -> tuple[float, str]:
        out = self.lab.sh(ns, READ_TABLE).check().stdout
        stamp, _, text = out.partition("\n")
        return float(stamp), text

    def record(self, when: str, status: bool = False) -> None:
        """Both directors' tables (and status snapshots), saved under RUN/directors/."""
        for ns in DIRECTORS:
            stamp, text = self.table(ns)
            name = f"{DIRECTORS_DIR}/{when}-{ns}"
            (self.run_dir / f"{name}.txt").write_text(text)
            entry: dict[str, Any] = {"when": when, "ns": ns, "unix": stamp, "file": f"{name}.txt"}
            try:
                if status:
                    (self.run_dir / f"{name}.json").write_text(guest_snapshot_json(self.lab, ns))
                    entry["snapshot"] = f"{name}.json"
            except (LvsprobeError, TimeoutError) as exc:  # the table above is what matters
                entry["snapshot_error"] = str(exc)
            self.drill.tables.append(entry)


def require_master(lab: Lab, ns: str, bound_s: float) -> None:
    """Wait (bounded) until `ns` is MASTER and the other director BACKUP, by their last notify
    lines: a drill that starts from a flapped pair measures nothing."""
    other = DIRECTORS[1 - DIRECTORS.index(ns)]
    deadline = time.monotonic() + bound_s
    while True:
        last = {}
        for director in DIRECTORS:
            states = [e.state for e in kastate.notify_events(lab, director)]
            states = [s for s in states if s in ("MASTER", "BACKUP", "FAULT", "STOP")]
            last[director] = states[-1] if states else None
        if last[ns] == "MASTER" and last[other] == "BACKUP":
            return
        if time.monotonic() >= deadline:
            raise LabError(f"drill: {ns} is not the only MASTER before the drill: {last}")
        time.sleep(1.0)


def warm_snapshots(lab: Lab) -> None:
    """Take one status snapshot before the replay: the agent imports the readers on its first
    (tens of seconds under a loaded TCG), which must not happen in the middle of a drill."""
    try:
        guest_snapshot_json(lab, "lvs1")
    except (LvsprobeError, TimeoutError):
        return  # the snapshots the drill takes later record their own failure


def _sysctls(lab: Lab, ns: str) -> dict[str, str]:
    """The director settings that decide what survives a failover (bash builtins only)."""
    script = "".join(f'echo "{name}=$(</proc/sys/net/{path})"\n' for name, path in SYSCTLS.items())
    out = lab.sh(ns, script).check().stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _wait_for(
    what: str, check: Callable[[], bool], plan: DrillPlan, proc: Process, bound_s: float
) -> float:
    """Poll `check` until true or `bound_s` passed; seconds waited (inf if it ran out)."""
    started = time.monotonic()
    while time.monotonic() - started < bound_s:
        if check():
            return time.monotonic() - started
        if (done := proc.poll()) is not None:
            raise LabError(
                f"drill: the replay ended while waiting for {what} "
                f"(exit {done.returncode}): {(done.stderr or done.stdout)[-800:]}"
            )
        time.sleep(plan.poll_s)
    return float("inf")


def wait_exit(proc: Process, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = proc.poll()
        if done is not None:
            if done.returncode != 0:
                raise LabError(
                    f"drill: the replay failed (exit {done.returncode}): "
                    f"{(done.stderr or done.stdout)[-1500:]}"
                )
            return
        time.sleep(1)
    out, err = proc.output()
    proc.stop()
    raise LabError(f"drill: the replay outlived {timeout_s:.0f} s: {(err or out)[-1500:]}")


def run_drill(
    lab: Lab, run_dir: Path, argv: Sequence[str], plan: DrillPlan, run_timeout_s: float = 400.0
) -> Drill:
    """Start the replay `argv` (writing `run_dir`) in the client namespace, fail over and back
    while it runs, wait for it to end, then write the drill's record into `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    drill = Drill()
    directors = _Director(lab, run_dir, drill)
    # entries left by earlier runs from the same addresses (ESTABLISHED lingers 900 s after a
    # broken connection) are not this run's: never wait for their copies
    stale = set(_keys(directors.table("lvs1")[1], plan.port, plan.long_lived))
    warm_snapshots(lab)
    if plan.fault is not None:
        require_master(lab, "lvs1", plan.vrrp_wait_s)
    proc = lab.spawn("client", list(argv))
    try:
        master: dict[tuple[str, int], str] = {}

        def established() -> bool:
            nonlocal master
            table = _keys(directors.table("lvs1")[1], plan.port, plan.long_lived)
            master = {k: v for k, v in table.items() if k not in stale}
            up = {k for k, state in master.items() if state == "ESTABLISHED"}
            return {a for a, _ in up} >= plan.long_lived

        waited = _wait_for("the long-lived connections", established, plan, proc, plan.wait_s)
        drill.sync_wait = {"established_s": waited, "long_lived": len(plan.long_lived)}
        if plan.sync:
            on_backup: dict[tuple[str, int], str] = {}

            watched = plan.sync_clients if plan.sync_clients is not None else plan.long_lived

            def synced() -> bool:
                nonlocal on_backup
                on_backup = _keys(directors.table("lvs2")[1], plan.port, watched)
                want = {k for k, s in master.items() if s == "ESTABLISHED" and k[0] in watched}
                return want <= {k for k, s in on_backup.items() if s == "ESTABLISHED"}

            drill.sync_wait["synced_s"] = _wait_for(
                "the backup's copies", synced, plan, proc, plan.sync_wait_s
            )
            drill.sync_wait["on_backup"] = len(on_backup)
        for ns in DIRECTORS:
            drill.sysctls[ns] = _sysctls(lab, ns)
        drill.sync_threshold = [int(x) for x in drill.sysctls["lvs1"]["vs.sync_threshold"].split()]
        time.sleep(plan.settle_s)
        # keepalived drills: no status snapshot here (a Python read in the guest, tens of
        # seconds under a loaded TCG); after the fail-back is enough
        directors.record("before-failover", status=plan.fault is None)
        if plan.fault is None:
            drill.switches.append(lab.failover())
            moved = time.monotonic()
            directors.record("after-failover")
            time.sleep(max(0.0, plan.outage_s - (time.monotonic() - moved)))
            directors.record("before-failback")
            drill.switches.append(lab.failback())
        else:
            _keepalived_failover(lab, plan, drill, directors)
        directors.record("after-failback", status=True)
        wait_exit(proc, run_timeout_s)
    finally:
        if lab.active_director != "lvs1":
            lab.failback()
        if proc.result is None and proc.poll() is None:
            proc.stop()
        if plan.fault is not None:  # evidence, also of a drill that failed
            drill.notify = {ns: kastate.notify_text(lab, ns) for ns in DIRECTORS}
            kastate.save_files(lab, run_dir)
    write_events(run_dir, drill, plan.sync)
    return drill


def _await_master(lab: Lab, ns: str, since_unix: float, bound_s: float) -> float | None:
    """Wait for `ns` to notify MASTER after `since_unix`; keepalived's own time of it (its
    JSON dump), else the notify line's; None if it never did within `bound_s`."""

    def master(events: list[Any]) -> Any:
        return first_after(events, since_unix, ns, "instance", "MASTER")

    seen = kastate.wait_event(lab, ns, master, bound_s)
    return None if seen is None else seen.t_s


def _dump(lab: Lab, drill: Drill, ns: str, after: str) -> None:
    for instance, (state, last) in kastate.vrrp_dump(lab, ns).items():
        drill.vrrp_dumps.append(
            {
                "ns": ns,
                "after": after,
                "instance": instance,
                "state": state,
                "last_transition_unix": last,
            }
        )


def _keepalived_failover(lab: Lab, plan: DrillPlan, drill: Drill, directors: _Director) -> None:
    """Fault lvs1, wait for lvs2 to take over, hold, undo, and wait for lvs1 to take the VIPs
    back when it should (preempt, or a frozen master that never left MASTER)."""
    assert plan.fault is not None
    ka = lab.topology.keepalived
    drill.keepalived = keepalived_settings(lab)
    injection = faults.inject(lab, Fault(plan.fault, "lvs1"))
    moved = time.monotonic()
    try:
        if _await_master(lab, "lvs2", injection.started_unix, plan.vrrp_wait_s) is not None:
            _dump(lab, drill, "lvs2", "takeover")
        directors.record("after-failover")
        time.sleep(max(0.0, plan.outage_s - (time.monotonic() - moved)))
        directors.record("before-failback")
    finally:
        injection = faults.undo(lab, injection)
        drill.injections.append(injection)
    undone = injection.undo_started_unix or injection.effect_unix
    if plan.fault is FaultKind.FREEZE:  # lvs1 never left MASTER: lvs2 must step down

        def stepped_down(events: list[Any]) -> Any:
            return first_after(events, undone, "lvs2", "instance", "BACKUP")

        kastate.wait_event(lab, "lvs2", stepped_down, plan.vrrp_wait_s)
    elif ka.preempt:
        if _await_master(lab, "lvs1", undone, plan.vrrp_wait_s) is not None:
            _dump(lab, drill, "lvs1", "failback")
    else:  # nopreempt: lvs2 keeps the VIPs; give lvs1 the time it would need to take them
        time.sleep(min(plan.vrrp_wait_s, 3 * ka.advert_int_s + 2.0))
