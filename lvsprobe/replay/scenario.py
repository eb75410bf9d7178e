"""Replay scenario files (YAML): schema, validation, errors that name the file and line.

A scenario says what to drive against which service, from which client addresses, how fast,
and when to stop. Every run is bounded: `bounds.max_flows` and `bounds.max_duration` are
required. See `replays/*.yaml` for commented examples and `SCENARIO_HELP` for the schema.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lvsprobe.errors import ScenarioError
from lvsprobe.replay.yamldoc import Doc, Reader, type_name

KINDS = ("tcp", "http", "udp", "ftp-active", "ftp-passive", "tls", "syn")
ARRIVALS = ("open", "closed", "burst")
PICKS = ("round-robin", "random", "sequential")
DEFAULT_BACKEND_PATTERN = r"(?im)(?:^x-backend:[ \t]*|^|\b)(rs\d+)\b"
MAX_FLOWS_LIMIT = 10_000_000

SCENARIO_HELP = """\
name: text                       description: what the run checks (text)
seed: int (default 1)            same seed + same file = same plan
target: {address: VIP, port: N, protocol: tcp|udp, fwmark: N (optional),
         backends: {NAME: ADDRESS[:PORT], ...} (names for conn-table attribution),
         backend_pattern: REGEX (group 1 = the backend's name for itself)}
clients: {cidr: A.B.C.D/N | addresses: [..], count: N (first N of the CIDR),
          pick: round-robin|random|sequential}
flows: [{kind: tcp|http|udp|ftp-active|ftp-passive|tls|syn, weight: N, port: N,
         payload_bytes: N | [MIN, MAX], requests: N, keepalive: bool, path: /x,
         hold: DURATION, heartbeat: DURATION (default 100ms), think: DURATION,
         heartbeat_timeout: DURATION (default 1s: a later answer breaks the flow),
         resume: bool (tls), server_name: text (tls), user/password/file/size (ftp),
         sha256: HEX | {BACKEND: HEX} (ftp)}]
arrival: {model: open|closed|burst, rate: PER_S (open), concurrency: N (closed),
          burst_size: N, burst_every: DURATION (burst), process: uniform|poisson,
          speed: X (recorded flows run X times faster)}
bounds: {max_flows: N, max_duration: DURATION, flow_timeout: DURATION (default 10s)}
recorded: [{at: DURATION, client: POOL_INDEX, kind: ..., + any flows key}]
          (written by `replay import`; replaces the mix, replayed at the recorded offsets)
DURATION: a number of seconds or 150ms, 2s, 1m."""


@dataclass(frozen=True, slots=True)
class Target:
    address: str
    port: int
    protocol: str = "tcp"
    fwmark: int = 0
    backends: Mapping[str, str] = field(default_factory=dict)
    backend_pattern: str = DEFAULT_BACKEND_PATTERN


@dataclass(frozen=True, slots=True)
class ClientPool:
    addresses: tuple[str, ...]
    pick: str = "round-robin"


@dataclass(frozen=True, slots=True)
class FlowMix:
    """One entry of the flow mix; fields a kind does not use keep their defaults."""

    kind: str
    weight: float = 1.0
    port: int | None = None
    payload_bytes: tuple[int, int] = (64, 64)
    requests: int = 1
    keepalive: bool = False
    path: str = "/"
    hold_s: float = 0.0
    heartbeat_s: float = 0.1
    heartbeat_timeout_s: float = 1.0
    think_s: float = 0.0
    resume: bool = False
    server_name: str | None = None
    user: str = "anonymous"
    password: str = "lvsprobe@"
    file: str = "hello.txt"
    size: int | None = None
    sha256: Mapping[str, str] | None = None  # backend name (or "*": any) -> hex


@dataclass(frozen=True, slots=True)
class Arrival:
    model: str = "open"
    rate_per_s: float = 10.0
    concurrency: int = 1
    burst_size: int = 10
    burst_every_s: float = 1.0
    process: str = "uniform"
    speed: float = 1.0  # recorded flows: time runs this many times faster


@dataclass(frozen=True, slots=True)
class RecordedFlow:
    """One flow of a recorded capture (`replay import`): start offset, pool index, shape."""

    at_s: float
    client: int
    mix: FlowMix


@dataclass(frozen=True, slots=True)
class Bounds:
    max_flows: int
    max_duration_s: float
    flow_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    seed: int
    target: Target
    clients: ClientPool
    flows: tuple[FlowMix, ...]
    arrival: Arrival
    bounds: Bounds
    source: str = "<scenario>"
    expect: Mapping[str, Any] = field(default_factory=dict)
    recorded: tuple[RecordedFlow, ...] = ()


def _address(reader: Reader, key: str, default: str | None = None) -> str:
    text = reader.text(key, default)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        raise reader.err(key, f"{text!r} is not an IP address") from exc


def _target(doc: Doc) -> Target:
    r = Reader(
        doc, ("target",), ("address", "port", "protocol", "fwmark", "backends", "backend_pattern")
    )
    backends: dict[str, str] = {}
    if r.has("backends"):
        b = Reader(doc, ("target", "backends"), tuple(r.data["backends"] or ()))
        for name in b.data:
            spec = b.text(name)
            host = spec.rsplit(":", 1)[0] if spec.count(":") == 1 else spec.strip("[]")
            try:
                ipaddress.ip_address(host)
            except ValueError as exc:
                raise b.err(name, f"{spec!r} is not ADDRESS or ADDRESS:PORT") from exc
            backends[name] = spec
    pattern = r.text("backend_pattern", DEFAULT_BACKEND_PATTERN)
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise r.err("backend_pattern", f"bad regular expression: {exc}") from exc
    if compiled.groups < 1:
        raise r.err("backend_pattern", "needs one capture group: the backend's name")
    return Target(
        address=_address(r, "address"),
        port=r.integer("port", lo=1, hi=65535),
        protocol=r.choice("protocol", "tcp", ("tcp", "udp")),
        fwmark=r.integer("fwmark", 0, hi=2**32 - 1),
        backends=backends,
        backend_pattern=pattern,
    )


def _clients(doc: Doc) -> ClientPool:
    r = Reader(doc, ("clients",), ("cidr", "addresses", "count", "pick"))
    pick = r.choice("pick", "round-robin", PICKS)
    if r.has("addresses"):
        raw = r.data["addresses"]
        if not isinstance(raw, list) or not raw:
            raise r.err("addresses", "expected a non-empty list of IP addresses")
        out = []
        for i, item in enumerate(raw):
            try:
                out.append(str(ipaddress.ip_address(str(item))))
            except ValueError as exc:
                raise doc.error(("clients", "addresses", i), f"{item!r} is not an IP") from exc
        return ClientPool(tuple(out), pick)
    if not r.has("cidr"):
        raise r.err("cidr", "required: a CIDR (or an `addresses` list)")
    cidr = r.text("cidr")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise r.err("cidr", f"{cidr!r} is not a CIDR") from exc
    first = ipaddress.ip_address(cidr.split("/")[0])
    usable_end = int(net.broadcast_address) + 1
    if net.version == 4 and net.num_addresses > 2:
        usable_end -= 1  # the broadcast address is no client
        if first == net.network_address:
            first = first + 1  # nor the network address, unless the CIDR names a host in it
    available = usable_end - int(first)
    count = r.integer("count", min(available, 65536), lo=1, hi=65536)
    if count > available:
        raise r.err("count", f"{count} addresses asked, {cidr} holds {available} from {first}")
    return ClientPool(tuple(str(first + i) for i in range(count)), pick)


def _size_range(r: Reader, key: str, default: int) -> tuple[int, int]:
    value = r.data.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1 << 30:
        return (value, value)
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] <= value[1] <= 1 << 30
    ):
        return (value[0], value[1])
    raise r.err(key, f"expected bytes N or [MIN, MAX] with 0 <= MIN <= MAX <= 1GiB, got {value!r}")


_FLOW_KEYS = (
    *(f.name for f in fields(FlowMix) if not f.name.endswith("_s")),
    "hold",
    "heartbeat",
    "heartbeat_timeout",
    "think",
)


def _flows(doc: Doc) -> tuple[FlowMix, ...]:
    raw = doc.root.get("flows")
    if not isinstance(raw, list) or not raw:
        raise doc.error(("flows",), "required: a non-empty list of flow kinds with weights")
    out = []
    for i in range(len(raw)):
        r = Reader(doc, ("flows", i), _FLOW_KEYS)
        sha = r.data.get("sha256")
        shas = sha if isinstance(sha, dict) else {"*": sha} if sha is not None else {}
        for value in shas.values():
            if not (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)):
                raise r.err(
                    "sha256",
                    "expected 64 lower-case hex digits (quote them), or "
                    "{BACKEND: HEX, ...} when each backend serves its own file",
                )
        out.append(
            FlowMix(
                kind=r.choice("kind", "", KINDS) if r.has("kind") else _missing(r, "kind"),
                weight=r.number("weight", 1.0, lo=0.0, hi=1e6),
                port=r.integer("port", lo=1, hi=65535) if r.has("port") else None,
                payload_bytes=_size_range(r, "payload_bytes", 64),
                requests=r.integer("requests", 1, lo=1, hi=100_000),
                keepalive=r.flag("keepalive", False),
                path=r.text("path", "/"),
                hold_s=r.duration("hold", 0.0),
                heartbeat_s=r.duration("heartbeat", 0.1),
                heartbeat_timeout_s=r.duration("heartbeat_timeout", 1.0),
                think_s=r.duration("think", 0.0),
                resume=r.flag("resume", False),
                server_name=r.text("server_name") if r.has("server_name") else None,
                user=r.text("user", "anonymous"),
                password=r.text("password", "lvsprobe@"),
                file=r.text("file", "hello.txt"),
                size=r.integer("size", lo=0, hi=2**62) if r.has("size") else None,
                sha256=shas or None,
            )
        )
        if out[-1].kind == "http" and out[-1].requests > 1 and not out[-1].keepalive:
            raise r.err("requests", "more than one request per flow needs keepalive: true")
        if out[-1].heartbeat_s <= 0 and out[-1].hold_s > 0:
            raise r.err("heartbeat", "must be > 0 when hold is set")
    if sum(f.weight for f in out) <= 0:
        raise doc.error(("flows",), "all weights are 0: nothing to run")
    return tuple(out)


def _missing(r: Reader, key: str) -> str:
    raise r.err(key, f"required (one of {', '.join(KINDS)})")


def _arrival(doc: Doc) -> Arrival:
    if "arrival" not in doc.root:
        return Arrival()
    r = Reader(
        doc,
        ("arrival",),
        (
            "model",
            "rate",
            "concurrency",
            "burst_size",
            "burst_every",
            "process",
            "speed",
        ),
    )
    return Arrival(
        model=r.choice("model", "open", ARRIVALS),
        rate_per_s=r.number("rate", 10.0, lo=0.001, hi=1e7),
        concurrency=r.integer("concurrency", 1, lo=1, hi=100_000),
        burst_size=r.integer("burst_size", 10, lo=1, hi=1_000_000),
        burst_every_s=r.duration("burst_every", 1.0),
        process=r.choice("process", "uniform", ("uniform", "poisson")),
        speed=r.number("speed", 1.0, lo=0.001, hi=1e6),
    )


def _bounds(doc: Doc) -> Bounds:
    if "bounds" not in doc.root:
        raise doc.error((), "bounds: required (max_flows and max_duration: every run stops)")
    r = Reader(doc, ("bounds",), ("max_flows", "max_duration", "flow_timeout"))
    return Bounds(
        max_flows=r.integer("max_flows", lo=1, hi=MAX_FLOWS_LIMIT),
        max_duration_s=r.duration("max_duration", None),
        flow_timeout_s=r.duration("flow_timeout", 10.0, hi=3600.0),
    )


def _recorded(doc: Doc, pool: int) -> tuple[RecordedFlow, ...]:
    raw = doc.root.get("recorded", [])
    if not isinstance(raw, list):
        raise doc.error(("recorded",), "expected a list of recorded flows")
    out = []
    for i in range(len(raw)):
        r = Reader(doc, ("recorded", i), (*_FLOW_KEYS, "at", "client"))
        single = Doc.__new__(Doc)
        single.source, single.lines = doc.source, doc.lines
        single.root = {"flows": [{k: v for k, v in r.data.items() if k not in ("at", "client")}]}
        for path, line in list(doc.lines.items()):
            if path[:2] == ("recorded", i):
                single.lines[("flows", 0, *path[2:])] = line
        mix = _flows(single)[0]
        out.append(RecordedFlow(r.duration("at", 0.0), r.integer("client", 0, hi=pool - 1), mix))
    return tuple(out)


def _expect(doc: Doc) -> dict[str, Any]:
    from lvsprobe.replay.expect import KNOWN

    value = doc.root.get("expect", {})
    if not isinstance(value, dict):
        raise doc.error(("expect",), "expected a mapping of checks")
    for key in value:
        if key not in KNOWN:
            raise doc.error(("expect", key), f"unknown check (expected one of {', '.join(KNOWN)})")
    return value


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """A validated Scenario from YAML text; ScenarioError names `source` and the line."""
    doc = Doc(source, text)
    if not isinstance(doc.root, dict):
        raise doc.error((), f"expected a mapping at the top, got {type_name(doc.root)}")
    top = Reader(
        doc,
        (),
        (
            "name",
            "description",
            "seed",
            "target",
            "clients",
            "flows",
            "arrival",
            "bounds",
            "expect",
            "recorded",
        ),
    )
    for required in ("target", "clients"):
        if required not in doc.root:
            raise doc.error((), f"{required}: required")
    scenario = Scenario(
        name=top.text("name", Path(source).stem),
        description=top.text("description", ""),
        seed=top.integer("seed", 1, hi=2**63),
        target=_target(doc),
        clients=_clients(doc),
        flows=_flows(doc),
        arrival=_arrival(doc),
        bounds=_bounds(doc),
        source=source,
        expect=_expect(doc),
    )
    if "recorded" in doc.root:
        recorded = _recorded(doc, len(scenario.clients.addresses))
        scenario = replace(scenario, recorded=recorded)
    if scenario.bounds.max_duration_s <= 0:
        raise doc.error(("bounds", "max_duration"), "must be > 0")
    return scenario


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from exc
    return parse_scenario(text, str(path))
