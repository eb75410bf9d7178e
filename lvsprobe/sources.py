"""Where a Snapshot comes from: the current namespace, a named netns, a pid's netns, or a
directory laid out like /proc. The only I/O edge between the kernel readers and consumers.

Netlink first (per-service stats, rates, seconds-exact persistence, daemons, timeouts); procfs
when netlink is not permitted (no CAP_NET_ADMIN in the initial user namespace), with a warning.
Each source fails alone: a failure is recorded in `Snapshot.failures` and the rest is served.
With a deadline, the sources not read by then fail too (the conn table stops mid-read).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, TypeVar

from lvsprobe.deadline import Deadline
from lvsprobe.errors import IPVSUnavailable, LvsprobeError, NotPermitted
from lvsprobe.kernel.netns import run_in_netns
from lvsprobe.kernel.procfs import ip_vs, ip_vs_conn, ip_vs_conn_sync, ip_vs_stats, slab, sysctl
from lvsprobe.kernel.procfs.cache import ParseCache
from lvsprobe.kernel.procfs.limits import CONN_TABLE_DEFAULT_MAX_BYTES
from lvsprobe.model import ConnSummary, Daemon, Service, Snapshot, SourceFailure, Timeouts, Unread

ConnMode = Literal["off", "summary", "per-real-server"]
T = TypeVar("T")

# Debian, Ubuntu and most distribution kernels are built with CONFIG_HZ=250; the kernel does not
# export HZ, so /proc/net/ip_vs's persistence timeout (jiffies) is converted with this unless
# the caller knows better (`--hz`) or netlink gives seconds.
DEFAULT_HZ = 250

# What only generic netlink shows (/proc/net/ip_vs has neither counters nor thresholds per
# service or real server, and no sync daemons or connection timeouts anywhere in /proc).
NETLINK_ONLY = (
    "service_stats",
    "service_rates",
    "thresholds",
    "persistent_conns",
    "daemons",
    "timeouts",
)


@dataclass(frozen=True, slots=True)
class Target:
    """What to read. With none of the fields set: the caller's own network namespace."""

    procfs_root: Path | None = None
    netns: str | None = None
    pid: int | None = None
    sysfs_root: Path | None = None
    genl_capture: Path | None = None

    def describe(self) -> str:
        if self.procfs_root is not None:
            return f"procfs tree {self.procfs_root}"
        if self.netns is not None:
            return f"network namespace {self.netns!r}"
        if self.pid is not None:
            return f"the network namespace of pid {self.pid}"
        return "this network namespace"


@dataclass
class _Collector:
    """Runs each source, timing it and recording its failure instead of raising; once the
    deadline has passed, records the sources left as failed without reading them."""

    clock: Callable[[], float]
    durations: dict[str, float]
    failures: list[SourceFailure]
    deadline: Deadline | None = None

    def run(self, source: str, read: Callable[[], T]) -> T | None:
        if self.deadline is not None and self.deadline.expired():
            self.failures.append(SourceFailure(source, f"not read: {self.deadline.reason()}"))
            return None
        started = self.clock()
        try:
            return read()
        except IPVSUnavailable:
            if source == "services":
                raise
            self.failures.append(SourceFailure(source, f"{source}: file missing"))
            return None
        except (LvsprobeError, OSError) as exc:
            self.failures.append(SourceFailure(source, _one_line(exc)))
            return None
        finally:
            self.durations[source] = self.clock() - started


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        name = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{name}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def read_snapshot(
    target: Target | None = None,
    *,
    conns: ConnMode = "summary",
    netlink: bool = True,
    hz: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
    deadline: Deadline | None = None,
    max_conn_table_bytes: int = CONN_TABLE_DEFAULT_MAX_BYTES,
    cache: ParseCache | None = None,
) -> Snapshot:
    """Read everything IPVS shows in one namespace. Never raises for a per-source failure.

    `clock` times the sources; `deadline` ends the reading (the sources left fail);
    `max_conn_table_bytes` bounds the connection table; `cache` is what the last read of
    this namespace decoded (a scraper's). Raises NamespaceError when the namespace cannot
    be entered.
    """
    target = target or Target()
    options = _ReadOptions(conns, netlink, hz, clock, deadline, max_conn_table_bytes, cache)
    if target.procfs_root is not None:
        return _read(target, target.procfs_root, target.procfs_root, options)
    if target.netns is None and target.pid is None:
        return _read(target, Path("/proc/thread-self"), Path("/proc"), options)
    return run_in_netns(
        lambda: _read(target, Path("/proc/thread-self"), Path("/proc"), options),
        netns=target.netns,
        pid=target.pid,
    )


@dataclass(frozen=True, slots=True)
class _ReadOptions:
    """How `read_snapshot` was asked to read: what, and within which bounds."""

    conns: ConnMode
    netlink: bool
    hz: int | None
    clock: Callable[[], float]
    deadline: Deadline | None
    max_conn_table_bytes: int
    cache: ParseCache | None


def _read(target: Target, net_root: Path, proc_root: Path, options: _ReadOptions) -> Snapshot:
    """Read in the current thread's namespace: `net_root/net/…`, `proc_root/sys/…`."""
    conns, netlink, hz = options.conns, options.netlink, options.hz
    col = _Collector(options.clock, {}, [], options.deadline)
    warnings: list[str] = []
    namespace = target.netns or (str(target.pid) if target.pid is not None else None)
    live = target.procfs_root is None and netlink
    genl = target.genl_capture is not None or live

    def read_services() -> ip_vs.IpVsTable:
        return ip_vs.read_ip_vs(net_root, options.cache)

    # With netlink to give the services, /proc/net/ip_vs is read whole only if it fails: its
    # header says whether IPVS is loaded (a kube-proxy node's file is ~10^5 lines to make).
    try:
        table = col.run(
            "services", (lambda: ip_vs.read_ip_vs_header(net_root)) if genl else read_services
        )
    except IPVSUnavailable:
        return Snapshot(loaded=False, via="procfs", namespace=namespace)

    version = table.version if table else None
    table_size = table.conn_table_size if table else None
    services: tuple[Service, ...] = table.services if table else ()
    timeouts: Timeouts | None = None
    daemons: tuple[Daemon, ...] = ()
    via = "procfs"
    netlink_unused = "netlink turned off" if not netlink else "netlink reads a live namespace only"

    if genl:
        from lvsprobe.kernel.genl import capture, socket

        try:
            client = (
                capture.CapturedIPVS.from_file(target.genl_capture)
                if target.genl_capture is not None
                else socket.IPVSNetlink.open()
            )
        except NotPermitted as exc:
            netlink_unused = str(exc)
        except (LvsprobeError, OSError) as exc:
            netlink_unused = f"netlink failed: {_one_line(exc)}"
            col.failures.append(SourceFailure("netlink", _one_line(exc)))
        else:
            with client:
                # A netlink failure keeps the /proc view of the services (source "netlink");
                # a netlink success makes a failed /proc parse of them moot.
                nl_services = col.run("netlink", client.services)
                if nl_services is not None:
                    services, via = nl_services, "netlink"
                    col.failures[:] = [f for f in col.failures if f.source != "services"]
                else:
                    netlink_unused = f"netlink failed: {col.failures[-1].error}"
                info = col.run("info", client.info)
                if info is not None:
                    version, table_size = info
                timeouts = col.run("timeouts", client.config)
                daemons = col.run("daemons", client.daemons) or ()

    if via == "procfs" and genl and table is not None:
        try:
            table = col.run("services", read_services)
        except IPVSUnavailable:  # unloaded since its header was read
            return Snapshot(loaded=False, via="procfs", namespace=namespace)
        services = table.services if table else ()
    if via == "procfs":
        services = _with_seconds(services, hz or DEFAULT_HZ)
        if hz is None and any(s.persistence for s in services):
            warnings.append(
                f"persistence timeouts converted from jiffies assuming CONFIG_HZ={DEFAULT_HZ}"
                " (use --hz to set it)"
            )

    totals_rates = col.run("stats", lambda: ip_vs_stats.read_ip_vs_stats(net_root))
    summary = None
    if conns != "off":
        summary = col.run(
            "conns",
            lambda: _read_conns(net_root, conns == "per-real-server", options),
        )
    sysctls = col.run("sysctls", lambda: sysctl.read_sysctls(proc_root)) or {}
    sys_root = target.sysfs_root or (None if target.procfs_root else Path("/sys"))
    slab_info = col.run("slab", lambda: slab.read_slab(proc_root, sys_root))

    return Snapshot(
        loaded=True,
        via=via,
        version=version,
        conn_table_size=table_size,
        services=services,
        totals=totals_rates[0] if totals_rates else None,
        total_rates=totals_rates[1] if totals_rates else None,
        conns=summary,
        sysctls=sysctls,
        timeouts=timeouts,
        daemons=daemons,
        slab=slab_info,
        failures=tuple(col.failures),
        warnings=tuple(warnings),
        durations_s=col.durations,
        namespace=namespace,
        unread=(Unread(NETLINK_ONLY, netlink_unused),) if via == "procfs" else (),
    )


def _read_conns(net_root: Path, per_real_server: bool, options: _ReadOptions) -> ConnSummary:
    """The connection table with its Origin column when the kernel has ip_vs_conn_sync
    (streamed: ~70 MB per 10^6 entries is never held whole)."""
    max_bytes, deadline, cache = options.max_conn_table_bytes, options.deadline, options.cache
    if (net_root / "net/ip_vs_conn_sync").exists():
        data = ip_vs_conn_sync.stream_ip_vs_conn_sync(
            net_root, max_bytes=max_bytes, deadline=deadline
        )
        return ip_vs_conn_sync.summarize_ip_vs_conn_sync(
            data, per_real_server=per_real_server, cache=cache
        )
    data = ip_vs_conn.stream_ip_vs_conn(net_root, max_bytes=max_bytes, deadline=deadline)
    return ip_vs_conn.summarize_ip_vs_conn(data, per_real_server=per_real_server, cache=cache)


def _with_seconds(services: tuple[Service, ...], hz: int) -> tuple[Service, ...]:
    """Fill `timeout_s` of procfs persistence (jiffies) with the given HZ."""
    out = []
    for svc in services:
        p = svc.persistence
        if p is not None and p.timeout_s is None and p.timeout_jiffies is not None:
            svc = replace(svc, persistence=replace(p, timeout_s=p.timeout_jiffies // hz))
        out.append(svc)
    return tuple(out)
