"""Service names for joins (--names FILE): a YAML mapping of service to name.

```yaml
198.18.1.100:80/tcp: web
"[2001:2:0:1::100]:80/tcp": web-v6
fwmark:5: mail
```

The exporter re-reads the file when it changes (`NamesFile`), so a ConfigMap update or
`lvsprobe names from-kubernetes -o FILE` takes effect without a restart.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lvsprobe.errors import ParseError
from lvsprobe.exporter.yamlfile import read_yaml
from lvsprobe.model import IPAddress, Protocol, ServiceKey

NameKey = tuple[str, IPAddress | None, int, int]  # protocol, address, port, fwmark
FileIdentity = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns

log = logging.getLogger("lvsprobe.exporter")


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


def format_name_key(key: NameKey) -> str:
    """The names-file spelling of a key (what parse_name_key reads back)."""
    proto, address, port, mark = key
    if mark:
        return f"fwmark:{mark}"
    assert address is not None
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{host}:{port}/{proto}"


def _key_order(key: NameKey) -> tuple[int, int, int, int, str]:
    proto, address, port, mark = key
    if address is None:
        return (mark, 0, 0, 0, proto)
    return (mark, address.version, int(address), port, proto)


def encode_names(names: Mapping[NameKey, str], header: str = "") -> str:
    """A names file for `names` (sorted: fwmarks last, IPv4 before IPv6), `header` as comments."""
    import yaml

    doc = {format_name_key(key): names[key] for key in sorted(names, key=_key_order)}
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    # escaped non-ASCII: PyYAML writes U+0085, U+2028, U+2029 raw, and YAML reads them as breaks
    body = yaml.safe_dump(doc, sort_keys=False, width=1 << 16) if doc else ""
    return comments + body


@dataclass(frozen=True, slots=True)
class NamesRead:
    """The names one scrape uses; `error` says why they are not the file's current content."""

    names: ServiceNames
    error: str | None


class NamesFile:
    """The --names file, re-read when it changes, without a restart.

    A ConfigMap update swaps the `..data` symlink the mounted file resolves through, and an
    editor or `os.replace` gives a new inode or mtime: the identity of the file behind the path
    (device, inode, size, mtime) tells. A new file that does not parse keeps the names read
    before (a typo must not drop every name from the dashboards) and is logged once.
    Thread-safe; `refresh()` stats the file once (the scraper calls it once per scrape), and a
    scrape that comes while another re-reads the file uses the names of before: it never waits
    (YAML of 30,000 names takes seconds to load).
    """

    def __init__(self, path: Path, logger: logging.Logger = log) -> None:
        """Read `path` now: ParseError when it cannot be read (a bad start is an error)."""
        self.path = path
        self._log = logger
        self._lock = threading.Lock()
        try:
            self._seen: FileIdentity | None = _identity(path)
        except OSError as exc:
            raise ParseError(str(path), None, None, f"cannot read: {exc.strerror}") from exc
        self._current = NamesRead(read_names(path), None)  # replaced whole: read without lock

    def refresh(self) -> NamesRead:
        """The names to use now, re-reading the file if it changed since the last call."""
        if not self._lock.acquire(blocking=False):
            return self._current
        try:
            try:
                identity = _identity(self.path)
            except OSError as exc:
                self._fail(None, f"{self.path}: cannot read: {exc.strerror}")
            else:
                if identity != self._seen:
                    self._reload(identity)
            return self._current
        finally:
            self._lock.release()

    def _reload(self, identity: FileIdentity) -> None:
        try:
            names = read_names(self.path)
        except ParseError as exc:
            self._fail(identity, str(exc))
            return
        self._seen, self._current = identity, NamesRead(names, None)
        self._log.info("names file reloaded: path=%s names=%d", self.path, len(names.by_key))

    def _fail(self, identity: FileIdentity | None, error: str) -> None:
        self._seen = identity  # None: stat failed, so the file is read again once it is back
        if error != self._current.error:
            self._current = NamesRead(self._current.names, error)
            self._log.warning(
                "names file not reloaded, keeping the %d names read before: %s",
                len(self._current.names.by_key),
                error,
            )


def _identity(path: Path) -> FileIdentity:
    st = os.stat(path)  # follows symlinks: a ConfigMap's ..data swap changes the inode
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
