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

from collections.abc import Sequence
from itertools import starmap

from lvsprobe.exporter.backend_labels import repeated
from lvsprobe.exporter.metrics import MetricSpec, MetricType
from lvsprobe.exporter.render import Builder
from lvsprobe.model import (
    Family,
    IPAddress,
    Protocol,
    RealServerTable,
    Snapshot,
    address_number,
    address_texts,
)

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
        keys, columns = self._backend_keys(snap)
        actives, inactives, weights = columns.active_conns, columns.inactive_conns, columns.weights
        if len(set(keys)) != len(keys):  # backends that look the same are summed
            sums: dict[tuple[str, ...], list[int]] = {}
            for kv, active, inactive, weight in zip(keys, actives, inactives, weights, strict=True):
                acc = sums.get(kv)
                if acc is None:
                    sums[kv] = [active, inactive, weight]
                else:
                    acc[0] += active
                    acc[1] += inactive
                    acc[2] += weight
            keys = list(sums)
            actives, inactives, weights = ([acc[i] for acc in sums.values()] for i in range(3))
        # No label value here can need escaping (addresses, numbers, names, hex), so a
        # block is a format of the values; the Builder's braces and prefix are doubled.
        inner = ",".join(f'{label}="\0"' for label in self.backend_labels)
        template = out.block(inner).replace("{", "{{").replace("}", "}}").replace("\0", "{}")
        blocks = list(starmap(template.format, keys))
        out.extend("node_ipvs_backend_connections_active", blocks, actives)
        out.extend("node_ipvs_backend_connections_inactive", blocks, inactives)
        out.extend("node_ipvs_backend_weight", blocks, weights)

    def _backend_keys(self, snap: Snapshot) -> tuple[list[tuple[str, ...]], RealServerTable]:
        """Each real server's label values (the chosen ones), and the real servers' columns.

        Column by column (10^5 real servers on a kube-proxy node): a service's values are
        repeated for its real servers, and addresses go to text in bulk.
        """
        proto: list[str] = []
        addresses: list[IPAddress | None] = []
        local_port: list[int] = []
        local_mark: list[str] = []
        local: tuple[str, IPAddress | None, int, str] = ("", None, 0, "")
        for svc in snap.services:
            key = svc.key
            if key.fwmark:
                local = ("FWM", None, 0, f"{key.fwmark:08X}")
            elif key.protocol in (Protocol.TCP, Protocol.UDP) and key.address is not None:
                local = (key.protocol.name, key.address, key.port, "")
            proto.append(local[0])
            addresses.append(local[1])
            local_port.append(local[2])
            local_mark.append(local[3])
        numbers = [address_number(address) for address in addresses if address is not None]
        texts = iter(_go_texts([family for family, _ in numbers], [n for _, n in numbers]))
        local_address = [next(texts) if address is not None else "" for address in addresses]
        counts = [len(svc.real_servers) for svc in snap.services]
        columns = RealServerTable.concat(svc.real_servers for svc in snap.services)

        def per_row(values: Sequence[object]) -> list[str]:
            return list(repeated(map(str, values), counts))

        full = {
            "local_address": per_row(local_address),
            "local_port": per_row(local_port),
            "remote_address": _go_texts(columns.address_families, columns.address_numbers),
            "remote_port": list(map(str, columns.ports)),
            "proto": per_row(proto),
            "local_mark": per_row(local_mark),
        }
        if not self.backend_labels:
            return [()] * len(columns), columns
        chosen = (full[label] for label in self.backend_labels)
        return list(zip(*chosen, strict=True)), columns


def _go_texts(families: Sequence[Family], numbers: Sequence[int]) -> list[str]:
    """Addresses as node_exporter prints them: net.IP.String() shows an IPv4-mapped IPv6
    address as IPv4."""
    if Family.INET6 not in families:
        return address_texts(families, numbers)
    mapped = [
        family is Family.INET6 and number >> 32 == 0xFFFF
        for family, number in zip(families, numbers, strict=True)
    ]
    families = [Family.INET if m else f for m, f in zip(mapped, families, strict=True)]
    numbers = [n & 0xFFFFFFFF if m else n for m, n in zip(mapped, numbers, strict=True)]
    return address_texts(families, numbers)
