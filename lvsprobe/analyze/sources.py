"""Alternative fairness inputs: the director's connection table and counter deltas.

A connection-table row names the real server each client address:port went to, so it can stand
in for a flow log (hash schedulers are then still checked client by client). Two `lvsprobe
status --json` documents give per-backend connection counters; their difference is the split.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lvsprobe.errors import AnalysisError


def flows_from_conns(
    snapshots: list[tuple[float, list[Any]]], names_by_address: Mapping[str, str]
) -> pd.DataFrame:
    """One pseudo-flow per distinct connection entry (templates skipped), in the flow log's
    columns; `backend` is the real server's name (or address:port if unnamed)."""
    seen: dict[tuple[str, int, str, int], dict[str, Any]] = {}
    for t_s, conns in snapshots:
        for c in conns:
            if c.is_template or c.virtual_address is None:
                continue
            key = (str(c.client_address), c.client_port, str(c.virtual_address), c.virtual_port)
            if key in seen:
                continue
            dest = str(c.dest_address)
            seen[key] = {
                "flow_id": len(seen),
                "kind": "conn-table",
                "client_address": key[0],
                "client_port": key[1],
                "server_address": key[2],
                "server_port": key[3],
                "protocol": c.protocol.lower(),
                "start_s": float(t_s),
                "end_s": float(t_s),
                "outcome": "ok",
                "backend": names_by_address.get(dest, f"{dest}:{c.dest_port}"),
                "conn_backend": None,
                "connect_s": None,
                "detail": None,
            }
    if not seen:
        raise AnalysisError("the connection-table snapshots hold no connections")
    return pd.DataFrame(list(seen.values()))


def _backend_conns(path: Path) -> dict[tuple[str, int], dict[str, int]]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AnalysisError(f"{path}: unreadable snapshot JSON: {exc}") from exc
    out: dict[tuple[str, int], dict[str, int]] = {}
    services = doc.get("services") if isinstance(doc, dict) else None
    if not isinstance(services, list):
        raise AnalysisError(f"{path}: not a `lvsprobe status --json` document (no services)")
    for svc in services:
        per: dict[str, int] = {}
        for b in svc.get("backends") or []:
            stats = b.get("stats") or {}
            if "conns" not in stats:
                raise AnalysisError(f"{path}: backend {b.get('address')} has no conns counter")
            per[str(b.get("address"))] = int(stats["conns"])
        out[(str(svc.get("address") or svc.get("fwmark")), int(svc.get("port") or 0))] = per
    return out


def counter_deltas(
    before: Path, after: Path, service: tuple[str, int], names_by_address: Mapping[str, str]
) -> dict[str, int]:
    """New connections per backend between two snapshots (a zeroing in between is refused)."""
    a = _backend_conns(before)
    b = _backend_conns(after)
    if service not in a or service not in b:
        raise AnalysisError(f"service {service[0]}:{service[1]} is not in both snapshots")
    out: dict[str, int] = {}
    for addr, n_after in b[service].items():
        delta = n_after - a[service].get(addr, 0)
        if delta < 0:
            raise AnalysisError(f"backend {addr}: counter went down (zeroed between snapshots?)")
        out[names_by_address.get(addr, addr)] = delta
    return out
