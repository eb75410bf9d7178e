"""One scrape: read a snapshot of each namespace, run the collectors, render the text.

No background thread and no cached values: what Prometheus gets is what the kernel showed
during the request. What is kept between scrapes is only what a value cannot change: the
real servers' label blocks (`BackendLabels`, per namespace) and the /proc parse caches.
A source that fails costs only its own families (and shows as
`ipvs_scrape_source_success{source} 0` plus one log line when it starts or stops failing).
A scrape reads within a deadline, so one that Prometheus gave up on does not read on: the
sources it did not finish by then fail.
"""

from __future__ import annotations

import gc
import logging
import platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from lvsprobe import __version__
from lvsprobe.deadline import DEFAULT_READ_TIMEOUT_S, Deadline
from lvsprobe.errors import IPVSUnavailable, LvsprobeError
from lvsprobe.exporter.backend_labels import BackendLabels
from lvsprobe.exporter.collectors import (
    ConnsCollector,
    DaemonsCollector,
    HealthCollector,
    SlabCollector,
    StatsCollector,
    SysctlsCollector,
    TimeoutsCollector,
)
from lvsprobe.exporter.compat import (
    FULL_BACKEND_LABELS,
    NodeExporterCollector,
    node_exporter_specs,
)
from lvsprobe.exporter.filters import ServiceFilter
from lvsprobe.exporter.metrics import NETNS_LABEL, SPECS
from lvsprobe.exporter.render import Builder, Family, escape_label_value, render, render_chunks
from lvsprobe.exporter.services import Budget, ServiceOptions, ServicesCollector
from lvsprobe.kernel.procfs.cache import ParseCache
from lvsprobe.kernel.procfs.limits import CONN_TABLE_DEFAULT_MAX_BYTES
from lvsprobe.model import Snapshot

if TYPE_CHECKING:  # each imported by whoever builds the options: only when configured
    from lvsprobe.exporter.keepalived import KeepalivedCollector, KeepalivedReader
    from lvsprobe.exporter.keepalived_options import KeepalivedOptions
    from lvsprobe.exporter.names import NamesFile, NamesRead
    from lvsprobe.sources import Target

ConnMode = Literal["off", "summary", "per-real-server"]
log = logging.getLogger("lvsprobe.exporter")
# Taken off a timeout the scraper announces (X-Prometheus-Scrape-Timeout-Seconds) for the
# same reason, as the blackbox exporter's --timeout-offset does.
SEND_MARGIN_S = 0.5


class _GCPause:
    """Cyclic GC off while any scrape runs, back on when the last one ends.

    A scrape allocates ~10^6 acyclic objects (real servers, label blocks, samples) that
    reference counting frees; with the collector on, each allocation burst triggers full
    collections over everything alive, which cost a kube-proxy-sized scrape a third of its time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._active += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._was_enabled:
                gc.enable()
                # What the scrapes allocated is young: a pass over it (what is still alive,
                # a few caches) reclaims any reference cycle they made, which the next
                # paused scrapes would otherwise keep (peak RSS growing scrape by scrape).
                gc.collect(0)


GC_PAUSE = _GCPause()


class SnapshotReader(Protocol):
    def __call__(
        self,
        target: Target | None,
        *,
        conns: ConnMode,
        netlink: bool,
        hz: int | None,
        deadline: Deadline | None,
        max_conn_table_bytes: int,
        cache: ParseCache | None,
    ) -> Snapshot: ...


def default_reader(
    target: Target | None,
    *,
    conns: ConnMode,
    netlink: bool,
    hz: int | None,
    deadline: Deadline | None,
    max_conn_table_bytes: int,
    cache: ParseCache | None,
) -> Snapshot:
    """lvsprobe.sources.read_snapshot, imported on first use."""
    from lvsprobe.sources import read_snapshot

    return read_snapshot(
        target,
        conns=conns,
        netlink=netlink,
        hz=hz,
        deadline=deadline,
        max_conn_table_bytes=max_conn_table_bytes,
        cache=cache,
    )


@dataclass(frozen=True)
class ExportOptions:
    """What `lvsprobe export` reads and how much of it it exports."""

    targets: tuple[Target | None, ...] = (None,)  # None: the exporter's own namespace
    conns: ConnMode = "summary"
    netlink: bool = True
    hz: int | None = None
    service_filter: ServiceFilter = field(default_factory=ServiceFilter)
    max_backends: int | None = None
    names: NamesFile | None = None
    compat_node_exporter: bool = False
    compat_backend_labels: tuple[str, ...] = FULL_BACKEND_LABELS
    read_timeout_s: float | None = DEFAULT_READ_TIMEOUT_S  # None: read to the end
    max_conn_table_bytes: int = CONN_TABLE_DEFAULT_MAX_BYTES
    keepalived: KeepalivedOptions | None = None  # --collector.keepalived
    backend_rates: bool = False  # --collector.backends.rates
    backend_extra: bool = False  # --collector.backends.extra


class Scraper:
    """Thread-safe: concurrent scrapes each read their own snapshots."""

    def __init__(
        self,
        options: ExportOptions,
        read: SnapshotReader = default_reader,
        logger: logging.Logger = log,
        build: tuple[str, str] = (__version__, platform.python_version()),
        clock: Callable[[], float] = time.monotonic,
        keepalived_read: KeepalivedReader | None = None,  # None: read_keepalived
    ) -> None:
        self.options = options
        self.build = build
        self.read = read
        self.log = logger
        self.clock = clock
        self._lock = threading.Lock()
        self._dropped_total = 0
        self._failing: dict[tuple[str, str], str] = {}
        # Per namespace: what the last scrape's /proc readers decoded, for the next.
        self._parse_caches = {self._label(t): ParseCache() for t in options.targets}
        # Per namespace: the real servers' label blocks of the last scrape, for the next.
        self._backend_labels = {self._label(t): BackendLabels() for t in options.targets}
        # Per namespace (each keeps its real servers' label blocks for the next scrape).
        self._compat = (
            {
                self._label(t): NodeExporterCollector(options.compat_backend_labels)
                for t in options.targets
            }
            if options.compat_node_exporter
            else {}
        )
        self._keepalived = (
            self._keepalived_collectors(options.keepalived, keepalived_read)
            if options.keepalived is not None
            else {}
        )

    def _keepalived_collectors(
        self, options: KeepalivedOptions, read: KeepalivedReader | None
    ) -> dict[str, KeepalivedCollector]:
        """One per namespace read. The lazy edge of keepalived's readers and parsers (json
        among them): an exporter without --collector.keepalived never loads them."""
        from lvsprobe.exporter.keepalived import KeepalivedCollector
        from lvsprobe.keepalived.dump import read_keepalived

        return {
            label: KeepalivedCollector(
                options.files(label), options, read or read_keepalived, self.clock
            )
            for label in map(self._label, self.options.targets)
        }

    @staticmethod
    def _label(target: Target | None) -> str:
        if target is None:
            return ""
        return target.netns or (str(target.pid) if target.pid is not None else "")

    def scrape(self, timeout_s: float | None = None) -> bytes:
        """Read every target and render the exposition text (`timeout_s`: as in `collect`)."""
        with GC_PAUSE:
            return render(self.collect(timeout_s))

    def stream(self, timeout_s: float | None = None) -> Iterator[bytes]:
        """Read every target now; render family by family as the caller consumes it.

        The reading is over when this returns (within the deadline), so a caller that closes
        the iterator early (its client went away) leaves nothing reading behind it.
        """
        with GC_PAUSE:
            families = self.collect(timeout_s)
        return self._render(families)

    @staticmethod
    def _render(families: list[Family]) -> Iterator[bytes]:
        with GC_PAUSE:
            yield from render_chunks(families)

    def deadline(self, timeout_s: float | None = None) -> Deadline | None:
        """When this scrape's reads stop: `read_timeout_s` from now, sooner when the scraper
        announced a shorter `timeout_s` (X-Prometheus-Scrape-Timeout-Seconds), less a margin
        to send the result."""
        budgets = [self.options.read_timeout_s]
        if timeout_s is not None:
            budgets.append(max(timeout_s - SEND_MARGIN_S, timeout_s / 2))
        chosen = [b for b in budgets if b is not None]
        return Deadline.after(min(chosen), self.clock) if chosen else None

    def collect(self, timeout_s: float | None = None) -> list[Family]:
        """Read every target and build this scrape's families (in SPECS order).

        Reads stop at `deadline(timeout_s)`: what was not read by then shows as failed.
        """
        deadline = self.deadline(timeout_s)
        out = Builder(SPECS)
        if self.options.compat_node_exporter:
            out.add_specs(node_exporter_specs(self.options.compat_backend_labels))
        budget = Budget(self.options.max_backends)
        multi = len(self.options.targets) > 1
        names = self.options.names.refresh() if self.options.names is not None else None
        for target in self.options.targets:
            name = self._label(target)
            out.prefix = f'{NETNS_LABEL}="{escape_label_value(name)}"' if multi else ""
            if name in self._keepalived:
                error = self._keepalived[name].collect(out, deadline)
                self._note(name, {"keepalived": error} if error else {}, ["keepalived"])
            try:
                snap = self.read(
                    target,
                    conns=self.options.conns,
                    netlink=self.options.netlink,
                    hz=self.options.hz,
                    deadline=deadline,
                    max_conn_table_bytes=self.options.max_conn_table_bytes,
                    cache=self._parse_caches[name],
                )
            except IPVSUnavailable:
                # A reader that finds IPVS gone mid-read says so by raising: a state too.
                snap = Snapshot(loaded=False, via="procfs")
            except LvsprobeError as exc:
                self._note(name, {"namespace": str(exc)}, ["namespace"])
                out.add_labeled("ipvs_scrape_source_success", ("namespace",), 0)
                continue
            self._note(name, {f.source: f.error for f in snap.failures}, list(snap.durations_s))
            self._collect(snap, out, budget, names, name)
        out.prefix = ""
        if names is not None:  # a file that failed to reload: the names read before serve
            out.add_labeled("ipvs_scrape_source_success", ("names",), 0 if names.error else 1)
        with self._lock:
            self._dropped_total += budget.dropped
            dropped_total = self._dropped_total
        out.add_labeled("ipvs_exporter_build_info", self.build, 1)
        out.add_labeled("ipvs_exporter_dropped_series_total", ("backend_cap",), dropped_total)
        if budget.remaining is not None:
            out.add("ipvs_exporter_dropped_backends", "", budget.dropped)
        return list(out.families.values())

    def _collect(
        self,
        snap: Snapshot,
        out: Builder,
        budget: Budget,
        names: NamesRead | None,
        netns: str,
    ) -> None:
        opts = self.options
        HealthCollector().collect(snap, out)
        if not snap.loaded:
            return
        service_names = names.names if names is not None else None
        service_options = ServiceOptions(
            opts.service_filter, service_names, opts.backend_rates, opts.backend_extra
        )
        ServicesCollector(service_options, budget, self._backend_labels[netns]).collect(snap, out)
        StatsCollector().collect(snap, out)
        ConnsCollector(opts.service_filter, opts.conns == "per-real-server").collect(snap, out)
        SlabCollector().collect(snap, out)
        DaemonsCollector().collect(snap, out)
        TimeoutsCollector().collect(snap, out)
        SysctlsCollector().collect(snap, out)
        if netns in self._compat:
            self._compat[netns].collect(snap, out)

    def _note(self, netns: str, failures: dict[str, str], tried: list[str]) -> None:
        """One log line when a source starts failing (or changes error), one when it recovers."""
        where = f" netns={netns}" if netns else ""
        with self._lock:
            for source, error in failures.items():
                if self._failing.get((netns, source)) != error:
                    self._failing[(netns, source)] = error
                    self.log.warning("source failed: source=%s%s error=%r", source, where, error)
            for source in tried:
                if source not in failures and self._failing.pop((netns, source), None) is not None:
                    self.log.info("source recovered: source=%s%s", source, where)
