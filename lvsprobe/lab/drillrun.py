"""The lab's drills end to end: a scenario for the replay, the drill around it, a run directory.

`lvsprobe lab drill failover|health` and the lab tests call these. The run directory must
be on the lab's shared directory (the same path on host and guest): the replay runs in the
guest and writes it there.

Failover: 20 long-lived echo connections (a heartbeat every 200 ms; broken = reset, refused
or 20 s without an answer), each from its own client address, held 75 s (a loaded TCG guest
can take half of that to get them all established and synced), and a short probe connection
every 0.5 s for 60 s to time new connections' recovery. Health: short HTTP requests at 8 per second
from 200 client addresses, so the checker's window of a few seconds holds dozens.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from lvsprobe.errors import LabError
from lvsprobe.lab.cluster import AddressPlan
from lvsprobe.lab.drill import DrillPlan, run_drill
from lvsprobe.lab.drillrecord import Drill
from lvsprobe.lab.faults import FaultKind
from lvsprobe.lab.healthdrill import HealthDrill, HealthPlan, run_health_drill
from lvsprobe.lab.lab import Lab
from lvsprobe.lab.topology import Ha, ServiceSpec, Topology

LONG_LIVED = 20
ECHO_PORT = 7
HOLD_S = 75
PROBES = 120
HEALTH_RATE = 8
HEALTH_FLOWS = 360
HEALTH_CLIENTS = 200
HEARTBEAT = {"heartbeat": "200ms", "heartbeat_timeout": "20s"}
CONNTRACK = "/proc/sys/net/ipv4/vs/conntrack"


def drill_topology() -> Topology:
    """The drills' default cluster: NAT, keepalived, and only the services a drill uses
    (HTTP, checked by HTTP_GET, and TCP echo): every checker is a connection per delay_loop
    to a Python backend, which a loaded TCG guest feels."""
    return Topology(ha=Ha.KEEPALIVED, services=(ServiceSpec("tcp", 80), ServiceSpec("tcp", 7)))


def _backends(plan: AddressPlan) -> dict[str, str]:
    return dict(zip(plan.real_server_names, plan.real_server_addresses, strict=True))


def failover_scenario(plan: AddressPlan, name: str, base: int = 40) -> dict[str, Any]:
    """Long-lived connections from client addresses base.. (the probes use the first 40)."""
    recorded: list[dict[str, Any]] = [
        {"at": 0.1 * k, "client": base + k, "kind": "tcp", "hold": f"{HOLD_S}s", **HEARTBEAT}
        for k in range(LONG_LIVED)
    ]
    recorded += [{"at": 2 + 0.5 * j, "client": j % 40, "kind": "tcp"} for j in range(PROBES)]
    return {
        "name": name,
        "target": {"address": plan.vip, "port": ECHO_PORT, "backends": _backends(plan)},
        "clients": {"addresses": list(plan.client_addresses)},
        "flows": [{"kind": "tcp"}],
        "recorded": recorded,
        "bounds": {
            "max_flows": len(recorded),
            "max_duration": f"{HOLD_S + 60}s",
            "flow_timeout": "15s",
        },
    }


def health_scenario(plan: AddressPlan, name: str, port: int = 80) -> dict[str, Any]:
    """Short HTTP requests at a steady rate (open arrivals) from many client addresses."""
    clients = list(plan.client_addresses[:HEALTH_CLIENTS])
    return {
        "name": name,
        "target": {"address": plan.vip, "port": port, "backends": _backends(plan)},
        "clients": {"addresses": clients},
        "flows": [{"kind": "http"}],
        "arrival": {"model": "open", "rate": HEALTH_RATE},
        "bounds": {"max_flows": HEALTH_FLOWS, "max_duration": "120s", "flow_timeout": "15s"},
    }


def _replay_argv(scenario: dict[str, Any], run_dir: Path) -> list[str]:
    """Write the scenario beside RUN (on the shared directory); the replay's argv (the
    asyncio engine: the one the failover proof was validated with)."""
    path = run_dir.parent / f".{run_dir.name}.scenario.yaml"
    path.write_text(yaml.safe_dump(scenario))
    argv = ["lvsprobe", "replay", "run", str(path), "--out", str(run_dir), "--engine", "asyncio"]
    return ["bash", "-c", shlex.join(argv)]


def _fresh(run_dir: Path) -> None:
    if run_dir.exists() and any(run_dir.iterdir()):
        raise LabError(f"{run_dir}: not empty (a drill writes a fresh run directory)")
    run_dir.mkdir(parents=True, exist_ok=True)


def failover_drill(
    lab: Lab, run_dir: Path, fault: FaultKind | None, base: int = 40, outage_s: float = 8.0
) -> Drill:
    """The failover drill on the running cluster (`lab.topology`): sync as it says, `fault`
    on lvs1 (keepalived) or the VIPs moved by hand (None). vs.conntrack is 0 for the drill:
    with conntrack=1 and strict TCP windows synced connections die at the switch."""
    _fresh(run_dir)
    topo = lab.topology
    fast = frozenset(lab.client_addresses[base : base + LONG_LIVED])
    plan = DrillPlan(
        port=ECHO_PORT, long_lived=fast, sync=topo.sync, fault=fault, outage_s=outage_s
    )
    for ns in ("lvs1", "lvs2"):
        lab.sh(ns, f"echo 0 > {CONNTRACK}").check()
    lab.mark_dirty()
    argv = _replay_argv(failover_scenario(lab.plan, run_dir.name, base), run_dir)
    return run_drill(lab, run_dir, argv, plan)


def health_drill(lab: Lab, run_dir: Path, plan: HealthPlan) -> HealthDrill:
    """The nanny drill on the running keepalived cluster."""
    _fresh(run_dir)
    lab.mark_dirty()
    argv = _replay_argv(health_scenario(lab.plan, run_dir.name, plan.port), run_dir)
    return run_health_drill(lab, run_dir, argv, plan)


def summary_lines(kind: str, run_dir: Path) -> Sequence[str]:
    return [
        f"drill {kind}: run directory {run_dir}",
        f"next: lvsprobe analyze {kind} {run_dir} && lvsprobe report {run_dir}",
    ]
