"""Kubernetes Services -> names-file entries (`lvsprobe names from-kubernetes`).

kube-proxy in IPVS mode makes one virtual service per Service port for every address the
Service is reached at: each cluster IP (both families of a dual-stack Service), each
`spec.externalIPs` entry, each load-balancer ingress IP, and, for a nodePort, each node
address kube-proxy binds (its --nodeport-addresses; every node IP by default). The first three
are in the Service; node addresses are not, so nodePorts are named only for the node IPs the
caller gives. Names are `NAMESPACE/NAME:PORT_NAME` (`NAMESPACE/NAME` for an unnamed port), the
way kube-proxy names a Service port.

Not named, and counted: headless Services (clusterIP None: no virtual service), ExternalName
Services (a DNS alias), ingress entries with a hostname only or with `ipMode: Proxy` (the load
balancer proxies; kube-proxy does not program that IP).
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lvsprobe.errors import ParseError
from lvsprobe.exporter.names import NameKey, format_name_key
from lvsprobe.model import IPAddress

# `kubectl get svc -A -o json` is ~3 KB per Service; 10,000 Services (the documented
# per-cluster scale target) make ~30 MB. A bound well above that keeps a runaway input from
# exhausting memory.
MAX_INPUT_BYTES = 256 << 20
PROTOCOLS = ("TCP", "UDP", "SCTP")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KubeNames:
    """Names by virtual-service key, and what could not be named (reason -> count)."""

    names: dict[NameKey, str]
    services: int
    skipped: dict[str, int]
    conflicts: tuple[str, ...]  # "KEY: first-name and other-name" (the first one is kept)


class _Bad(ValueError):
    """A field of the input is wrong; the message says where (`items[3].spec.ports[0]`)."""


def load_kubectl_json(data: bytes, source: str) -> object:
    """The JSON document in `data`; ParseError naming `source` when it is not JSON or too big."""
    if len(data) > MAX_INPUT_BYTES:
        raise ParseError(source, None, None, f"larger than {MAX_INPUT_BYTES:,} bytes")
    try:
        return json.loads(data)
    except RecursionError:
        raise ParseError(
            source, None, None, "not JSON a kubectl writes: nested too deeply"
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise ParseError(source, None, None, f"not JSON: {exc}") from None


def parse_kubectl_services(
    doc: object, source: str, node_ips: Sequence[IPAddress] = ()
) -> KubeNames:
    """Names for the virtual services kube-proxy makes of the Services in `doc` (`kubectl get
    svc -A -o json`: a v1 List; a ServiceList or one Service also do). ParseError naming the
    item and field on any other shape."""
    try:
        items = _items(doc)
        out = _Names()
        for index, item in enumerate(items):
            out.add_service(item, f"items[{index}]", node_ips)
    except _Bad as exc:
        raise ParseError(source, None, None, str(exc)) from None
    return KubeNames(out.names, len(items), dict(out.skipped), tuple(out.conflicts))


def _items(doc: object) -> list[Any]:
    expected = "expected `kubectl get svc -A -o json` output (a v1 List of Services)"
    if not isinstance(doc, dict):
        raise _Bad(f"{expected}, got a JSON {_json_type(doc)}")
    kind = doc.get("kind")
    if kind == "Service":
        return [doc]
    if kind not in ("List", "ServiceList"):
        raise _Bad(f"{expected}, got kind {kind!r}")
    return _expect(doc.get("items"), list, "items", "a list")


class _Names:
    def __init__(self) -> None:
        self.names: dict[NameKey, str] = {}
        self.skipped: Counter[str] = Counter()
        self.conflicts: list[str] = []

    def add_service(self, item: object, where: str, node_ips: Sequence[IPAddress]) -> None:
        svc = _expect(item, dict, where, "a Service object")
        if svc.get("kind", "Service") != "Service":
            raise _Bad(f"{where}: kind {svc.get('kind')!r}, expected Service")
        meta = _expect(svc.get("metadata"), dict, f"{where}.metadata", "an object")
        name = _expect(meta.get("name"), str, f"{where}.metadata.name", "a string")
        namespace = _expect(
            meta.get("namespace", "default"), str, f"{where}.metadata.namespace", "a string"
        )
        where = f"{where} ({namespace}/{name})"
        spec = _expect(svc.get("spec", {}), dict, f"{where}.spec", "an object")
        if spec.get("type") == "ExternalName":
            self.skipped["ExternalName Services"] += 1
            return
        cluster_ips = _cluster_ips(spec, f"{where}.spec")
        if cluster_ips is None:
            self.skipped["headless Services (clusterIP None)"] += 1
            return
        addresses = [
            *cluster_ips,
            *_addresses(spec.get("externalIPs", []), f"{where}.spec.externalIPs"),
            *self._ingress_ips(svc.get("status", {}), f"{where}.status"),
        ]
        families = {a.version for a in cluster_ips}
        nodes = [n for n in node_ips if n.version in families or not families]
        ports = _expect(spec.get("ports", []), list, f"{where}.spec.ports", "a list")
        for index, port in enumerate(ports):
            self._add_port(
                port, f"{where}.spec.ports[{index}]", f"{namespace}/{name}", addresses, nodes
            )

    def _add_port(
        self,
        port: object,
        where: str,
        service: str,
        addresses: list[IPAddress],
        nodes: list[IPAddress],
    ) -> None:
        entry = _expect(port, dict, where, "an object")
        number = _port(entry.get("port"), f"{where}.port")
        protocol = entry.get("protocol", "TCP")
        if protocol not in PROTOCOLS:
            raise _Bad(
                f"{where}.protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}"
            )
        port_name = _expect(entry.get("name", ""), str, f"{where}.name", "a string")
        label = f"{service}:{port_name}" if port_name else service
        proto = protocol.lower()
        for address in addresses:
            self._add((proto, address, number, 0), label)
        if entry.get("nodePort") is not None:
            node_port = _port(entry["nodePort"], f"{where}.nodePort")
            if not nodes:
                self.skipped["nodePorts (no --node-ip given)"] += 1
            for node in nodes:
                self._add((proto, node, node_port, 0), label)

    def _add(self, key: NameKey, label: str) -> None:
        known = self.names.setdefault(key, label)
        if known != label:
            self.conflicts.append(f"{format_name_key(key)}: {known} and {label}")

    def _ingress_ips(self, status: object, where: str) -> list[IPAddress]:
        status = _expect(status, dict, where, "an object")
        balancer = _expect(
            status.get("loadBalancer", {}), dict, f"{where}.loadBalancer", "an object"
        )
        ingress = _expect(
            balancer.get("ingress", []), list, f"{where}.loadBalancer.ingress", "a list"
        )
        out = []
        for index, entry in enumerate(ingress):
            at = f"{where}.loadBalancer.ingress[{index}]"
            entry = _expect(entry, dict, at, "an object")
            if entry.get("ip") is None:
                self.skipped["load-balancer ingress by hostname only"] += 1
            elif entry.get("ipMode") == "Proxy":
                self.skipped["load-balancer ingress with ipMode Proxy"] += 1
            else:
                out.append(_address(entry["ip"], f"{at}.ip"))
        return out


def _cluster_ips(spec: dict[str, Any], where: str) -> list[IPAddress] | None:
    """Both families of a dual-stack Service (`clusterIPs`, else `clusterIP`); None if headless."""
    ips = spec.get("clusterIPs")
    if ips is None:
        ips = [spec["clusterIP"]] if spec.get("clusterIP") else []
    ips = _expect(ips, list, f"{where}.clusterIPs", "a list")
    if "None" in ips:
        return None
    return _addresses(ips, f"{where}.clusterIPs")


def _addresses(values: object, where: str) -> list[IPAddress]:
    return [
        _address(v, f"{where}[{i}]") for i, v in enumerate(_expect(values, list, where, "a list"))
    ]


def _address(value: object, where: str) -> IPAddress:
    try:
        return ipaddress.ip_address(_expect(value, str, where, "an IP address"))
    except ValueError:
        raise _Bad(f"{where}: expected an IP address, got {value!r}") from None


def _port(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _Bad(f"{where}: expected a port 1..65535, got {_shown(value)}")
    return value


def _expect(value: object, kind: type[T], where: str, what: str) -> T:
    if not isinstance(value, kind):
        raise _Bad(f"{where}: expected {what}, got {_shown(value)}")
    return value


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str | int | float | bool) or value is None else ""
    return f"{text[:60]}" if text else f"a JSON {_json_type(value)}"
