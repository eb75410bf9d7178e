"""Tiny readers of ipvsadm 1.31's text views, used as the oracle in the golden tests."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from lvsprobe.model import IPAddress


def endpoint(text: str) -> tuple[IPAddress, int]:
    """`198.18.1.11:80` or `[2001:2:0:1::11]:80`."""
    host, _, port = text.rpartition(":")
    return ipaddress.ip_address(host.strip("[]")), int(port)


def services_ln(path: Path) -> dict[tuple[str, IPAddress, int], dict[str, object]]:
    """`ipvsadm -Ln`: service -> scheduler, persistence seconds, real servers."""
    out: dict[tuple[str, IPAddress, int], dict[str, object]] = {}
    current: dict[str, object] | None = None
    for line in path.read_text().splitlines()[3:]:
        f = line.split()
        if f[0] == "->":
            addr, port = endpoint(f[1])
            dests = current["dests"]  # type: ignore[index]
            dests.append((addr, port, f[2], int(f[3]), int(f[4]), int(f[5])))  # type: ignore[attr-defined]
            continue
        addr, port = endpoint(f[1])
        persistent = int(f[f.index("persistent") + 1]) if "persistent" in f else None
        current = {"scheduler": f[2], "persistent_s": persistent, "dests": []}
        out[(f[0], addr, port)] = current
    return out


def stats_exact(path: Path) -> dict[tuple[str, str], tuple[int, ...]]:
    """`ipvsadm -Ln --exact --stats` (or `--rate`): (service, dest or '') -> five numbers."""
    out: dict[tuple[str, str], tuple[int, ...]] = {}
    service = ""
    for line in path.read_text().splitlines()[3:]:
        f = line.split()
        if f[0] == "->":
            out[(service, f[1])] = tuple(int(x) for x in f[2:7])
        else:
            service = f"{f[0]} {f[1]}"
            out[(service, "")] = tuple(int(x) for x in f[2:7])
    return out


def conns_lnc(path: Path) -> list[tuple[str, str, tuple[IPAddress, int], ...]]:
    """`ipvsadm -Lnc`: (proto, state, source, virtual, destination) per row."""
    rows = []
    for line in path.read_text().splitlines()[2:]:
        f = line.split()
        rows.append((f[0], f[2], endpoint(f[3]), endpoint(f[4]), endpoint(f[5])))
    return rows  # type: ignore[return-value]
