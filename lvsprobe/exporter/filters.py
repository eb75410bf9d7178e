"""Cardinality controls: which virtual services are exported (--collector.services.include /
--collector.services.exclude).

A match is one of: `fwmark:N`, `:PORT`, `ADDRESS`, `CIDR`, `ADDRESS:PORT`, `CIDR:PORT`, with
IPv6 in brackets when a port follows (`[2001:db8::/32]:443`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from lvsprobe.model import IPAddress, ServiceKey

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ServiceMatch:
    """One include/exclude pattern; fields left None match anything."""

    network: Network | None = None
    port: int | None = None
    fwmark: int | None = None

    def matches(self, address: IPAddress | None, port: int, fwmark: int) -> bool:
        if self.fwmark is not None:
            return fwmark == self.fwmark
        if self.network is not None and (
            address is None
            or address.version != self.network.version
            or address not in self.network
        ):
            return False
        return self.port is None or (fwmark == 0 and port == self.port)


def parse_service_match(text: str) -> ServiceMatch:
    """Read one pattern; ValueError names what is wrong with it."""
    text = text.strip()
    if not text:
        raise ValueError("empty pattern")
    if text.lower().startswith("fwmark:"):
        mark = _int(text[7:], "fwmark", 1, 0xFFFFFFFF)
        return ServiceMatch(fwmark=mark)
    if text.startswith(":"):
        return ServiceMatch(port=_int(text[1:], "port", 0, 65535))
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port = _int(rest[1:], "port", 0, 65535)
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _int(port_text, "port", 0, 65535)
    try:
        network = ipaddress.ip_network(host, strict=False)
    except ValueError as exc:
        raise ValueError(f"{text!r}: not an address or CIDR ({exc})") from exc
    return ServiceMatch(network=network, port=port)


def _int(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is out of range {low}..{high}")
    return value


@dataclass(frozen=True, slots=True)
class ServiceFilter:
    """Include (any of, when given) then exclude (any of)."""

    include: tuple[ServiceMatch, ...] = ()
    exclude: tuple[ServiceMatch, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude)

    def allows(self, address: IPAddress | None, port: int, fwmark: int) -> bool:
        if self.include and not any(m.matches(address, port, fwmark) for m in self.include):
            return False
        return not self.exclude or not any(m.matches(address, port, fwmark) for m in self.exclude)

    def allows_key(self, key: ServiceKey) -> bool:
        return self.allows(key.address, key.port, key.fwmark)
