"""`--compat node-exporter`: node_exporter 1.x's ipvs collector, series for series.

node_exporter reads /proc/net/ip_vs_stats and /proc/net/ip_vs through prometheus/procfs.
Reproduced here on purpose, quirks included, so its dashboards and alerts keep working:
* `local_mark` is the mark as /proc prints it (`%08X`), "" for non-fwmark services, and an
  fwmark service has local_address "" and local_port "0";
* protocols other than TCP, UDP and FWM (SCTP) start no new service in procfs's parser, so
  their real servers are reported under the service before them;
* `--collector.ipvs.backend-labels` keeps a subset of the labels and sums weight and
  connections of the backends that then look the same.
The tests compare this with the real node_exporter binary on the same /proc tree.
"""

from __future__ import annotations

import ipaddress

from lvsprobe.exporter.metrics import MetricSpec, MetricType
from lvsprobe.exporter.render import Builder, label_pairs
from lvsprobe.model import IPAddress, Protocol, Snapshot

FULL_BACKEND_LABELS = (
    "local_address",
    "local_port",
    "remote_address",
    "remote_port",
    "proto",
    "local_mark",
)

_G, _C = MetricType.GAUGE, MetricType.COUNTER
_TOTALS = (
    ("node_ipvs_connections_total", "The total number of connections made."),
    ("node_ipvs_incoming_packets_total", "The total number of incoming packets."),
    ("node_ipvs_outgoing_packets_total", "The total number of outgoing packets."),
    ("node_ipvs_incoming_bytes_total", "The total amount of incoming data."),
    ("node_ipvs_outgoing_bytes_total", "The total amount of outgoing data."),
)
_BY_ADDRESS = "by local and remote address."
_BACKEND = (
    ("node_ipvs_backend_connections_active", f"The current active connections {_BY_ADDRESS}"),
    ("node_ipvs_backend_connections_inactive", f"The current inactive connections {_BY_ADDRESS}"),
    ("node_ipvs_backend_weight", f"The current backend weight {_BY_ADDRESS}"),
)


def node_exporter_specs(backend_labels: tuple[str, ...]) -> list[MetricSpec]:
    """The node_ipvs_* families, with the backend label subset chosen."""
    specs = [MetricSpec(name, text, _C, (), "compat") for name, text in _TOTALS]
    specs += [MetricSpec(name, text, _G, backend_labels, "compat") for name, text in _BACKEND]
    return specs


def parse_backend_labels(text: str) -> tuple[str, ...]:
    """The flag's comma list; ValueError for a label node_exporter does not know."""
    labels = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [label for label in labels if label not in FULL_BACKEND_LABELS]
    if unknown:
        raise ValueError(
            f"unknown label(s) {', '.join(unknown)}; choose from {','.join(FULL_BACKEND_LABELS)}"
        )
    return labels


def _go_ip(address: IPAddress) -> str:
    """net.IP.String(): an IPv4-mapped IPv6 address prints as IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class NodeExporterCollector:
    """Emits node_ipvs_* from the same snapshot as the native families."""

    def __init__(self, backend_labels: tuple[str, ...] = FULL_BACKEND_LABELS) -> None:
        self.backend_labels = backend_labels
        self.specs = node_exporter_specs(backend_labels)

    def collect(self, snap: Snapshot, out: Builder) -> None:
        # node_exporter reports nothing when ip_vs_stats is missing (IPVS not loaded) and fails
        # the whole collector when a file does not parse.
        if not snap.loaded or snap.totals is None:
            return
        t = snap.totals
        block = out.block("")
        for (name, _), value in zip(
            _TOTALS, (t.conns, t.in_pkts, t.out_pkts, t.in_bytes, t.out_bytes), strict=True
        ):
            out.add(name, block, value)
        if any(f.source == "services" for f in snap.failures):
            return
        sums: dict[tuple[str, ...], list[int]] = {}
        proto, local_address, local_port, local_mark = "", "", 0, ""
        index = {label: i for i, label in enumerate(FULL_BACKEND_LABELS)}
        for svc in snap.services:
            key = svc.key
            if key.fwmark:
                proto, local_address, local_port, local_mark = "FWM", "", 0, f"{key.fwmark:08X}"
            elif key.protocol in (Protocol.TCP, Protocol.UDP) and key.address is not None:
                proto, local_address, local_port, local_mark = (
                    key.protocol.name,
                    _go_ip(key.address),
                    key.port,
                    "",
                )
            for rs in svc.real_servers:
                full = (
                    local_address,
                    str(local_port),
                    _go_ip(rs.address),
                    str(rs.port),
                    proto,
                    local_mark,
                )
                kv = tuple(full[index[label]] for label in self.backend_labels)
                acc = sums.setdefault(kv, [0, 0, 0])
                acc[0] += rs.active_conns
                acc[1] += rs.inactive_conns
                acc[2] += rs.weight
        for kv, (active, inactive, weight) in sums.items():
            block = out.block(label_pairs(self.backend_labels, kv))
            out.add("node_ipvs_backend_connections_active", block, active)
            out.add("node_ipvs_backend_connections_inactive", block, inactive)
            out.add("node_ipvs_backend_weight", block, weight)
