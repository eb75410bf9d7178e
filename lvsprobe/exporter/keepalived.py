"""--collector.keepalived: keepalived's VRRP states and checker verdicts (lvsprobe/keepalived/).

One collector per namespace read, each with the keepalived that serves it. A reading is
shared by the scrapes of `min_interval_s` (each one costs keepalived two dumps and two log
lines); a failed one too, so a frozen keepalived costs one wait per interval, not one per
scrape. Series of virtual_server groups are left out: their IPVS services are the group's
entries, which the checker dump does not list per real server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lvsprobe.deadline import Deadline
from lvsprobe.errors import LvsprobeError
from lvsprobe.exporter.keepalived_options import KeepalivedOptions
from lvsprobe.exporter.metrics import BACKEND_LABELS, SERVICE_LABELS
from lvsprobe.exporter.render import Builder, label_pairs
from lvsprobe.keepalived.dump import KeepalivedDump, read_keepalived
from lvsprobe.keepalived.files import KeepalivedFiles
from lvsprobe.keepalived.model import CheckedVirtualServer, VrrpInstance, VrrpState

KeepalivedReader = Callable[[KeepalivedFiles, float], KeepalivedDump]


class KeepalivedCollector:
    """The keepalived of one namespace; thread-safe, it owns the reading it shares."""

    def __init__(
        self,
        files: KeepalivedFiles,
        options: KeepalivedOptions,
        read: KeepalivedReader = read_keepalived,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = files
        self.options = options
        self.read = read
        self.clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, KeepalivedDump | str, float] | None = None

    def collect(self, out: Builder, deadline: Deadline | None) -> str | None:
        """Add the series and this source's health; return the error of a failed reading."""
        reading, duration_s = self._reading(deadline)
        out.add_labeled(
            "ipvs_scrape_source_success", ("keepalived",), 0 if isinstance(reading, str) else 1
        )
        out.add_labeled("ipvs_scrape_source_duration_seconds", ("keepalived",), duration_s)
        if isinstance(reading, str):
            return reading
        out.add("ipvs_keepalived_up", out.block(""), 1 if reading.running else 0)
        for instance in reading.vrrp or ():
            _add_instance(out, instance)
        for server in reading.virtual_servers or ():
            if server.group is None:
                _add_virtual_server(out, server)
        return None

    def _reading(self, deadline: Deadline | None) -> tuple[KeepalivedDump | str, float]:
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last[0] < self.options.min_interval_s:
                return self._last[1], self._last[2]
            timeout_s = self.options.dump_timeout_s
            if deadline is not None:
                timeout_s = max(0.0, min(timeout_s, deadline.at_s - now))
            try:
                reading: KeepalivedDump | str = self.read(self.files, timeout_s)
            except LvsprobeError as exc:
                reading = str(exc)
            duration_s = self.clock() - now
            self._last = (now, reading, duration_s)
            return reading, duration_s


def _add_instance(out: Builder, instance: VrrpInstance) -> None:
    name = (instance.name,)
    for state in VrrpState:
        out.add_labeled(
            "ipvs_keepalived_vrrp_state", (*name, state.label), 1 if state is instance.state else 0
        )
    info = (*name, str(instance.vrid), instance.interface)
    out.add_labeled("ipvs_keepalived_vrrp_info", info, 1)
    out.add_labeled("ipvs_keepalived_vrrp_priority", name, instance.base_priority)
    out.add_labeled("ipvs_keepalived_vrrp_effective_priority", name, instance.effective_priority)
    for vip in instance.vips:
        text = str(vip.address)  # as ipvsadm -n prints it: dotted quad, compressed IPv6
        out.add_labeled("ipvs_keepalived_vrrp_vip", (*name, text), 1 if vip.is_set else 0)
    out.add_labeled("ipvs_keepalived_vrrp_become_master_total", name, instance.become_master)
    out.add_labeled("ipvs_keepalived_vrrp_release_master_total", name, instance.release_master)
    if instance.last_transition_s is not None:
        out.add_labeled(
            "ipvs_keepalived_vrrp_last_transition_timestamp_seconds",
            name,
            instance.last_transition_s,
        )
    out.add_labeled("ipvs_keepalived_vrrp_adverts_received_total", name, instance.adverts_received)
    out.add_labeled("ipvs_keepalived_vrrp_adverts_sent_total", name, instance.adverts_sent)


def service_label_values(server: CheckedVirtualServer) -> tuple[str, ...]:
    """SERVICE_LABELS of a virtual_server, spelled as the IPVS collectors spell the service."""
    family = {4: "inet", 6: "inet6", None: ""}[server.family]
    if server.fwmark:
        return ("", "", "0", str(server.fwmark), family)
    protocol = server.protocol.name.lower() if server.protocol is not None else ""
    address = str(server.address) if server.address is not None else ""
    return (protocol, address, str(server.port), "0", family)


def _add_virtual_server(out: Builder, server: CheckedVirtualServer) -> None:
    service = service_label_values(server)
    out.add_labeled("ipvs_keepalived_service_up", service, 1 if server.quorum_up else 0)
    for rs in server.real_servers:
        block = out.block(
            label_pairs(BACKEND_LABELS, (*service, str(rs.address), str(rs.port), rs.forward.label))
        )
        out.add("ipvs_keepalived_backend_up", block, 1 if rs.alive else 0)
        out.add("ipvs_keepalived_backend_failed_checkers", block, rs.failed_checkers)


assert BACKEND_LABELS[: len(SERVICE_LABELS)] == SERVICE_LABELS
