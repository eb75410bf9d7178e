"""A scenario's flow shapes: the `flows:` mix and the `recorded:` list, read from one schema.

Both lists hold the same entries (a recorded one adds its start offset and pool index), so
one reader validates both: types, ranges and the combinations a flow kind cannot run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from lvsprobe.replay.limits import (
    MAX_FLOW_TIMEOUT_S,
    MAX_MIX_ENTRIES,
    MAX_RECORDED,
    MAX_RUN_S,
    MIN_HEARTBEAT_S,
)
from lvsprobe.replay.yamldoc import Reader

KINDS = ("tcp", "http", "udp", "ftp-active", "ftp-passive", "tls", "syn")
MAX_PAYLOAD_BYTES = 1 << 30
MAX_REQUESTS = 100_000  # per flow (keep-alive)
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
class RecordedFlow:
    """One flow of a recorded capture (`replay import`): start offset, pool index, shape."""

    at_s: float
    client: int
    mix: FlowMix


FLOW_KEYS = (
    *(f.name for f in fields(FlowMix) if not f.name.endswith("_s")),
    "hold",
    "heartbeat",
    "heartbeat_timeout",
    "think",
)
RECORDED_KEYS = (*FLOW_KEYS, "at", "client")


def _size_range(r: Reader, key: str, default: int) -> tuple[int, int]:
    value = r.data.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_PAYLOAD_BYTES:
        return (value, value)
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] <= value[1] <= MAX_PAYLOAD_BYTES
    ):
        return (value[0], value[1])
    raise r.err(key, f"expected bytes N or [MIN, MAX] with 0 <= MIN <= MAX <= 1GiB, got {value!r}")


def _sha256(r: Reader) -> dict[str, str]:
    raw = r.data.get("sha256")
    shas = raw if isinstance(raw, dict) else {"*": raw} if raw is not None else {}
    for value in shas.values():
        if not (isinstance(value, str) and _SHA256.fullmatch(value)):
            raise r.err(
                "sha256",
                "expected 64 lower-case hex digits (quote them), or "
                "{BACKEND: HEX, ...} when each backend serves its own file",
            )
    return shas


def _mix(r: Reader) -> FlowMix:
    """One flow entry, validated whole."""
    if not r.has("kind"):
        raise r.err("kind", f"required (one of {', '.join(KINDS)})")
    mix = FlowMix(
        kind=r.choice("kind", "", KINDS),
        weight=r.number("weight", 1.0, lo=0.0, hi=1e6),
        port=r.integer("port", lo=1, hi=65535) if r.has("port") else None,
        payload_bytes=_size_range(r, "payload_bytes", 64),
        requests=r.integer("requests", 1, lo=1, hi=MAX_REQUESTS),
        keepalive=r.flag("keepalive", False),
        path=r.line("path", "/"),
        hold_s=r.duration("hold", 0.0),
        heartbeat_s=r.duration("heartbeat", 0.1),
        heartbeat_timeout_s=r.duration("heartbeat_timeout", 1.0, hi=MAX_FLOW_TIMEOUT_S),
        think_s=r.duration("think", 0.0),
        resume=r.flag("resume", False),
        server_name=r.line("server_name") if r.has("server_name") else None,
        user=r.line("user", "anonymous"),
        password=r.line("password", "lvsprobe@"),
        file=r.line("file", "hello.txt"),
        size=r.integer("size", lo=0, hi=2**62) if r.has("size") else None,
        sha256=_sha256(r) or None,
    )
    if not mix.path.startswith("/") or " " in mix.path:
        raise r.err("path", f"{mix.path[:40]!r}: expected an absolute path (/x) without spaces")
    if mix.kind == "http" and mix.requests > 1 and not mix.keepalive:
        raise r.err("requests", "more than one request per flow needs keepalive: true")
    if mix.hold_s > 0 and mix.heartbeat_s < MIN_HEARTBEAT_S:
        raise r.err("heartbeat", f"must be at least {MIN_HEARTBEAT_S * 1000:g}ms when hold is set")
    return mix


def read_flows(top: Reader) -> tuple[FlowMix, ...]:
    """The `flows:` mix (under the top-level reader): kinds with weights, one above 0."""
    entries = top.items("flows", "flow kinds with weights", MAX_MIX_ENTRIES)
    out = tuple(_mix(Reader(top.doc, ("flows", i), FLOW_KEYS)) for i in range(len(entries)))
    if sum(f.weight for f in out) <= 0:
        raise top.err("flows", "all weights are 0: nothing to run")
    return out


def read_recorded(top: Reader, pool: int, speed: float) -> tuple[RecordedFlow, ...]:
    """The `recorded:` list (written by `replay import`): offset, client index, flow shape.
    Offsets are recorded time: replayed `speed` times faster, within MAX_RUN_S."""
    entries = top.items("recorded", "recorded flows", MAX_RECORDED)
    out = []
    for i in range(len(entries)):
        r = Reader(top.doc, ("recorded", i), RECORDED_KEYS)
        at_s = r.duration("at", 0.0, hi=MAX_RUN_S * speed)
        client = r.integer("client", 0, hi=pool - 1)
        out.append(RecordedFlow(at_s, client, _mix(r)))
    return tuple(out)
