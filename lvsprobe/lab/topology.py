"""A declarative lab cluster: forwarding mode, scheduler, weights, persistence, services.

YAML form (every key optional; shown with the defaults):

    mode: nat            # nat | dr | tun
    scheduler: rr
    real_servers: 3
    weights: [1, 1, 1]   # one per real server
    clients: 256         # client source addresses (IPv4 and IPv6 each)
    client_namespaces: 1 # 2..4: the IPv4 pool dealt round-robin over client, client2, ...
    sync: true           # IPVS sync daemon: master on lvs1, backup on lvs2
    ha: manual           # manual: the lab moves the VIPs (Lab.failover); keepalived: VRRP
    keepalived:          # with ha: keepalived (see lvsprobe.lab.keepalived)
      advert_int: 1.0    # s, VRRPv3 (centiseconds)
      priorities: [150, 100]   # lvs1, lvs2
      preempt: true
      delay_loop: 1.0    # s between health checks of each real server
      connect_timeout: 2.0
      retry: 1           # extra attempts before a real server is declared down
      delay_before_retry: 0.5
      inhibit_on_failure: false  # true: weight 0 instead of removal
    services:            # default: http, https, echo (tcp+udp), ftp, http over IPv6
      - {protocol: tcp, port: 80}
      - {protocol: tcp, port: 443, persistence: 300, netmask: 255.255.255.0}
      - {family: ipv6, protocol: tcp, port: 80, scheduler: wrr}
      - {fwmark: 1, ports: [80, 443]}       # firewall-mark service (tc marks on the director)
      - {protocol: udp, port: 7, options: ["-o"]}
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from lvsprobe.errors import ParseError

MAX_REAL_SERVERS = 50
MAX_CLIENTS = 4000
MAX_CLIENT_NAMESPACES = 4
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh")
BACKEND_PORTS = {"tcp": (80, 443, 7, 21), "udp": (7,)}


class Mode(enum.Enum):
    """Forwarding method of every real server: ipvsadm -m, -g, -i."""

    NAT = "nat"
    DR = "dr"
    TUN = "tun"

    @property
    def ipvsadm_flag(self) -> str:
        return {"nat": "-m", "dr": "-g", "tun": "-i"}[self.value]


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One virtual service on the VIP (or VIP6), or a firewall-mark service."""

    protocol: str = "tcp"  # tcp | udp; fwmark services: the protocol the director marks
    port: int = 80
    family: str = "ipv4"  # ipv4 | ipv6
    fwmark: int = 0
    ports: tuple[int, ...] = ()  # fwmark: the VIP ports (of `protocol`) the director marks
    scheduler: str | None = None  # None: the topology's
    weights: tuple[int, ...] | None = None  # None: the topology's
    persistence_s: int | None = None
    netmask: str | None = None
    options: tuple[str, ...] = ()  # extra ipvsadm service flags, e.g. ("-o",)

    @property
    def is_fwmark(self) -> bool:
        return self.fwmark != 0


def default_services(mode: Mode = Mode.NAT) -> tuple[ServiceSpec, ...]:
    ftp_persistence = None if mode is Mode.NAT else 120  # DR/TUN FTP needs persistence
    services = [
        ServiceSpec("tcp", 80),
        ServiceSpec("tcp", 443),
        ServiceSpec("tcp", 7),
        ServiceSpec("udp", 7),
        ServiceSpec("tcp", 21, persistence_s=ftp_persistence),
    ]
    if mode is not Mode.TUN:
        services.append(ServiceSpec("tcp", 80, family="ipv6"))
    return tuple(services)


class Ha(enum.Enum):
    """Who moves the VIPs between the directors."""

    MANUAL = "manual"  # the lab, by hand (Lab.failover): no VRRP timing in the way
    KEEPALIVED = "keepalived"  # keepalived's VRRP on lvs1 and lvs2, its checkers program IPVS


@dataclass(frozen=True, slots=True)
class KeepalivedSettings:
    """keepalived's timers and policy (seconds). Short defaults: drills run in seconds."""

    advert_int_s: float = 1.0  # 0.5 flapped under a loaded TCG guest (a starved VRRP child)
    priorities: tuple[int, int] = (150, 100)  # lvs1, lvs2
    preempt: bool = True
    delay_loop_s: float = 1.0
    connect_timeout_s: float = 2.0  # backends are Python under TCG: slow when the VM is busy
    retry: int = 1
    delay_before_retry_s: float = 0.5
    inhibit_on_failure: bool = False


@dataclass(frozen=True, slots=True)
class Topology:
    """A whole lab cluster. `services` None means `default_services(mode)`."""

    mode: Mode = Mode.NAT
    scheduler: str = "rr"
    real_servers: int = 3
    weights: tuple[int, ...] = ()
    clients: int = 256
    client_namespaces: int = 1
    sync: bool = True
    services: tuple[ServiceSpec, ...] | None = None
    ha: Ha = Ha.MANUAL
    keepalived: KeepalivedSettings = KeepalivedSettings()

    def __post_init__(self) -> None:
        validate(self)

    @property
    def effective_services(self) -> tuple[ServiceSpec, ...]:
        return self.services if self.services is not None else default_services(self.mode)

    def weight_of(self, service: ServiceSpec, index: int) -> int:
        weights = service.weights if service.weights is not None else self.weights
        return weights[index] if index < len(weights) else 1

    def describe(self) -> str:
        return (
            f"{self.mode.value}/{self.scheduler}, {self.real_servers} real servers, "
            f"{len(self.effective_services)} services, sync {'on' if self.sync else 'off'}"
            + (", keepalived" if self.ha is Ha.KEEPALIVED else "")
            + (
                f", {self.client_namespaces} client namespaces"
                if self.client_namespaces > 1
                else ""
            )
        )

    def with_(self, **changes: Any) -> Topology:
        return replace(self, **changes)


def _fail(key: str, reason: str, source: str = "topology") -> ParseError:
    return ParseError(source, None, None, f"{key}: {reason}")


def validate(topo: Topology, source: str = "topology") -> None:
    """Raise ParseError naming the key that is wrong."""
    if not 1 <= topo.real_servers <= MAX_REAL_SERVERS:
        raise _fail(
            "real_servers", f"must be 1..{MAX_REAL_SERVERS}, got {topo.real_servers}", source
        )
    if not 1 <= topo.clients <= MAX_CLIENTS:
        raise _fail("clients", f"must be 1..{MAX_CLIENTS}, got {topo.clients}", source)
    if not 1 <= topo.client_namespaces <= min(MAX_CLIENT_NAMESPACES, topo.clients):
        raise _fail(
            "client_namespaces",
            f"must be 1..{min(MAX_CLIENT_NAMESPACES, topo.clients)}, got {topo.client_namespaces}",
            source,
        )
    if topo.scheduler not in SCHEDULERS:
        raise _fail(
            "scheduler", f"unknown {topo.scheduler!r} (one of {', '.join(SCHEDULERS)})", source
        )
    _check_weights("weights", topo.weights, topo.real_servers, source)
    seen: set[tuple[Any, ...]] = set()
    for i, svc in enumerate(topo.effective_services):
        key = f"services[{i}]"
        if svc.family not in ("ipv4", "ipv6"):
            raise _fail(f"{key}.family", f"must be ipv4 or ipv6, got {svc.family!r}", source)
        if svc.family == "ipv6" and topo.mode is Mode.TUN:
            raise _fail(f"{key}.family", "IPv6 services are not supported with mode tun", source)
        if svc.protocol not in BACKEND_PORTS:
            raise _fail(f"{key}.protocol", f"must be tcp or udp, got {svc.protocol!r}", source)
        if svc.is_fwmark:
            if not 0 < svc.fwmark < 2**32 or not svc.ports:
                raise _fail(f"{key}.ports", "an fwmark service needs fwmark > 0 and ports", source)
            ident: tuple[Any, ...] = ("fwmark", svc.fwmark, svc.family)
        else:
            if not 0 < svc.port < 65536:
                raise _fail(f"{key}.port", f"must be 1..65535, got {svc.port}", source)
            ident = (svc.protocol, svc.port, svc.family)
        for port in svc.ports:
            if not 0 < port < 65536:
                raise _fail(f"{key}.ports", f"must be 1..65535, got {port}", source)
        if ident in seen:
            raise _fail(key, f"duplicate service {ident}", source)
        seen.add(ident)
        if svc.scheduler is not None and svc.scheduler not in SCHEDULERS:
            raise _fail(f"{key}.scheduler", f"unknown {svc.scheduler!r}", source)
        if svc.weights is not None:
            _check_weights(f"{key}.weights", svc.weights, topo.real_servers, source)
        if svc.persistence_s is not None and not 1 <= svc.persistence_s <= 2**31:
            raise _fail(f"{key}.persistence", "must be a positive number of seconds", source)
        if svc.netmask is not None:
            _check_netmask(f"{key}.netmask", svc.netmask, svc.family, source)
        if topo.ha is Ha.KEEPALIVED:
            _check_keepalived_options(f"{key}.options", svc.options, source)
    _check_keepalived(topo.keepalived, source)


# ipvsadm service flags keepalived can express (virtual_server keywords)
KEEPALIVED_FLAGS = ("sh-port", "sh-fallback", "mh-port", "mh-fallback")


def _check_keepalived_options(key: str, options: tuple[str, ...], source: str) -> None:
    """With ha: keepalived the services are keepalived's: only flags it has keywords for."""
    words = list(options)
    while words:
        word = words.pop(0)
        if word == "-o":
            continue
        if word == "-b" and words:
            flags = words.pop(0).split(",")
            if all(f in KEEPALIVED_FLAGS for f in flags):
                continue
        raise _fail(key, f"{word!r}: keepalived has no keyword for it (ha: keepalived)", source)


def _check_keepalived(ka: KeepalivedSettings, source: str) -> None:
    # VRRPv3 carries advert_int in centiseconds, 12 bits: 0.01..40.95 s
    if not 0.01 <= ka.advert_int_s <= 40.95:
        raise _fail(
            "keepalived.advert_int", f"must be 0.01..40.95 s, got {ka.advert_int_s}", source
        )
    if len(ka.priorities) != 2 or any(not 1 <= p <= 254 for p in ka.priorities):
        raise _fail(
            "keepalived.priorities",
            f"need two priorities 1..254, got {list(ka.priorities)}",
            source,
        )
    for name, value in (("delay_loop", ka.delay_loop_s), ("connect_timeout", ka.connect_timeout_s)):
        if not 0 < value <= 3600:
            raise _fail(f"keepalived.{name}", f"must be 0..3600 s, got {value}", source)
    if not 0 <= ka.delay_before_retry_s <= 3600:
        raise _fail("keepalived.delay_before_retry", "must be 0..3600 s", source)
    if not 0 <= ka.retry <= 100:
        raise _fail("keepalived.retry", f"must be 0..100, got {ka.retry}", source)


def _check_weights(key: str, weights: tuple[int, ...], n: int, source: str) -> None:
    if weights and len(weights) != n:
        raise _fail(key, f"need one weight per real server ({n}), got {len(weights)}", source)
    if any(not isinstance(w, int) or not 0 <= w <= 65535 for w in weights):
        raise _fail(key, f"weights must be integers 0..65535, got {list(weights)}", source)


def _check_netmask(key: str, netmask: str, family: str, source: str) -> None:
    try:
        if family == "ipv6":
            if not 1 <= int(netmask) <= 128:
                raise ValueError
        else:
            ipaddress.IPv4Network(f"0.0.0.0/{netmask}")
    except ValueError:
        raise _fail(key, f"bad netmask {netmask!r} for {family}", source) from None


_SERVICE_KEYS = {
    "protocol": "protocol", "port": "port", "family": "family", "fwmark": "fwmark",
    "ports": "ports", "scheduler": "scheduler", "weights": "weights",
    "persistence": "persistence_s", "netmask": "netmask", "options": "options",
}  # fmt: skip
_TOP_KEYS = {
    "mode", "scheduler", "real_servers", "weights", "clients", "client_namespaces", "sync",
    "services", "ha", "keepalived",
}  # fmt: skip
# keepalived: YAML key -> (field, type); times are seconds (int or float)
_KEEPALIVED_KEYS: dict[str, tuple[str, type]] = {
    "advert_int": ("advert_int_s", float), "priorities": ("priorities", tuple),
    "preempt": ("preempt", bool), "delay_loop": ("delay_loop_s", float),
    "connect_timeout": ("connect_timeout_s", float), "retry": ("retry", int),
    "delay_before_retry": ("delay_before_retry_s", float),
    "inhibit_on_failure": ("inhibit_on_failure", bool),
}  # fmt: skip


def _typed(value: Any, kind: type, key: str, source: str) -> Any:
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _fail(key, f"expected an integer, got {value!r}", source)
    if kind is str and not isinstance(value, str | int):
        raise _fail(key, f"expected a string, got {value!r}", source)
    if kind is bool and not isinstance(value, bool):
        raise _fail(key, f"expected true or false, got {value!r}", source)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _fail(key, f"expected a number of seconds, got {value!r}", source)
        return float(value)
    if kind is tuple:
        if not isinstance(value, list):
            raise _fail(key, f"expected a list, got {value!r}", source)
        return tuple(value)
    return str(value) if kind is str else value


_SERVICE_TYPES: dict[str, type] = {
    "protocol": str, "port": int, "family": str, "fwmark": int, "ports": tuple,
    "scheduler": str, "weights": tuple, "persistence_s": int, "netmask": str, "options": tuple,
}  # fmt: skip


def topology_from_dict(data: Any, source: str = "topology") -> Topology:
    """Build a Topology from parsed YAML; ParseError names the offending key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParseError(source, None, None, "expected a mapping at the top level")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise _fail(
            sorted(unknown)[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})", source
        )
    kwargs: dict[str, Any] = {}
    if "mode" in data:
        try:
            kwargs["mode"] = Mode(str(data["mode"]).lower())
        except ValueError:
            raise _fail("mode", f"must be nat, dr or tun, got {data['mode']!r}", source) from None
    for key, kind in (
        ("scheduler", str),
        ("real_servers", int),
        ("clients", int),
        ("client_namespaces", int),
        ("sync", bool),
    ):
        if key in data:
            kwargs[key] = _typed(data[key], kind, key, source)
    if "weights" in data:
        kwargs["weights"] = _typed(data["weights"], tuple, "weights", source)
    if "ha" in data:
        try:
            kwargs["ha"] = Ha(str(data["ha"]).lower())
        except ValueError:
            raise _fail("ha", f"must be manual or keepalived, got {data['ha']!r}", source) from None
    if "keepalived" in data:
        kwargs["keepalived"] = _keepalived(data["keepalived"], source)
    if "services" in data:
        if not isinstance(data["services"], list):
            raise _fail("services", "expected a list of services", source)
        kwargs["services"] = tuple(
            _service(item, f"services[{i}]", source) for i, item in enumerate(data["services"])
        )
    try:
        topo = Topology(**kwargs)
    except ParseError as exc:
        raise ParseError(source, None, None, exc.reason) from None
    return topo


def _service(item: Any, where: str, source: str) -> ServiceSpec:
    if not isinstance(item, dict):
        raise _fail(where, "expected a mapping", source)
    fields: dict[str, Any] = {}
    for key, value in item.items():
        if key not in _SERVICE_KEYS:
            raise _fail(
                f"{where}.{key}", f"unknown key (known: {', '.join(_SERVICE_KEYS)})", source
            )
        name = _SERVICE_KEYS[key]
        fields[name] = _typed(value, _SERVICE_TYPES[name], f"{where}.{key}", source)
    return ServiceSpec(**fields)


def _keepalived(item: Any, source: str) -> KeepalivedSettings:
    if not isinstance(item, dict):
        raise _fail("keepalived", "expected a mapping", source)
    fields: dict[str, Any] = {}
    for key, value in item.items():
        if key not in _KEEPALIVED_KEYS:
            known = ", ".join(_KEEPALIVED_KEYS)
            raise _fail(f"keepalived.{key}", f"unknown key (known: {known})", source)
        name, kind = _KEEPALIVED_KEYS[key]
        typed = _typed(value, kind, f"keepalived.{key}", source)
        if name == "priorities" and any(
            isinstance(p, bool) or not isinstance(p, int) for p in typed
        ):
            raise _fail("keepalived.priorities", f"expected integers, got {value!r}", source)
        fields[name] = typed
    return KeepalivedSettings(**fields)


def load_topology(path: Path) -> Topology:
    """Read a topology YAML file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ParseError(str(path), None, None, f"cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ParseError(str(path), line, None, f"invalid YAML: {exc}") from exc
    return topology_from_dict(data, str(path))
