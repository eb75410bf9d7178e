"""Recorded flows -> a scenario file: client addresses mapped into the pool (in order of first
appearance), the server mapped to the target, start offsets kept (scaled at run time by
`arrival.speed`). Application detail from tshark's dissectors via pyshark, on request."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from lvsprobe.errors import ParseError, ScenarioError
from lvsprobe.replay.flowmix import MAX_REQUESTS
from lvsprobe.replay.limits import MAX_CLIENTS, MAX_RECORDED, MAX_RUN_S
from lvsprobe.replay.pcapimport import Flow, FlowKey, ImportResult, guess_kind
from lvsprobe.replay.scenario import pool_span
from lvsprobe.replay.yamldoc import CONTROL_CHARS

MAX_PAYLOAD = 1 << 20
DETAIL_PASSES = 3  # tshark passes tried before a failure counts (add_detail)


def add_detail(path: Path, flows: list[Flow]) -> int:
    """Fill `flow.detail` (http_path, ftp_commands, tls_sni, tls_session_id) with tshark's
    dissectors; returns how many flows got detail.

    A failed pass is run again (DETAIL_PASSES in all) before it counts: asyncio's child watcher
    reports a tshark that exited cleanly as "crashed, 255" when another waiter in a busy
    process reaped it first (seen in CI, twice in a row under load). A damaged file fails
    every pass; flows change only after a whole pass."""
    index: dict[FlowKey, int] = {
        (f.protocol, f.client, f.client_port, f.server, f.server_port): n
        for n, f in enumerate(flows)
    }
    for passes_left in range(DETAIL_PASSES - 1, -1, -1):
        try:
            found = _dissect(path, index, flows)
            break
        except ParseError:
            if not passes_left:
                raise
    for n, detail in found.items():
        flows[n].detail = detail
    return len(found)


def _dissect(path: Path, index: dict[FlowKey, int], flows: list[Flow]) -> dict[int, dict[str, Any]]:
    """One tshark pass: each touched flow's new detail (its old detail plus what the pass saw),
    by position in `flows`."""
    import pyshark

    # pyshark drives tshark with asyncio: give it its own loop (asyncio.run() elsewhere in
    # the process leaves no current loop behind)
    loop = asyncio.new_event_loop()
    capture = pyshark.FileCapture(
        str(path),
        display_filter="http.request or ftp.request or tls.handshake.type == 1",
        keep_packets=False,
        eventloop=loop,
    )
    found: dict[int, dict[str, Any]] = {}
    try:
        try:
            for packet in capture:
                ip = packet.ipv6 if hasattr(packet, "ipv6") else getattr(packet, "ip", None)
                if ip is None or not hasattr(packet, "tcp"):
                    continue
                key = (
                    6,
                    str(ip.src),
                    int(packet.tcp.srcport),
                    str(ip.dst),
                    int(packet.tcp.dstport),
                )
                n = index.get(key)
                if n is None:
                    continue
                if n not in found:
                    found[n] = copy.deepcopy(flows[n].detail)
                _note_packet(packet, found[n])
        finally:
            capture.close()
    except Exception as exc:  # pyshark/tshark raise their own types for damaged files
        raise ParseError(str(path), None, None, f"tshark could not dissect it: {exc}") from exc
    finally:
        loop.close()
    return found


def _note_packet(packet: Any, detail: dict[str, Any]) -> None:
    """What one dissected request tells about its flow."""
    if hasattr(packet, "http") and hasattr(packet.http, "request_uri"):
        detail["http_requests"] = detail.get("http_requests", 0) + 1
        detail.setdefault("http_path", str(packet.http.request_uri))
        detail.setdefault("http_method", str(packet.http.request_method))
    if hasattr(packet, "ftp") and hasattr(packet.ftp, "request_command"):
        detail.setdefault("ftp_commands", []).append(str(packet.ftp.request_command))
        if str(packet.ftp.request_command) == "RETR":
            detail["ftp_file"] = str(packet.ftp.request_arg)
    if hasattr(packet, "tls"):
        tls = packet.tls
        if hasattr(tls, "handshake_extensions_server_name"):
            detail["tls_sni"] = str(tls.handshake_extensions_server_name)
        session = getattr(tls, "handshake_session_id", None)
        if session is not None:
            detail["tls_session_id"] = str(session).replace(":", "")


def _plain(text: object) -> str | None:
    """Recorded text (a name, a file) fit for a scenario: one line, no control characters."""
    value = str(text)
    return None if not value or CONTROL_CHARS.search(value) else value


def _request_path(raw: str) -> str | None:
    """The path of a recorded request target: origin-form as is, absolute-form's path and
    query; None for `*`, authority-form or garbage (the replay then asks for `/`)."""
    words = raw.split(None, 1)
    target = words[0] if words else ""
    if target.startswith(("http://", "https://")):
        parts = urlsplit(target)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
    return _plain(target) if target.startswith("/") else None


def _entry(flow: Flow, start: float, client: int, main_port: int) -> dict[str, Any]:
    kind = guess_kind(flow)
    if "ftp_commands" in flow.detail:
        kind = "ftp-active" if "PORT" in flow.detail["ftp_commands"] else "ftp-passive"
    entry: dict[str, Any] = {
        "at": f"{round((flow.start - start) * 1000, 3)}ms",
        "client": client,
        "kind": kind,
    }
    if flow.server_port != main_port:
        entry["port"] = flow.server_port
    if kind in ("tcp", "udp"):
        entry["payload_bytes"] = min(flow.client_bytes, MAX_PAYLOAD)
    if kind == "http":
        path = flow.detail.get("http_path")
        words = flow.first_payload.split(None, 2)  # method, target, the rest
        if path is None and len(words) > 1 and words[0] in (b"GET", b"POST", b"HEAD"):
            path = words[1].decode("latin-1")
        if path and (path := _request_path(path)):
            entry["path"] = path
        requests = min(flow.detail.get("http_requests", 1), MAX_REQUESTS)
        if requests > 1:
            entry.update(keepalive=True, requests=requests)
    if kind == "tls" and (name := _plain(flow.detail.get("tls_sni", ""))):
        entry["server_name"] = name
    if kind.startswith("ftp") and (file := _plain(flow.detail.get("ftp_file", ""))):
        entry["file"] = file
    return entry


def ftp_data_flows(flows: list[Flow]) -> set[int]:
    """Indexes of FTP data connections: they belong to their control connection's flow.

    Active mode: the server connects back from port 20. Passive mode: the client connects to
    an unprivileged port of the server it holds a port-21 control connection with, while that
    control connection is open.
    """
    controls = [f for f in flows if f.protocol == 6 and f.server_port == 21]
    data = set()
    for i, flow in enumerate(flows):
        if flow.protocol != 6 or flow.server_port == 21:
            continue
        if flow.client_port == 20:
            data.add(i)
            continue
        if flow.server_port >= 1024 and any(
            c.client == flow.client and c.server == flow.server and c.start <= flow.start <= c.end
            for c in controls
        ):
            data.add(i)
    return data


def replayable(result: ImportResult) -> list[Flow]:
    """The flows a scenario replays: TCP and UDP to a real port, FTP data folded into its
    control connection's flow. The scenario keeps the first MAX_RECORDED of them."""
    flows = [f for f in result.flows if f.protocol in (6, 17) and f.server_port > 0]
    folded = ftp_data_flows(flows)
    return [f for i, f in enumerate(flows) if i not in folded]


def to_scenario(
    result: ImportResult,
    source: str,
    target: str,
    target_port: int | None,
    clients_cidr: str,
    speed: float = 1.0,
) -> str:
    """A scenario YAML replaying `result`'s flows against target:port (default: the recorded
    service's port) from clients_cidr (checked by the caller: scenario.pool_span).
    ScenarioError if the recording is longer than a run may last at this speed."""
    every = replayable(result)
    if not every:
        raise ParseError(
            source,
            None,
            None,
            "no TCP or UDP flows found" + (f" ({result.error})" if result.error else ""),
        )
    flows = every[:MAX_RECORDED]
    start = flows[0].start
    ports: dict[int, int] = {}
    for flow in flows:
        ports[flow.server_port] = ports.get(flow.server_port, 0) + 1
    main_port = max(ports, key=lambda p: ports[p])  # the recorded service: it becomes the target
    pool = min(MAX_CLIENTS, pool_span(clients_cidr)[1])  # ValueError: not a client pool
    span = max(f.end for f in flows) - start
    if span / speed + 30 > MAX_RUN_S:
        raise ScenarioError(
            f"{source}: {span:.0f} s recorded, at speed {speed:g} that is more than a run may "
            f"last ({MAX_RUN_S / 3600:g} h): replay it faster (--speed)"
        )
    clients: dict[str, int] = {}
    recorded = []
    kinds: dict[str, int] = {}
    for flow in flows:
        client = clients.setdefault(flow.client, len(clients)) % pool
        entry = _entry(flow, start, client, main_port)
        kinds[entry["kind"]] = kinds.get(entry["kind"], 0) + 1
        recorded.append(entry)
    cut = (
        f"; the first {len(flows):,} of {len(every):,} flows (a scenario's limit)"
        if len(flows) < len(every)
        else ""
    )
    doc = {
        "name": Path(source).stem,
        "description": (
            f"Recorded from {Path(source).name}: {len(flows)} flows from {len(clients)} clients "
            f"over {span:.3f}s ({result.packets} packets){cut}"
            + (f"; capture damaged: {result.error}" if result.error else "")
        ),
        "target": {"address": target, "port": target_port or main_port},
        "clients": {"cidr": clients_cidr, "count": min(pool, len(clients))},
        "flows": [{"kind": k, "weight": n} for k, n in sorted(kinds.items())],
        "arrival": {"model": "open", "speed": speed},
        "bounds": {"max_flows": len(flows), "max_duration": f"{span / speed + 30:.3f}s"},
        "recorded": recorded,
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100)
