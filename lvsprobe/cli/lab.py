"""`lvsprobe lab`: a throw-away VM with Debian's kernel and a real IPVS cluster inside."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lvsprobe.cli.exit import ExitCode
from lvsprobe.cli.labdrill import drill
from lvsprobe.cli.options import accel_option, lab_progress, memory_option


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Boot a throw-away VM running Debian's stock kernel (which has every ip_vs module) with
    an LVS cluster inside: a client, two directors (lvs1 active, lvs2 standby with the sync
    daemon), real servers rs1..rsN answering HTTP, TLS, TCP/UDP echo and FTP with their id.

    The VM shares this machine's / read-only (the same Python, venv and checkout run inside),
    has NO network device, and is killed when the command ends. KVM is used only when it is
    real hardware virtualisation; otherwise TCG (a boot takes
    10-30 s, building the cluster as long again).

    \b
    Examples:
      lvsprobe lab prepare                          download+unpack the kernel (cached)
      lvsprobe lab check                            prerequisites, KVM/TCG verdict, boot time
      lvsprobe lab run -- ipvsadm -Ln               in the client namespace by default
      lvsprobe lab run --ns lvs1 -- ipvsadm -Ln --stats
      lvsprobe lab run --topology dr.yaml -- curl -s http://198.18.1.100/
      lvsprobe lab run --ns lvs1 -- lvsprobe status
      lvsprobe lab shell --ns lvs1                  type commands, see their output
      lvsprobe lab drill failover --out runs/fo     keepalived stopped on lvs1 mid-replay
      lvsprobe lab drill health --out runs/nanny    a real server killed mid-replay

    \b
    Addresses: VIP 198.18.1.100 / 2001:2:0:1::100, real servers 198.18.1.11.., client
    pool 198.18.16.1.. / 2001:2:0:100::1.. (see `lvsprobe lab run -- ip -br addr`).
    Cache: $LVSPROBE_CACHE or /var/cache/lvsprobe.
    """


@lab.command()
@click.option("--refresh", is_flag=True, help="Re-resolve linux-image-amd64 (apt) even if cached.")
def prepare(refresh: bool) -> None:
    """Check the Debian packages and build the kernel/initramfs cache (idempotent).

    \b
    Needs: qemu-system-x86 busybox-static kmod ipvsadm vsftpd (apt). The kernel package
    behind linux-image-amd64 is downloaded and unpacked into the cache, not installed.
    """
    from lvsprobe.lab.prepare import prepare as do_prepare

    do_prepare(progress=lab_progress, refresh=refresh)


_LAB_OPTIONS = [
    click.option(
        "--topology",
        "topology_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Cluster to build (YAML; default: NAT, rr, 3 real servers, sync daemon on).",
    ),
    accel_option,
    memory_option,
    click.option(
        "--share",
        type=click.Path(file_okay=False, path_type=Path),
        help="A host directory mounted read-write at the same path in the guest.",
    ),
]


def _lab_options(func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_LAB_OPTIONS):
        func = option(func)
    return func


def _make_lab(
    topology_file: Path | None, accel: str, memory_mb: int, share: Path | None, build: bool = True
) -> Any:
    from lvsprobe.lab.lab import Lab
    from lvsprobe.lab.topology import Topology, load_topology

    topology = load_topology(topology_file) if topology_file else Topology()
    if share is not None:
        share.mkdir(parents=True, exist_ok=True)
    return Lab(
        topology,
        build=build,
        shared_dir=share,
        memory_mb=memory_mb,
        accel=accel,
        progress=lab_progress,
    )


@lab.command(context_settings={"ignore_unknown_options": True})
@_lab_options
@click.option(
    "--ns",
    default="client",
    show_default=True,
    help="Namespace: client, router, lvs1, lvs2, rs1..rsN, or 'vm' for the VM itself.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(1, 86400),
    default=600,
    show_default=True,
    help="Kill the command (exit 124) after this many seconds.",
)
@click.option("--no-cluster", is_flag=True, help="Boot only; build no cluster.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def run(
    ctx: click.Context,
    topology_file: Path | None,
    accel: str,
    memory_mb: int,
    share: Path | None,
    ns: str,
    timeout_s: float,
    no_cluster: bool,
    command: tuple[str, ...],
) -> None:
    """Boot the lab, build the cluster, run COMMAND in a namespace, print its output, tear
    everything down, and exit with COMMAND's status (124: it timed out).

    \b
    Examples:
      lvsprobe lab run -- curl -s http://198.18.1.100/
      lvsprobe lab run --ns lvs1 -- ipvsadm -Ln --stats
      lvsprobe lab run --ns lvs1 -- lvsprobe status --json
      lvsprobe lab run --topology dr.yaml --ns vm -- bash -c 'ip netns list'
      lvsprobe lab run --share ./out -- bash -c 'ipvsadm -Lnc > ./out/conns.txt'
    """
    with _make_lab(topology_file, accel, memory_mb, share, build=not no_cluster) as vm:
        result = vm.run(None if ns == "vm" else ns, list(command), timeout=timeout_s)
    click.echo(result.stdout, nl=False)
    click.echo(result.stderr, nl=False, err=True)
    if result.returncode == 124:
        lab_progress(f"command timed out after {timeout_s:g} s")
    ctx.exit(result.returncode if 0 <= result.returncode < 256 else 128 - result.returncode)


@lab.command()
@_lab_options
@click.option("--ns", default="client", show_default=True, help="Namespace to type commands in.")
def shell(
    topology_file: Path | None, accel: str, memory_mb: int, share: Path | None, ns: str
) -> None:
    """Type commands into a namespace of a running lab, one line at a time (bash -c each).

    Not a terminal: full-screen programs (top, vi) do not work; output shows when the command
    ends. Works without a TTY too (commands from stdin). `ns NAME` switches namespace; `exit`
    or end-of-input tears the lab down.

    \b
    Example:
      lvsprobe lab shell --ns lvs1
      lvs1$ ipvsadm -Ln
      lvs1$ ns client
      client$ curl -s http://198.18.1.100/
    """
    interactive = sys.stdin.isatty()
    with _make_lab(topology_file, accel, memory_mb, share) as vm:
        if interactive:
            click.echo("namespaces: " + " ".join(vm.plan.namespaces) + "  (ns NAME to switch)")
        while True:
            if interactive:
                click.echo(f"{ns}$ ", nl=False)
            line = sys.stdin.readline()
            if not line or line.strip() in ("exit", "quit"):
                break
            words = line.split()
            if not words:
                continue
            if words[0] == "ns" and len(words) == 2:
                ns = words[1]
                continue
            result = vm.run(None if ns == "vm" else ns, ["bash", "-c", line], timeout=3600)
            click.echo(result.stdout, nl=False)
            click.echo(result.stderr, nl=False, err=True)
            if result.returncode:
                click.echo(f"[exit {result.returncode}]", err=True)


@lab.command()
@click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default="auto",
    show_default=True,
    help="Accelerator to try.",
)
@click.option("--no-boot", is_flag=True, help="Check prerequisites only; do not boot.")
@click.pass_context
def check(ctx: click.Context, accel: str, no_boot: bool) -> None:
    """Check everything the lab needs and boot it once, timing the boot.

    Prints the packages, the kernel cache, the KVM/TCG verdict with its reason, the boot time,
    and whether the guest kernel loads ip_vs. Exits 3 when a check fails.
    """
    from lvsprobe.lab.prepare import REQUIRED_PACKAGES, missing_packages, prepare
    from lvsprobe.lab.vm import kvm_verdict

    failed = False
    missing = set(missing_packages())
    for package in REQUIRED_PACKAGES:
        click.echo(f"{'MISSING' if package in missing else 'ok':<8} package {package}")
    if missing:
        click.echo(f"install: apt-get install -y --no-install-recommends {' '.join(missing)}")
        ctx.exit(ExitCode.CHECK_FAILED)
    verdict = kvm_verdict()
    click.echo(f"{'ok':<8} accelerator: {verdict.accel} ({verdict.reason})")
    prepared = prepare(progress=lab_progress)
    click.echo(f"{'ok':<8} kernel {prepared.kernel_version} (cache {prepared.vmlinux.parent})")
    if no_boot:
        return
    vm = _make_lab(None, accel, 1024, None, build=False)
    with vm:
        started = time.monotonic()
        probe = vm.run(None, ["bash", "-c", "modprobe ip_vs && cat /proc/net/ip_vs | head -1"])
        probe_s = time.monotonic() - started
        mem = vm.run(None, ["free", "-m"]).stdout.splitlines()
    click.echo(f"{'ok':<8} boot: {vm.boot_s:.1f} s with {vm.accel} ({vm.accel_reason})")
    if probe.returncode != 0 or "IP Virtual Server" not in probe.stdout:
        failed = True
        click.echo(f"{'FAILED':<8} ip_vs in the guest kernel: {probe.stderr.strip()}")
    else:
        click.echo(f"{'ok':<8} ip_vs: {probe.stdout.strip()} (modprobe {probe_s:.1f} s)")
    if len(mem) > 1:
        click.echo(f"{'ok':<8} guest memory (MiB): {' '.join(mem[1].split()[1:3])} (total used)")
    if failed:
        ctx.exit(ExitCode.CHECK_FAILED)


lab.add_command(drill)
