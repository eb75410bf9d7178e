"""Options and option types shared by commands: which namespace or tree to read, durations."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from lvsprobe.kernel.procfs.limits import CONN_TABLE_DEFAULT_MAX_BYTES, CONN_TABLE_OPTION

if TYPE_CHECKING:  # the readers are imported by the commands that read (not by replay's)
    from lvsprobe.sources import Target

F = TypeVar("F", bound=Callable[..., Any])

max_conn_table_bytes_option = click.option(
    CONN_TABLE_OPTION,
    "max_conn_table_bytes",
    type=click.IntRange(min=1),
    default=CONN_TABLE_DEFAULT_MAX_BYTES,
    show_default=True,
    metavar="BYTES",
    help="Refuse a connection table longer than this (~75 bytes an IPv4 entry, ~150 IPv6).",
)


def target_options(func: F) -> F:
    """Add --netns/--pid/--procfs-root/--sysfs-root/--genl-capture to a command."""
    options = [
        click.option(
            "--netns",
            metavar="NAME",
            help="Read the named network namespace (/run/netns/NAME).",
        ),
        click.option(
            "--pid",
            type=int,
            metavar="PID",
            help="Read the network namespace of this process (e.g. a container's).",
        ),
        click.option(
            "--procfs-root",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            metavar="DIR",
            help="Read a directory laid out like /proc instead of the kernel "
            "(a host /proc mounted elsewhere, or a captured tree).",
        ),
        click.option(
            "--sysfs-root",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
            metavar="DIR",
            help="With --procfs-root: where /sys is (for the ip_vs_conn slab).",
        ),
        click.option(
            "--genl-capture",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            metavar="FILE",
            help="Decode a recorded generic-netlink conversation (hex, one message a line) "
            "instead of asking the kernel: per-service stats for captured trees.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def target_from_options(
    netns: str | None,
    pid: int | None,
    procfs_root: Path | None,
    sysfs_root: Path | None,
    genl_capture: Path | None,
) -> Target:
    """Validate the combination and build the Target."""
    from lvsprobe.sources import Target

    chosen = [
        name
        for name, v in (("--netns", netns), ("--pid", pid), ("--procfs-root", procfs_root))
        if v is not None
    ]
    if len(chosen) > 1:
        raise click.UsageError(f"{' and '.join(chosen)} exclude each other: choose one")
    if sysfs_root is not None and procfs_root is None:
        raise click.BadParameter("only makes sense with --procfs-root", param_hint="--sysfs-root")
    return Target(
        procfs_root=procfs_root,
        netns=netns,
        pid=pid,
        sysfs_root=sysfs_root,
        genl_capture=genl_capture,
    )


# The lab VM's options, shared by `lab run|shell|check` and `lab drill`.
accel_option = click.option(
    "--accel",
    type=click.Choice(["auto", "kvm", "tcg"]),
    default="auto",
    show_default=True,
    help="auto: KVM only where it is real hardware virtualisation, else TCG.",
)
memory_option = click.option(
    "--memory",
    "memory_mb",
    type=click.IntRange(192, 16384),
    default=1024,
    show_default=True,
    help="Guest memory in MiB.",
)


def lab_progress(message: str) -> None:
    """A lab's progress lines, on stderr (stdout stays the command's own output)."""
    click.echo(f"lab: {message}", err=True)


_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


class Duration(click.ParamType):
    """A Prometheus-style duration (`500ms`, `10s`, `1m30s`, `2h`) or plain seconds, > 0."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            seconds = float(value)
        else:
            text = str(value).strip()
            try:
                seconds = float(text)
            except ValueError:
                parts = _DURATION.findall(text)
                if not parts or "".join(n + u for n, u in parts) != text:
                    self.fail(f"{value!r} is not a duration like 10s, 1m30s or 500ms", param, ctx)
                seconds = sum(float(n) * _DURATION_UNITS_S[u] for n, u in parts)
        if not 0 < seconds < 10**7:
            self.fail(f"{value!r} must be above zero", param, ctx)
        return seconds
