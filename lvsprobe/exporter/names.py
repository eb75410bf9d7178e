"""Service names for joins (--names FILE): a YAML mapping of service to name.

```yaml
198.18.1.100:80/tcp: web
"[2001:2:0:1::100]:80/tcp": web-v6
fwmark:5: mail
```
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from lvsprobe.errors import ParseError
from lvsprobe.exporter.yamlfile import read_yaml
from lvsprobe.model import IPAddress, Protocol, ServiceKey

NameKey = tuple[str, IPAddress | None, int, int]  # protocol, address, port, fwmark


@dataclass(frozen=True, slots=True)
class ServiceNames:
    """Names by (protocol, address, port, fwmark); protocol is lower-case, "" for fwmark."""

    by_key: dict[NameKey, str]

    def lookup(self, key: ServiceKey) -> str | None:
        if key.fwmark:
            return self.by_key.get(("", None, 0, key.fwmark))
        proto = key.protocol.name.lower() if key.protocol is not None else ""
        return self.by_key.get((proto, key.address, key.port, 0))


def read_names(path: Path) -> ServiceNames:
    """Read a names file; every problem is a ParseError naming the file and the entry."""
    source = str(path)
    data = read_yaml(path)
    if data is None:
        return ServiceNames({})
    if not isinstance(data, dict):
        raise ParseError(source, None, None, "expected a mapping of service to name")
    out: dict[NameKey, str] = {}
    for raw_key, name in data.items():
        if not isinstance(name, str) or not name:
            raise ParseError(source, None, str(raw_key), "the name must be a non-empty string")
        try:
            out[parse_name_key(str(raw_key))] = name
        except ValueError as exc:
            raise ParseError(source, None, str(raw_key), str(exc)) from None
    return ServiceNames(out)


def parse_name_key(text: str) -> NameKey:
    """`ADDRESS:PORT/PROTOCOL` (IPv6 in brackets) or `fwmark:N`."""
    if text.lower().startswith("fwmark:"):
        try:
            mark = int(text[7:], 0)
        except ValueError:
            raise ValueError("fwmark must be a number") from None
        if not 0 < mark <= 0xFFFFFFFF:
            raise ValueError("fwmark must be 1..4294967295")
        return ("", None, 0, mark)
    endpoint, sep, proto = text.rpartition("/")
    if not sep or proto.upper() not in Protocol.__members__ or proto.upper() == "IP":
        raise ValueError("expected ADDRESS:PORT/PROTOCOL (tcp, udp, sctp) or fwmark:N")
    host, sep, port_text = endpoint.rpartition(":")
    if not sep:
        raise ValueError("missing :PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
        port = int(port_text)
    except ValueError as exc:
        raise ValueError(f"bad address or port: {exc}") from None
    if not 0 <= port <= 65535:
        raise ValueError("port must be 0..65535")
    return (proto.lower(), address, port, 0)
