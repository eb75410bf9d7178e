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

from lvsprobe.exporter.backend_labels import BackendLabels, repeated
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


# Where a block holds each label's value while the templates are made (no value holds them).
_SERVICE_MARKS = {
    "local_address": "\x01",
    "local_port": "\x02",
    "proto": "\x03",
    "local_mark": "\x04",
}
_ROW_MARKS = {"remote_address": "\x05", "remote_port": "\x06"}


class NodeExporterCollector:
    """Emits node_ipvs_* from the same snapshot as the native families.

    One per namespace, owned by the Scraper: it keeps the real servers' label blocks from
    one scrape to the next (a `BackendLabels`: a block is its service's head and a tail made
    only for real servers that changed). Thread-safe as `BackendLabels` is.
    """

    def __init__(self, backend_labels: tuple[str, ...] = FULL_BACKEND_LABELS) -> None:
        self.backend_labels = backend_labels
        self.specs = node_exporter_specs(backend_labels)
        self._tails = BackendLabels(_go_texts)
        # The last tails seen, and whether their rows' blocks were all distinct.
        self._distinct: tuple[list[bytes], bool] | None = None

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
        heads, formats = self._service_blocks(snap, out)
        counts = [len(svc.real_servers) for svc in snap.services]
        columns = RealServerTable.concat(svc.real_servers for svc in snap.services)
        tails = self._tails.tails(heads, counts, columns, formats)
        row_heads = list(repeated(heads, counts))
        values: tuple[Sequence[int], ...] = (
            columns.active_conns,
            columns.inactive_conns,
            columns.weights,
        )
        if not self._all_distinct(row_heads, tails):  # backends that look the same are summed
            sums: dict[tuple[bytes, bytes], list[int]] = {}
            for row, active, inactive, weight in zip(
                zip(row_heads, tails, strict=True), *values, strict=True
            ):
                acc = sums.get(row)
                if acc is None:
                    sums[row] = [active, inactive, weight]
                else:
                    acc[0] += active
                    acc[1] += inactive
                    acc[2] += weight
            row_heads, tails = [head for head, _ in sums], [tail for _, tail in sums]
            values = tuple([acc[i] for acc in sums.values()] for i in range(3))
        out.add_rows([name for name, _ in _BACKEND], row_heads, tails, values)

    def _all_distinct(self, row_heads: list[bytes], tails: list[bytes]) -> bool:
        """Whether no two rows have the same block (a head and tail each), known again
        without a look when the tails are the last scrape's (its heads were then too)."""
        last = self._distinct
        if last is not None and last[0] is tails:
            return last[1]
        distinct = len(set(zip(row_heads, tails, strict=True))) == len(tails)
        self._distinct = (tails, distinct)
        return distinct

    def _service_blocks(self, snap: Snapshot, out: Builder) -> tuple[list[bytes], list[str]]:
        """Each service's head (its real servers' block up to the first value of their own,
        UTF-8) and tail format (a `BackendLabels` one: the rest, of the address text and port).

        A service's values are written by templates made once per scrape: a block with a
        mark for each value, split at the first mark of a real server's value.
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
        values = list(zip(local_address, local_port, proto, local_mark, strict=True))
        head, tail = self._templates(out)
        formats: dict[str, str] = {}  # one string per distinct format (a few): kept by the cache
        return (
            [text.encode() for text in starmap(head.format, values)],
            [formats.setdefault(text, text) for text in starmap(tail.format, values)],
        )

    def _templates(self, out: Builder) -> tuple[str, str]:
        """str.format templates of a service's (local_address, local_port, proto,
        local_mark): its head, and its tail format (whose braces are then formatted again).

        No value here can need escaping or hold a brace (addresses, numbers, names, hex);
        the Builder's braces and prefix are kept as they are.
        """
        marks = {**_SERVICE_MARKS, **_ROW_MARKS}
        inner = ",".join(f'{label}="{marks[label]}"' for label in self.backend_labels)
        block = out.block(inner)
        split = min(
            (block.index(mark) for mark in _ROW_MARKS.values() if mark in block), default=len(block)
        )
        head, tail = _escaped(block[:split], 1), _escaped(block[split:], 2)
        for place, mark in enumerate(_SERVICE_MARKS.values()):
            head, tail = head.replace(mark, f"{{{place}}}"), tail.replace(mark, f"{{{place}}}")
        for place, mark in enumerate(_ROW_MARKS.values()):
            tail = tail.replace(mark, f"{{{{{place}}}}}")
        return head, tail + " "


def _escaped(text: str, times: int) -> str:
    """Braces kept through `times` str.format calls."""
    for _ in range(times):
        text = text.replace("{", "{{").replace("}", "}}")
    return text


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
