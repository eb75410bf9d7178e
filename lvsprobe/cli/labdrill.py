"""`lvsprobe lab drill failover|health`: a drill in a throw-away lab, into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from lvsprobe.cli.options import accel_option, lab_progress, memory_option

FAULTS_FAILOVER = ("stop", "freeze", "link", "manual")
FAULTS_HEALTH = ("kill-backend", "slow-backend")


def _topology(
    topology_file: Path | None,
    sync: str | None,
    preempt: bool | None,
    inhibit: bool | None,
    keepalived_needed: bool,
) -> Any:
    """The drill's cluster: the file's (default: NAT with keepalived), flags applied."""
    from dataclasses import replace

    from lvsprobe.lab.drillrun import drill_topology
    from lvsprobe.lab.topology import Ha, load_topology

    topo = load_topology(topology_file) if topology_file else drill_topology()
    if keepalived_needed and topo.ha is not Ha.KEEPALIVED:
        raise click.BadParameter(
            "this drill needs keepalived: the topology says ha: manual (set ha: keepalived)",
            param_hint="--topology",
        )
    changes: dict[str, Any] = {}
    if sync is not None:
        changes["sync"] = sync == "on"
    ka: dict[str, Any] = {}
    if preempt is not None:
        ka["preempt"] = preempt
    if inhibit is not None:
        ka["inhibit_on_failure"] = inhibit
    if ka:
        changes["keepalived"] = replace(topo.keepalived, **ka)
    return topo.with_(**changes) if changes else topo


def _lab(topology: Any, out: Path, accel: str, memory_mb: int) -> Any:
    """A lab sharing OUT's parent read-write (the guest's replay writes OUT itself)."""
    from lvsprobe.lab.lab import Lab

    share = out.resolve().parent
    share.mkdir(parents=True, exist_ok=True)
    return Lab(topology, shared_dir=share, memory_mb=memory_mb, accel=accel, progress=lab_progress)


_COMMON = [
    click.option(
        "--topology",
        "topology_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Cluster (YAML); default: NAT, rr, 3 real servers, HTTP and echo, sync on, "
        "ha: keepalived.",
    ),
    click.option(
        "--out",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The run directory to write (new or empty).",
    ),
    accel_option,
    memory_option,
]


def _common(func: Any) -> Any:
    for option in reversed(_COMMON):
        func = option(func)
    return func


@click.group()
def drill() -> None:
    """Drills in a throw-away lab: a replay runs while the lab breaks something; the run
    directory then holds what `lvsprobe analyze failover|health RUN` and `lvsprobe report
    RUN` read (flows, RUN/events.json, the directors' tables, keepalived's logs).

    \b
    Examples:
      lvsprobe lab drill failover --out runs/fo-stop               keepalived stopped on lvs1
      lvsprobe lab drill failover --fault freeze --sync off --out runs/fo-freeze-nosync
      lvsprobe lab drill failover --fault link --no-preempt --out runs/fo-link-nopreempt
      lvsprobe lab drill health --out runs/nanny                   rs1's backends killed
      lvsprobe lab drill health --fault slow-backend --inhibit --out runs/nanny-slow
    """


@drill.command()
@_common
@click.option(
    "--sync", type=click.Choice(["on", "off"]), help="IPVS sync daemon (default: topology)."
)
@click.option(
    "--fault",
    type=click.Choice(FAULTS_FAILOVER),
    default="stop",
    show_default=True,
    help="What happens to lvs1: keepalived stopped, frozen (SIGSTOP), its link cut; "
    "manual: the lab moves the VIPs (ha: manual).",
)
@click.option(
    "--preempt/--no-preempt", default=None, help="keepalived preempt (default: topology)."
)
@click.option(
    "--outage",
    "outage_s",
    type=click.FloatRange(1, 300),
    default=8.0,
    show_default=True,
    help="Seconds between the takeover and undoing the fault.",
)
def failover(
    topology_file: Path | None,
    out: Path,
    accel: str,
    memory_mb: int,
    sync: str | None,
    fault: str,
    preempt: bool | None,
    outage_s: float,
) -> None:
    """Director failover while 20 long-lived connections and a stream of probes run: the
    fault on lvs1 (or a hand move), the backup's takeover, the undo and the fail-back."""
    from lvsprobe.lab.drillrun import failover_drill, summary_lines
    from lvsprobe.lab.faults import FaultKind

    manual = fault == "manual"
    topo = _topology(topology_file, sync, preempt, None, keepalived_needed=not manual)
    if manual and topo.ha.value != "manual":
        topo = topo.with_(ha=type(topo.ha)("manual"))
    with _lab(topo, out, accel, memory_mb) as lab:
        failover_drill(lab, out.resolve(), None if manual else FaultKind(fault), outage_s=outage_s)
    for line in summary_lines("failover", out):
        click.echo(line)


@drill.command()
@_common
@click.option(
    "--fault",
    type=click.Choice(FAULTS_HEALTH),
    default="kill-backend",
    show_default=True,
    help="kill-backend: SIGKILL its backends; slow-backend: "
    "netem delay past the checkers' connect_timeout.",
)
@click.option("--victim", default="rs1", show_default=True, help="The real server to break.")
@click.option(
    "--inhibit/--no-inhibit",
    default=None,
    help="keepalived inhibit_on_failure: weight 0 instead of removal (default: topology).",
)
@click.option(
    "--delay-ms",
    type=click.IntRange(1, 60000),
    default=None,
    help="slow-backend: the delay (default: 2 x connect_timeout + 1 s).",
)
def health(
    topology_file: Path | None,
    out: Path,
    accel: str,
    memory_mb: int,
    fault: str,
    victim: str,
    inhibit: bool | None,
    delay_ms: int | None,
) -> None:
    """A real server dies (or turns slow) during a steady HTTP replay: how long keepalived's
    checker takes to remove it, what the flows sent to it in that window got, and how long it
    takes to come back."""
    from lvsprobe.lab.drillrun import health_drill, summary_lines
    from lvsprobe.lab.faults import FaultKind
    from lvsprobe.lab.healthdrill import HealthPlan

    topo = _topology(topology_file, None, None, inhibit, keepalived_needed=True)
    if victim not in {f"rs{i}" for i in range(1, topo.real_servers + 1)}:
        raise click.BadParameter(
            f"{victim!r}: the cluster has rs1..rs{topo.real_servers}", param_hint="--victim"
        )
    delay = delay_ms or int((2 * topo.keepalived.connect_timeout_s + 1) * 1000)
    plan = HealthPlan(victim=victim, fault=FaultKind(fault), delay_ms=delay)
    with _lab(topo, out, accel, memory_mb) as lab:
        health_drill(lab, out.resolve(), plan)
    for line in summary_lines("health", out):
        click.echo(line)
