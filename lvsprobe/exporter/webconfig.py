"""--web.config.file in the Prometheus exporter-toolkit format: TLS and basic auth.

```yaml
tls_server_config:
  cert_file: server.crt          # paths are relative to this file
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert   # or NoClientCert, VerifyClientCertIfGiven
  client_ca_file: clients-ca.crt
  min_version: TLS12
http_server_config:
  headers: {X-Frame-Options: deny}
basic_auth_users:
  prometheus: $2y$10$...          # bcrypt (htpasswd -nBC 10 "" | tr -d ':\\n')
```
Anything the toolkit knows that Python's ssl cannot do the same way is refused, not ignored.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsprobe.errors import ParseError
from lvsprobe.exporter.yamlfile import read_yaml

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
}


@functools.cache
def _dummy_hash() -> bytes:
    """A hash checked for unknown users, so they cost as much as known ones (made on first use)."""
    import bcrypt

    return bcrypt.hashpw(b"lvsprobe-no-such-user", bcrypt.gensalt(rounds=10))


@dataclass
class BasicAuth:
    """Users and bcrypt hashes; successful checks are cached (bcrypt costs ~50 ms each)."""

    users: dict[str, bytes]
    _ok: set[tuple[str, bytes, bytes]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check(self, header: str | None) -> bool:
        """True when an `Authorization: Basic …` header names a user with the right password."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, sep, password = (
                base64.b64decode(header[6:], validate=True).decode().partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep:
            return False
        hashed = self.users.get(user)
        digest = hashlib.sha256(password.encode()).digest()
        if hashed is not None:
            with self._lock:
                if (user, hashed, digest) in self._ok:
                    return True
        import bcrypt  # here: only a web config with users needs it

        ok = bcrypt.checkpw(password.encode(), hashed if hashed is not None else _dummy_hash())
        if ok and hashed is not None:
            with self._lock:
                self._ok.add((user, hashed, digest))
        return ok and hashed is not None


@dataclass(frozen=True)
class WebConfig:
    """What the HTTP server needs: an optional TLS context, users, extra headers."""

    tls: ssl.SSLContext | None = None
    auth: BasicAuth | None = None
    headers: dict[str, str] = field(default_factory=dict)


def read_web_config(path: Path) -> WebConfig:
    """Read and check the file; every problem is a ParseError naming the file and the key."""
    src = str(path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ParseError(src, None, None, "expected a mapping")
    _only(src, "", data, {"tls_server_config", "http_server_config", "basic_auth_users"})
    base = path.parent
    tls = _tls(src, base, data.get("tls_server_config"))
    auth = _auth(src, data.get("basic_auth_users"))
    http = data.get("http_server_config") or {}
    _mapping(src, "http_server_config", http)
    _only(src, "http_server_config.", http, {"http2", "headers"})
    headers = http.get("headers") or {}
    _mapping(src, "http_server_config.headers", headers)
    return WebConfig(tls=tls, auth=auth, headers={str(k): str(v) for k, v in headers.items()})


def _mapping(src: str, key: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ParseError(src, None, key, "expected a mapping")


def _only(src: str, prefix: str, data: dict[str, Any], known: set[str]) -> None:
    for key in data:
        if key not in known:
            raise ParseError(src, None, f"{prefix}{key}", "unknown or unsupported key")


def _tls(src: str, base: Path, conf: Any) -> ssl.SSLContext | None:
    if conf is None:
        return None
    _mapping(src, "tls_server_config", conf)
    _only(src, "tls_server_config.", conf, _TLS_KEYS)
    if not conf.get("cert_file") or not conf.get("key_file"):
        raise ParseError(src, None, "tls_server_config", "cert_file and key_file are both required")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(src, conf, "min_version", ssl.TLSVersion.TLSv1_2)
    ctx.maximum_version = _version(src, conf, "max_version", ssl.TLSVersion.MAXIMUM_SUPPORTED)
    try:
        ctx.load_cert_chain(base / conf["cert_file"], base / conf["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise ParseError(src, None, "tls_server_config.cert_file", f"cannot load: {exc}") from exc
    auth_type = conf.get("client_auth_type", "NoClientCert")
    if auth_type not in _CLIENT_AUTH:
        raise ParseError(
            src,
            None,
            "tls_server_config.client_auth_type",
            f"{auth_type!r} not supported; use one of {', '.join(_CLIENT_AUTH)}",
        )
    ctx.verify_mode = _CLIENT_AUTH[auth_type]
    ca = conf.get("client_ca_file")
    if ctx.verify_mode != ssl.CERT_NONE and not ca:
        raise ParseError(src, None, "tls_server_config.client_ca_file", f"required by {auth_type}")
    if ca:
        try:
            ctx.load_verify_locations(base / ca)
        except (OSError, ssl.SSLError) as exc:
            raise ParseError(
                src, None, "tls_server_config.client_ca_file", f"cannot load: {exc}"
            ) from exc
    return ctx


def _version(src: str, conf: dict[str, Any], key: str, default: ssl.TLSVersion) -> ssl.TLSVersion:
    value = conf.get(key)
    if value is None:
        return default
    if value not in _TLS_VERSIONS:
        raise ParseError(
            src, None, f"tls_server_config.{key}", f"use one of {', '.join(_TLS_VERSIONS)}"
        )
    return _TLS_VERSIONS[value]


def _auth(src: str, users: Any) -> BasicAuth | None:
    if not users:
        return None
    _mapping(src, "basic_auth_users", users)
    out: dict[str, bytes] = {}
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ParseError(
                src, None, f"basic_auth_users.{user}", "expected a bcrypt hash ($2y$...)"
            )
        out[str(user)] = hashed.encode()
    return BasicAuth(out)
