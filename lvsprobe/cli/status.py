"""`lvsprobe status`: what the kernel's IPVS holds now, as ipvsadm shows it, plus the
connection table summarised by protocol and state."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import TextIO

import click

from lvsprobe import ipvsadm_view
from lvsprobe.cli.options import max_conn_table_bytes_option, target_from_options, target_options
from lvsprobe.errors import IPVSUnavailable, LvsprobeError
from lvsprobe.ipvsadm_view import View
from lvsprobe.model import Origin, Snapshot
from lvsprobe.snapshot_json import snapshot_json_text
from lvsprobe.sources import Target, read_snapshot


def format_conn_summary(snap: Snapshot) -> str:
    """A table of connection entries by protocol and state, and the templates."""
    summary = snap.conns
    if summary is None:
        return ""
    size = f", {snap.conn_table_size} hash buckets" if snap.conn_table_size else ""
    lines = [
        f"Connection table: {summary.total} entries, {summary.templates} persistence "
        f"templates{size}"
    ]
    by_state = summary.by_state()
    if by_state:
        lines.append(f"{'Prot':<5} {'State':<12} {'Entries':>9}")
        for (proto, state), n in sorted(by_state.items(), key=lambda kv: (kv[0][0], -kv[1])):
            lines.append(f"{proto:<5} {state:<12} {n:>9}")
    synced = sum(n for k, n in summary.counts.items() if k.origin is Origin.SYNC)
    if synced:
        lines.append(f"{synced} entries came from the sync daemon (Origin SYNC)")
    return "\n".join(lines) + "\n"


def text_pieces(snap: Snapshot, view: View, exact: bool, extra: tuple[str, ...]) -> Iterator[str]:
    """The text view in pieces of whole lines: ipvsadm's, then the sections of `extra`."""
    yield from ipvsadm_view.list_texts(snap, view, exact=exact)
    if "timeout" in extra and snap.timeouts is not None:
        yield ipvsadm_view.format_timeout(snap.timeouts)
    if "daemon" in extra:
        yield ipvsadm_view.format_daemons(snap.daemons)
    if "conns" in extra and snap.conns is not None:
        yield "\n" + format_conn_summary(snap)


def render_text(snap: Snapshot, view: View, exact: bool, extra: tuple[str, ...]) -> str:
    """The whole text view, as one string (the demo's; `status` writes it as it is made)."""
    return "".join(text_pieces(snap, view, exact, extra))


# `status` writes about this many characters at a time. Written a service at a time, a
# service's text (~5 KB at 10 real servers in JSON) is a write(2) each: a round trip each
# on a 9p or FUSE file (the lab writes to its 9p share). Held whole, the text of 10^5 real
# servers was ~100 MB of the process's peak.
WRITE_CHARS = 1 << 20


def _write_pieces(pieces: Iterable[str], write: Callable[[str], object]) -> None:
    """Hand `write` the pieces joined into chunks of about WRITE_CHARS (never all of them)."""
    pending: list[str] = []
    pending_chars = 0
    for piece in pieces:
        pending.append(piece)
        pending_chars += len(piece)
        if pending_chars >= WRITE_CHARS:
            write("".join(pending))
            pending.clear()
            pending_chars = 0
    if pending:
        write("".join(pending))


def write_text(
    snap: Snapshot,
    view: View,
    exact: bool,
    extra: tuple[str, ...],
    out: TextIO | None = None,
) -> None:
    """The text view, written WRITE_CHARS at a time to `out` (None: stdout) as click.echo
    writes it."""
    _write_pieces(
        text_pieces(snap, view, exact, extra), lambda chunk: click.echo(chunk, out, nl=False)
    )


def write_json(snap: Snapshot, out: TextIO) -> None:
    """`status --json`: the document, made a service at a time and written WRITE_CHARS at a
    time (never held whole)."""
    _write_pieces(chain(snapshot_json_text(snap), ("\n",)), out.write)
    out.flush()


# What a view or an extra section shows that an interface may not give (Snapshot.unread parts).
_VIEW_PART = {
    View.STATS: "service_stats",
    View.RATE: "service_rates",
    View.THRESHOLDS: "thresholds",
    View.PERSISTENT_CONN: "persistent_conns",
}
_EXTRA_PART = {"timeout": "timeouts", "daemon": "daemons"}
_PART_TEXT = {
    "service_stats": "per-service counters",
    "service_rates": "per-service rates",
    "thresholds": "thresholds",
    "persistent_conns": "persistent connection counts",
    "daemons": "daemons",
    "timeouts": "timeouts",
}


def unread_notes(snap: Snapshot, view: View, extra: tuple[str, ...]) -> list[str]:
    """One line per reason the text lacks something asked for: a `-` column or a missing
    --timeout/--daemon section must not pass for zero or for "none configured"."""
    wanted = [p for p in (_VIEW_PART.get(view), *map(_EXTRA_PART.get, extra)) if p is not None]
    notes = []
    for unread in snap.unread:
        missing = [_PART_TEXT.get(part, part) for part in wanted if part in unread.parts]
        if missing:
            listed = f"{', '.join(missing[:-1])} or {missing[-1]}" if missing[1:] else missing[0]
            where = "; reading /proc only" if snap.via == "procfs" else ""
            notes.append(f"no {listed}: {unread.reason}{where}")
    return notes


def warning_lines(snap: Snapshot, view: View, extra: tuple[str, ...]) -> list[str]:
    """Everything the text view must say on stderr: what it lacks, assumptions, failures."""
    notes = unread_notes(snap, view, extra)
    failures = [
        f"could not read {failure.source}: {failure.error}"
        for failure in snap.failures
        if not (notes and failure.source == "netlink")  # the note gave its reason
    ]
    return [f"warning: {line}" for line in (*notes, *snap.warnings, *failures)]


def _take(
    target: Target, with_conns: bool, netlink: bool, hz: int | None, max_conn_table_bytes: int
) -> Snapshot:
    snap = read_snapshot(
        target,
        conns="summary" if with_conns else "off",
        netlink=netlink,
        hz=hz,
        max_conn_table_bytes=max_conn_table_bytes,
    )
    if not snap.loaded:
        raise IPVSUnavailable(target.describe())
    for failure in snap.failures:
        if failure.source == "services":
            raise LvsprobeError(
                f"could not read the services of {target.describe()}: {failure.error}"
            )
    return snap


@click.command()
@target_options
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot as JSON (stable schema).")
@click.option("--stats", "view", flag_value=View.STATS.value, help="Counters (ipvsadm --stats).")
@click.option(
    "--rate", "view", flag_value=View.RATE.value, help="Estimator rates (ipvsadm --rate)."
)
@click.option(
    "--thresholds", "view", flag_value=View.THRESHOLDS.value, help="Upper/lower thresholds."
)
@click.option(
    "--persistent-conn",
    "view",
    flag_value=View.PERSISTENT_CONN.value,
    help="Persistence templates per real server.",
)
@click.option("--exact", is_flag=True, help="Full numbers instead of K/M/G units.")
@click.option("--timeout", "show_timeout", is_flag=True, help="Also show tcp/tcpfin/udp timeouts.")
@click.option("--daemon", "show_daemon", is_flag=True, help="Also show the sync daemons.")
@click.option(
    "--conns/--no-conns",
    default=True,
    show_default=True,
    help="Summarise the connection table (/proc/net/ip_vs_conn) by protocol and state.",
)
@click.option(
    "--hz",
    type=click.IntRange(1, 10_000),
    help="CONFIG_HZ of the kernel, to turn /proc's persistence jiffies into seconds "
    "(default 250, Debian's; netlink needs no guess).",
)
@click.option("--no-netlink", is_flag=True, help="Read /proc only, even when netlink works.")
@max_conn_table_bytes_option
@click.option(
    "--watch",
    type=click.FloatRange(0.5, 3600),
    metavar="SECONDS",
    help="Redraw every SECONDS until Ctrl-C (or --count).",
)
@click.option("--count", type=click.IntRange(1), help="With --watch: stop after N snapshots.")
def status(
    netns: str | None,
    pid: int | None,
    procfs_root: Path | None,
    sysfs_root: Path | None,
    genl_capture: Path | None,
    as_json: bool,
    view: str | None,
    exact: bool,
    show_timeout: bool,
    show_daemon: bool,
    conns: bool,
    hz: int | None,
    no_netlink: bool,
    max_conn_table_bytes: int,
    watch: float | None,
    count: int | None,
) -> None:
    """Show IPVS services, real servers, counters and the connection table.

    The text is ipvsadm's (`ipvsadm -Ln`, `--stats`, `--rate`, `--exact`, …), so it can be
    compared line by line; the connection-table summary follows it. Netlink is used when
    permitted (root / CAP_NET_ADMIN), else /proc with a warning.

    \b
    Examples:
      lvsprobe status                          like ipvsadm -Ln, plus conn-table summary
      lvsprobe status --stats --exact          like ipvsadm -Ln --stats --exact
      lvsprobe status --netns lvs1 --json      a named namespace, as JSON
      lvsprobe status --procfs-root /host/proc a host /proc mounted in a container
      lvsprobe status --watch 2                redraw every 2 s (the estimator's period)
    """
    target = target_from_options(netns, pid, procfs_root, sysfs_root, genl_capture)
    extra = tuple(
        name
        for name, on in (("timeout", show_timeout), ("daemon", show_daemon), ("conns", conns))
        if on
    )
    chosen = View(view) if view else View.LIST
    shown = 0
    while True:
        snap = _take(target, conns, not no_netlink, hz, max_conn_table_bytes)
        if as_json:
            write_json(snap, sys.stdout)
        else:
            if watch and shown:
                click.clear()
            write_text(snap, chosen, exact, extra)
            for line in warning_lines(snap, chosen, extra):
                click.echo(line, err=True)
        shown += 1
        if not watch or (count is not None and shown >= count):
            return
        time.sleep(watch)
