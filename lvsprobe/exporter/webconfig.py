"""--web.config.file in the Prometheus exporter-toolkit format: TLS, basic auth, headers.

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
The whole file is checked at start, and every problem is a ParseError naming the file and the
key (and the file a key names). Anything the toolkit knows that Python's ssl cannot do the same
way is refused, not ignored; so is a section given empty, which would silently serve plain
HTTP or no authentication.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lvsprobe.errors import ParseError
from lvsprobe.exporter.basicauth import BasicAuth, parse_basic_auth_users
from lvsprobe.exporter.reactor import SocketStream
from lvsprobe.exporter.webtls import TLSStream, build_tls_context
from lvsprobe.exporter.yamlfile import Section, describe, read_yaml

KEYS = ("tls_server_config", "http_server_config", "basic_auth_users")
UNSUPPORTED = {
    "rate_limit": "not supported by lvsprobe; --web.max-requests bounds concurrent scrapes",
}
# The toolkit's own list, private "to ensure consistency in the Prometheus ecosystem"; None
# allows any value. Keeping to it also keeps Content-Length and the like out of reach.
HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}


@dataclass(frozen=True)
class WebConfig:
    """What the HTTP server needs: an optional TLS context, users, extra headers."""

    tls: ssl.SSLContext | None = None
    auth: BasicAuth | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def stream(self, sock: socket.socket) -> SocketStream:
        """An accepted connection as the server reads and writes it: over TLS when set."""
        return TLSStream(sock, self.tls) if self.tls is not None else SocketStream(sock)


def read_web_config(path: Path, *, now: datetime | None = None) -> WebConfig:
    """Read and check the file; every problem is a ParseError naming the file and the key.

    `now` dates the server certificate (an expired one is logged as a warning).
    """
    src = str(path)
    data = read_yaml(path)
    if data is None:
        raise ParseError(
            src,
            None,
            None,
            "is empty: refused rather than serve plain HTTP without authentication; give "
            "tls_server_config or basic_auth_users, or drop --web.config.file",
        )
    if not isinstance(data, dict):
        raise ParseError(src, None, None, f"expected a mapping, got {describe(data)}")
    top = Section(src, "", data)
    top.check_keys(KEYS, UNSUPPORTED)
    tls_section = top.section("tls_server_config")
    users = top.section("basic_auth_users")
    http = top.section("http_server_config")
    headers = {} if http is None else parse_http_server_config(http)
    tls = None
    if tls_section is not None:
        tls = build_tls_context(tls_section, path.parent, now or datetime.now(UTC))
    auth = None if users is None else parse_basic_auth_users(users)
    return WebConfig(tls=tls, auth=auth, headers=headers)


def parse_http_server_config(http: Section) -> dict[str, str]:
    """The extra response headers; http2 is accepted (HTTP/1.1 is served either way)."""
    http.check_keys(("http2", "headers"), {})
    http.flag("http2", True)
    section = http.section("headers")
    if section is None:
        return {}
    headers: dict[str, str] = {}
    for name, value in section.data.items():
        if name not in HEADERS:
            raise section.error(
                name, f"this header cannot be configured; the toolkit allows {', '.join(HEADERS)}"
            )
        allowed = HEADERS[name]
        if not isinstance(value, str):
            raise section.error(name, f"expected a string (quote it), got {describe(value)}")
        if allowed is not None and value not in allowed:
            raise section.error(name, f"{value!r} is not one of {', '.join(allowed)}")
        for position, char in enumerate(value):
            if not (char == "\t" or " " <= char <= "~"):
                raise section.error(
                    name,
                    f"{char!r} at position {position}: a header value is printable ASCII "
                    "(a control character would be written into every response)",
                )
        headers[name] = value
    return headers
