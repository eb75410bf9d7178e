"""Faults the lab injects into a keepalived cluster, each undone by the lab and bounded in time.

    stop          SIGTERM keepalived on a director (it releases its VIPs and sends a
                  priority-0 advert); undo: start it again
    freeze        SIGSTOP keepalived's processes (a hung director that still holds the VIPs);
                  undo: SIGCONT
    link          `ip link set e0 down` on a director; undo: up, with its addresses and routes
    kill-backend  SIGKILL a real server's backends (HTTP, TLS, echo); undo: start them again
    slow-backend  netem delay on a real server's e0, longer than the checkers' timeout;
                  undo: remove it

Every injection starts a watchdog in the guest that undoes the fault after `max_s` even if
the host never does (a frozen keepalived never outlives the drill). Scripts print
`started T` and `done T` (the guest's wall clock, as a replay's start_unix).
"""

from __future__ import annotations

import enum
import json
import shlex
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lvsprobe.errors import LabError
from lvsprobe.lab import keepalived
from lvsprobe.lab.cluster import STATE, TLS_DIR, AddressPlan
from lvsprobe.lab.topology import Ha

if TYPE_CHECKING:
    from lvsprobe.lab.lab import Lab

DEFAULT_MAX_S = 120.0
DEFAULT_DELAY_MS = 3000


class FaultKind(enum.Enum):
    STOP = "stop"
    FREEZE = "freeze"
    LINK = "link"
    KILL_BACKEND = "kill-backend"
    SLOW_BACKEND = "slow-backend"

    @property
    def on_director(self) -> bool:
        return self in (FaultKind.STOP, FaultKind.FREEZE, FaultKind.LINK)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault: what, where (a director or a real server), its bound, netem's delay."""

    kind: FaultKind
    target: str
    max_s: float = DEFAULT_MAX_S
    delay_ms: int = DEFAULT_DELAY_MS

    @property
    def watchdog_file(self) -> str:
        return f"{STATE}/fault-{self.kind.value}-{self.target}.watchdog"


@dataclass(frozen=True, slots=True)
class Injection:
    """A fault injected: when its script began, when the fault took effect, when the script
    was done (a stop waits for keepalived to exit), and the same for its undo (guest wall
    clock, seconds since the epoch; None until undone)."""

    fault: Fault
    started_unix: float
    effect_unix: float
    done_unix: float
    undo_started_unix: float | None = None
    undo_effect_unix: float | None = None
    undone_unix: float | None = None

    def to_json(self, t0: float) -> dict[str, Any]:
        """Times relative to `t0` (a run's start), as the analyzers read them."""

        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 6)

        return {
            "fault": self.fault.kind.value,
            "target": self.fault.target,
            "started_s": rel(self.started_unix),
            "t_s": rel(self.effect_unix),
            "done_s": rel(self.done_unix),
            "undo_started_s": rel(self.undo_started_unix),
            "undo_s": rel(self.undo_effect_unix),
            "undone_s": rel(self.undone_unix),
            "delay_ms": self.fault.delay_ms if self.fault.kind is FaultKind.SLOW_BACKEND else None,
        }


def _backend_restart(name: str, python: str) -> tuple[str, str]:
    """(restart, settle): start the backends again unless they run; settle prints when they
    listened (the mtime of their ready file), which is when the fault was undone."""
    spec = {
        "state": STATE,
        "cert": f"{TLS_DIR}/cert.pem",
        "key": f"{TLS_DIR}/key.pem",
        "sysctls": {},
        "real_servers": [name],
        "vsftpd": False,
    }
    launcher = shlex.join([python, "-S", "-m", "lvsprobe.lab.launcher"])
    restart = (
        f'kill -0 "$(cat {STATE}/{name}-backend.pid 2>/dev/null)" 2>/dev/null || {{\n'
        f"rm -f {STATE}/{name}/ready\n{launcher} >/dev/null <<'EOF'\n{json.dumps(spec)}\nEOF\n}}"
    )
    return restart, f'echo "effect $(date -r {STATE}/{name}/ready +%s.%N)"'


def _director_links(plan: AddressPlan, director: str) -> str:
    """e0 up again, with what `ip link set down` took: IPv6 addresses and the routes."""
    v4, v6 = plan.directors[director]
    batch = [
        f"addr replace {v4}/24 dev e0",
        f"addr replace {v6}/64 dev e0 nodad",
        f"route replace default via {plan.router_lan}",
        f"route replace default via {plan.router_lan6}",
    ]
    return f"ip -n {director} link set e0 up\nip -force -n {director} -batch - <<'EOF'\n" + (
        "\n".join(batch) + "\nEOF"
    )


_EFFECT = 'echo "effect $EPOCHREALTIME"'


@dataclass(frozen=True, slots=True)
class _Steps:
    """Shell for one fault: the action and what follows it (`settle`: wait until it is
    complete; prints `effect T` when it took effect), and the same for its undo."""

    action: str
    undo: str
    settle: str = ""
    undo_settle: str = ""


def _steps(fault: Fault, plan: AddressPlan, python: str) -> _Steps:
    t, kind = fault.target, fault.kind
    home = keepalived.director_dir(t)
    if kind is FaultKind.STOP:
        return _Steps(
            f'pid=$(cat {home}/keepalived.pid)\nkill -TERM "$pid"',
            f'kill -0 "$(cat {home}/keepalived.pid 2>/dev/null)" 2>/dev/null || {{\n'
            f"{keepalived.start_script(t)}}}",
            settle=keepalived.wait_gone_script("$pid"),
        )
    if kind is FaultKind.FREEZE:
        pids = keepalived.pids_expr(t)
        return _Steps(f"kill -STOP {pids}", f"kill -CONT {pids} 2>/dev/null || true")
    if kind is FaultKind.LINK:
        return _Steps(f"ip -n {t} link set e0 down", _director_links(plan, t))
    if kind is FaultKind.KILL_BACKEND:
        restart, when = _backend_restart(t, python)
        return _Steps(f'kill -9 -- -"$(<{STATE}/{t}-backend.pid)"', restart, undo_settle=when)
    return _Steps(
        f"tc -n {t} qdisc replace dev e0 root netem delay {fault.delay_ms}ms",
        f"tc -n {t} qdisc del dev e0 root 2>/dev/null || true",
    )


def _stamped(action: str, settle: str) -> str:
    """`started T`, the action, `effect T` (unless settle prints its own), settle, `done T`."""
    effect = "" if "effect" in settle else _EFFECT
    return (
        f'set -e\necho "started $EPOCHREALTIME"\n{action}\n{effect}\n{settle}\n'
        'echo "done $EPOCHREALTIME"\n'
    )


def inject_script(fault: Fault, plan: AddressPlan, python: str = sys.executable) -> str:
    """Inject `fault`, then leave a watchdog that undoes it after `fault.max_s`."""
    steps = _steps(fault, plan, python)
    watchdog = (
        f"(sleep {fault.max_s:g}; {{\n{steps.undo}\n}}) >>{STATE}/watchdog.log 2>&1 </dev/null &\n"
        f"echo $! >{fault.watchdog_file}"
    )
    return _stamped(f"{steps.action}\n{watchdog}", steps.settle)


def undo_script(fault: Fault, plan: AddressPlan, python: str = sys.executable) -> str:
    """Call off the watchdog, then undo `fault`."""
    steps = _steps(fault, plan, python)
    cancel = f'kill "$(cat {fault.watchdog_file} 2>/dev/null)" 2>/dev/null || true'
    return _stamped(f"{cancel}\n{steps.undo}", steps.undo_settle)


def _times(out: str) -> tuple[float, float, float]:
    """(started, effect, done) from a fault script's output."""
    times = dict(line.split(" ", 1) for line in out.splitlines() if line.count(" ") == 1)
    try:
        return float(times["started"]), float(times["effect"]), float(times["done"])
    except (KeyError, ValueError) as exc:
        raise LabError(f"lab: a fault script printed no times: {out[-300:]!r}") from exc


def _check_target(lab: Lab, fault: Fault) -> None:
    if fault.kind.on_director:
        if lab.topology.ha is not Ha.KEEPALIVED:
            raise LabError(f"fault {fault.kind.value}: the cluster runs no keepalived (ha)")
        if fault.target not in keepalived.DIRECTORS:
            raise LabError(f"fault {fault.kind.value}: {fault.target!r} is not a director")
    elif fault.target not in lab.real_server_names:
        raise LabError(f"fault {fault.kind.value}: {fault.target!r} is not a real server")


def inject(lab: Lab, fault: Fault) -> Injection:
    """Inject `fault` into the running cluster; the cluster is dirty from now on."""
    _check_target(lab, fault)
    lab.mark_dirty()
    out = lab.sh(None, inject_script(fault, lab.plan), timeout=60).check().stdout
    return Injection(fault, *_times(out))


def undo(lab: Lab, injection: Injection, timeout_s: float = 240.0) -> Injection:
    """Undo an injected fault (a backend restart starts Python: slow under TCG)."""
    script = undo_script(injection.fault, lab.plan)
    out = lab.sh(None, script, timeout=timeout_s).check().stdout
    return Injection(
        injection.fault,
        injection.started_unix,
        injection.effect_unix,
        injection.done_unix,
        *_times(out),
    )
