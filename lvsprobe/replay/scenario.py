"""Replay scenario files (YAML): schema, validation, errors that name the file and line.

A scenario says what to drive against which service, from which client addresses, how fast,
and when to stop. Every run is bounded: `bounds.max_flows` and `bounds.max_duration` are
required. See `replays/*.yaml` for commented examples and `SCENARIO_HELP` for the schema.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lvsprobe.errors import ScenarioError
from lvsprobe.replay import limits
from lvsprobe.replay.expect import read_expect
from lvsprobe.replay.flowmix import FlowMix, RecordedFlow, read_flows, read_recorded
from lvsprobe.replay.flows import DEFAULT_BACKEND_PATTERN
from lvsprobe.replay.profile import Stage, read_stages
from lvsprobe.replay.thresholds import Threshold, check_threshold, read_thresholds
from lvsprobe.replay.yamldoc import Doc, Reader

ARRIVALS = ("open", "closed", "burst", "pool")
PICKS = ("round-robin", "random", "sequential")

SCENARIO_HELP = (
    """\
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
arrival: {model: open|closed|burst|pool, rate: PER_S (open, pool), concurrency: N (closed),
          burst_size: N, burst_every: DURATION (burst), process: uniform|poisson,
          connections: N (pool: a flow is one HTTP request on N keep-alive connections,
          wrk2's -c N -R RATE),
          stages: [{duration: DURATION, target: PER_S (ramp to it, as k6) | rate: PER_S
                   (hold it) | concurrency: N (closed-model loops), mix: {KIND: WEIGHT}}]
                  (open, pool; instead of rate), start_rate: PER_S (where a first ramp starts),
          speed: X (recorded flows run X times faster)}
bounds: {max_flows: N, max_duration: DURATION, flow_timeout: DURATION (default 10s)}
recorded: [{at: DURATION, client: POOL_INDEX, kind: ..., + any flows key}]
          (written by `replay import`; replaces the mix, replayed at the recorded offsets)
thresholds: ["p99 < 200ms", "errors < 0.1%", ...] (gates: a breach exits 3; see below)
DURATION: a number of seconds or 150ms, 2s, 1m.

"""
    + limits.LIMITS_HELP
)


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
class Arrival:
    model: str = "open"
    rate_per_s: float = 10.0
    concurrency: int = 1
    burst_size: int = 10
    burst_every_s: float = 1.0
    process: str = "uniform"
    speed: float = 1.0  # recorded flows: time runs this many times faster
    connections: int = 0  # pool: keep-alive connections the requests share
    stages: tuple[Stage, ...] = ()  # the rate profile; none: `rate` (or `concurrency`) throughout


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
    thresholds: tuple[Threshold, ...] = ()

    def check_threshold(self, threshold: Threshold) -> None:
        """ValueError if `threshold` cannot apply to this scenario (thresholds.py)."""
        arrival = self.arrival
        stages = len(arrival.stages) or 1
        open_ = any(not s.closed for s in arrival.stages) or (
            not arrival.stages and arrival.model != "closed"
        )
        check_threshold(threshold, [f.kind for f in self.flows], stages, open_)


def parse_endpoint(text: str) -> tuple[str, int | None]:
    """`A.B.C.D`, `A.B.C.D:PORT`, `V6`, `[V6]` or `[V6]:PORT` -> (address, port or None);
    ValueError says what is wrong. The one reading of ADDRESS[:PORT] (scenario, CLI)."""
    host, port = text.strip(), None
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r} is not ADDRESS[:PORT]")
        port = rest[1:] if rest else None
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not ADDRESS[:PORT]: {host!r} is not an IP address") from None
    if port is None:
        return str(address), None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: port {port!r} is not in 1..65535")
    return str(address), int(port)


def pool_span(cidr: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """The first client address of `cidr` and how many follow it (network and broadcast
    addresses are no clients); ValueError if it is no CIDR."""
    try:
        net = ipaddress.ip_network(cidr, strict=False)
        first = ipaddress.ip_address(cidr.split("/")[0])
    except ValueError:
        raise ValueError(f"{cidr!r} is not a CIDR") from None
    usable_end = int(net.broadcast_address) + 1
    if net.version == 4 and net.num_addresses > 2:
        usable_end -= 1  # the broadcast address is no client
        if first == net.network_address:
            first = first + 1  # nor the network address, unless the CIDR names a host in it
    if usable_end <= int(first):
        raise ValueError(f"{cidr!r} holds no client address (it names the broadcast address)")
    return first, usable_end - int(first)


def check_families(target_address: str, client_address: str) -> None:
    """ValueError unless the target and the clients are both IPv4 or both IPv6."""
    target, client = ipaddress.ip_address(target_address), ipaddress.ip_address(client_address)
    if target.version != client.version:
        raise ValueError(
            f"the clients are IPv{client.version} ({client}), the target is IPv{target.version} "
            f"({target}): a flow needs both in one family"
        )


def _target(doc: Doc) -> Target:
    allowed = ("address", "port", "protocol", "fwmark", "backends", "backend_pattern")
    r = Reader(doc, ("target",), allowed)
    backends: dict[str, str] = {}
    if r.has("backends"):
        b = Reader(doc, ("target", "backends"), None, "a mapping NAME: ADDRESS[:PORT]")
        for name in b.data:
            spec = b.line(name)
            try:
                parse_endpoint(spec)
            except ValueError as exc:
                raise b.err(name, str(exc)) from exc
            backends[name] = spec
    pattern = r.text("backend_pattern", DEFAULT_BACKEND_PATTERN)
    try:
        compiled = re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise r.err("backend_pattern", f"bad regular expression: {exc}") from exc
    if compiled.groups < 1:
        raise r.err("backend_pattern", "needs one capture group: the backend's name")
    address = r.text("address")
    try:
        ipaddress.ip_address(address)
    except ValueError as exc:
        raise r.err("address", f"{address[:40]!r} is not an IP address") from exc
    return Target(
        address=str(ipaddress.ip_address(address)),
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
        out = []
        for i, item in enumerate(r.items("addresses", "IP addresses", limits.MAX_CLIENTS)):
            try:
                out.append(str(ipaddress.ip_address(item if isinstance(item, str) else "")))
            except ValueError as exc:
                raise doc.error(("clients", "addresses", i), f"{item!r} is not an IP") from exc
        return ClientPool(tuple(out), pick)
    if not r.has("cidr"):
        raise r.err("cidr", "required: a CIDR (or an `addresses` list)")
    cidr = r.text("cidr")
    try:
        first, available = pool_span(cidr)
    except ValueError as exc:
        raise r.err("cidr", str(exc)) from exc
    count = r.integer("count", min(available, limits.MAX_CLIENTS), lo=1, hi=limits.MAX_CLIENTS)
    if count > available:
        raise r.err("count", f"{count} addresses asked, {cidr} holds {available} from {first}")
    return ClientPool(tuple(str(first + i) for i in range(count)), pick)


def _arrival(doc: Doc, flows: tuple[FlowMix, ...]) -> Arrival:
    if "arrival" not in doc.root:
        return Arrival()
    allowed = ("model", "rate", "concurrency", "burst_size", "burst_every", "process", "speed",
               "connections", "stages", "start_rate")  # fmt: skip
    r = Reader(doc, ("arrival",), allowed)
    model = r.choice("model", "open", ARRIVALS)
    pool = model == "pool"
    if r.has("connections") != pool:
        raise r.err("connections", "required with model pool, and only there")
    if r.has("stages"):
        if model not in ("open", "pool"):
            raise r.err("stages", f"not with model {model} (a stage with concurrency is closed)")
        if r.has("rate"):
            raise r.err("rate", "not with stages: each stage sets its own rate")
    elif r.has("start_rate"):
        raise r.err("start_rate", "only with stages: where the first ramp starts")
    if pool:
        _check_pool(doc, flows)
    kinds = tuple(dict.fromkeys(f.kind for f in flows))
    return Arrival(
        model=model,
        rate_per_s=r.number("rate", 10.0, lo=0.001, hi=limits.MAX_RATE_PER_S),
        concurrency=r.integer("concurrency", 1, lo=1, hi=limits.MAX_IN_FLIGHT),
        burst_size=r.integer("burst_size", 10, lo=1, hi=limits.MAX_IN_FLIGHT),
        burst_every_s=r.duration("burst_every", 1.0),
        process=r.choice("process", "uniform", ("uniform", "poisson")),
        speed=r.number("speed", 1.0, lo=0.001, hi=1e6),
        connections=r.integer("connections", 0, lo=1 if pool else 0, hi=limits.MAX_IN_FLIGHT),
        stages=read_stages(r, kinds, pool) if r.has("stages") else (),
    )


def _check_pool(doc: Doc, flows: tuple[FlowMix, ...]) -> None:
    """The pool model sends one HTTP request per flow over kept-alive connections."""
    for i, mix in enumerate(flows):
        if mix.kind != "http":
            raise doc.error(("flows", i, "kind"), "the pool model drives http flows only")
        if mix.requests != 1 or mix.think_s > 0:
            raise doc.error(
                ("flows", i), "in the pool model a flow is one request: no requests or think"
            )


def _bounds(doc: Doc) -> Bounds:
    if "bounds" not in doc.root:
        raise doc.error((), "bounds: required (max_flows and max_duration: every run stops)")
    r = Reader(doc, ("bounds",), ("max_flows", "max_duration", "flow_timeout"))
    bounds = Bounds(
        max_flows=r.integer("max_flows", lo=1, hi=limits.MAX_FLOWS),
        max_duration_s=r.duration("max_duration", None),
        flow_timeout_s=r.duration("flow_timeout", 10.0, hi=limits.MAX_FLOW_TIMEOUT_S),
    )
    if bounds.max_duration_s <= 0:
        raise r.err("max_duration", "must be > 0")
    return bounds


_TOP_KEYS = (
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
    "thresholds",
)


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """A validated Scenario from YAML text; ScenarioError names `source` and the line."""
    doc = Doc(source, text)
    top = Reader(doc, (), _TOP_KEYS)
    for required in ("target", "clients"):
        if required not in doc.root:
            raise doc.error((), f"{required}: required")
    flows = read_flows(top)
    scenario = Scenario(
        name=top.text("name", Path(source).stem),
        description=top.text("description", ""),
        seed=top.integer("seed", 1, hi=2**63),
        target=_target(doc),
        clients=_clients(doc),
        flows=flows,
        arrival=_arrival(doc, flows),
        bounds=_bounds(doc),
        source=source,
        expect=read_expect(top),
        thresholds=read_thresholds(top),
    )
    for i, threshold in enumerate(scenario.thresholds):
        try:
            scenario.check_threshold(threshold)
        except ValueError as exc:
            raise doc.error(("thresholds", i), str(exc)) from None
    try:
        check_families(scenario.target.address, scenario.clients.addresses[0])
    except ValueError as exc:
        raise doc.error(("clients",), str(exc)) from exc
    if top.has("recorded"):
        if scenario.arrival.stages or scenario.arrival.model == "pool":
            raise doc.error(("recorded",), "replays its own offsets: no stages or pool model")
        pool, speed = len(scenario.clients.addresses), scenario.arrival.speed
        scenario = replace(scenario, recorded=read_recorded(top, pool, speed))
    return scenario


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file (at most limits.MAX_SCENARIO_BYTES)."""
    try:
        with path.open("rb") as fh:
            data = fh.read(limits.MAX_SCENARIO_BYTES + 1)
        if len(data) > limits.MAX_SCENARIO_BYTES:
            raise ScenarioError(
                f"{path}: larger than a scenario file may be ({limits.MAX_SCENARIO_BYTES:,} "
                "bytes; a recorded scenario holds at most "
                f"{limits.MAX_RECORDED:,} flows)"
            )
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario: {exc}") from exc
    return parse_scenario(text, str(path))
