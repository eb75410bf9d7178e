"""`tls_server_config` of the web config: an ssl.SSLContext, checked completely at start.

Whatever would make every handshake fail (a version range that is empty, a cipher list with
nothing for TLS 1.2, a key that does not fit its certificate) is refused here, naming the
key; an expired certificate is served (clients may be told to accept it) but logged loudly.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from lvsprobe.errors import ParseError
from lvsprobe.exporter.certdates import parse_certificate_validity, pem_certificates
from lvsprobe.exporter.reactor import READ, WRITE, SocketStream, T, Wait
from lvsprobe.exporter.yamlfile import Section

log = logging.getLogger("lvsprobe.exporter")

CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go asks for a certificate without verifying it; OpenSSL through Python's ssl cannot.
_CLIENT_AUTH_UNVERIFIED = ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert")
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# The toolkit takes the names of Go's tls.CipherSuites(); OpenSSL names the same suites so.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
# Accepted and ignored, as Go does: neither Go nor OpenSSL's cipher list configures TLS 1.3.
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
)
UNSUPPORTED = {
    "cert": "inline PEM is not supported by lvsprobe: put it in a file and use cert_file",
    "key": "inline PEM is not supported by lvsprobe: put it in a file and use key_file",
    "client_ca": "inline PEM is not supported by lvsprobe: put it in a file, use client_ca_file",
    "curve_preferences": "not supported by lvsprobe (Python's ssl cannot set a preference "
    "list); remove it to use OpenSSL's defaults",
    "client_allowed_sans": "not supported by lvsprobe: give the scrapers certificates from "
    "their own CA (client_ca_file) instead",
}
# Read at most this much of a PEM file: certificates are small, /dev/zero is not.
_MAX_PEM_BYTES = 1 << 20


class _EncryptedKey(Exception):
    """Raised by the password callback: a key that needs a passphrase cannot be served."""


def build_tls_context(tls: Section, base: Path, now: datetime) -> ssl.SSLContext:
    """The server context `tls` describes; files are relative to `base`, `now` dates the cert."""
    tls.check_keys(KEYS, UNSUPPORTED)
    if not tls.data:
        raise tls.error(
            None,
            "is empty: refused rather than serve plain HTTP; give cert_file and key_file, "
            "or remove tls_server_config to serve plain HTTP",
        )
    cert_path, key_path = tls.path("cert_file", base), tls.path("key_file", base)
    if cert_path is None or key_path is None:
        raise tls.error(None, "cert_file and key_file are both required")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _versions(tls, ctx)
    _cipher_suites(tls, ctx)
    if tls.flag("prefer_server_cipher_suites", True):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    certificates = _load_cert_chain(tls, ctx, cert_path, key_path)
    _client_auth(tls, ctx, base)
    for warning in validity_warnings(certificates, str(cert_path), now):
        log.warning("%s: %s: %s", tls.source, tls.where("cert_file"), warning)
    return ctx


def validity_warnings(certificates: list[bytes], source: str, now: datetime) -> list[str]:
    """What is wrong with the dates of the certificates of `source` (DER, leaf first) at `now`."""
    out = []
    for number, der in enumerate(certificates, 1):
        which = f"{source}: certificate {number} of {len(certificates)}"
        if number == 1:
            which += " (the server's own)"
        try:
            validity = parse_certificate_validity(der, which)
        except ParseError as exc:
            out.append(f"cannot read its validity dates: {exc}")
            continue
        if validity.not_after < now:
            out.append(f"{which} expired on {validity.not_after:%Y-%m-%d %H:%M:%S} UTC")
        elif validity.not_before > now:
            out.append(f"{which} is not valid until {validity.not_before:%Y-%m-%d %H:%M:%S} UTC")
    return out


def _read_pem(tls: Section, key: str, path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(_MAX_PEM_BYTES)
    except OSError as exc:
        raise tls.error(key, f"cannot read {path}: {exc.strerror or exc}") from exc


def _versions(tls: Section, ctx: ssl.SSLContext) -> None:
    lowest = _version(tls, "min_version", "TLS12")  # the toolkit's defaults
    highest = _version(tls, "max_version", "TLS13")
    if TLS_VERSIONS[lowest] > TLS_VERSIONS[highest]:
        raise tls.error(
            "min_version",
            f"{lowest} is above max_version {highest} (either may be the default): "
            "every handshake would fail",
        )
    ctx.minimum_version, ctx.maximum_version = TLS_VERSIONS[lowest], TLS_VERSIONS[highest]


def _version(tls: Section, key: str, default: str) -> str:
    """The name, one of TLS_VERSIONS, at `key`."""
    name = tls.text(key) or default
    if name not in TLS_VERSIONS:
        raise tls.error(key, f"unknown TLS version {name!r}; use one of {', '.join(TLS_VERSIONS)}")
    return name


def _cipher_suites(tls: Section, ctx: ssl.SSLContext) -> None:
    names = tls.texts("cipher_suites")
    if not names:
        return  # absent or [] keeps the defaults, as in the toolkit
    for name in names:
        if name not in CIPHER_SUITES and name not in TLS13_SUITES:
            raise tls.error(
                "cipher_suites",
                f"unknown cipher suite {name!r}; use Go's names, one of "
                f"{', '.join(CIPHER_SUITES)} (TLS 1.3 suites are not configurable)",
            )
    chosen = [name for name in names if name in CIPHER_SUITES]
    if not chosen:
        if ctx.minimum_version < ssl.TLSVersion.TLSv1_3:
            raise tls.error(
                "cipher_suites",
                "lists only TLS 1.3 suites, which are not configurable: TLS 1.2 "
                "handshakes would all fail; add TLS 1.2 suites or set min_version: TLS13",
            )
        return
    try:
        ctx.set_ciphers(":".join(CIPHER_SUITES[name] for name in chosen))
    except ssl.SSLError as exc:
        raise tls.error("cipher_suites", f"refused by OpenSSL: {exc.reason or exc}") from exc
    available = {cipher["name"] for cipher in ctx.get_ciphers()}
    missing = [name for name in chosen if CIPHER_SUITES[name] not in available]
    if missing:
        raise tls.error(
            "cipher_suites", f"not available in {ssl.OPENSSL_VERSION}: {', '.join(missing)}"
        )


def _refuse_password() -> bytes:
    raise _EncryptedKey


def _load_cert_chain(
    tls: Section, ctx: ssl.SSLContext, cert_path: Path, key_path: Path
) -> list[bytes]:
    """Load the pair, blaming the right key for each failure; the certificates as DER."""
    pem = _read_pem(tls, "cert_file", cert_path)
    try:
        certificates = pem_certificates(pem, str(cert_path))
    except ParseError as exc:
        raise tls.error("cert_file", f"not a usable certificate: {exc}") from exc
    if not certificates:
        raise tls.error("cert_file", f"no PEM certificate (BEGIN CERTIFICATE) in {cert_path}")
    try:
        ssl.create_default_context().load_verify_locations(cadata=b"".join(certificates))
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise tls.error("cert_file", f"not a usable certificate in {cert_path}: {reason}") from exc
    if b"PRIVATE KEY-----" not in _read_pem(tls, "key_file", key_path):
        raise tls.error("key_file", f"no PEM private key (BEGIN PRIVATE KEY) in {key_path}")
    try:
        ctx.load_cert_chain(cert_path, key_path, password=_refuse_password)
    except _EncryptedKey:
        raise tls.error(
            "key_file", f"{key_path} is encrypted; lvsprobe needs it without a passphrase"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            reason = f"{key_path} is not the key of the certificate in {cert_path}"
        else:
            reason = f"cannot load {key_path}: {exc.reason or exc}"
        raise tls.error("key_file", reason) from exc
    except OSError as exc:  # a file removed since it was read
        raise tls.error("cert_file", f"cannot load {cert_path}: {exc.strerror or exc}") from exc
    return certificates


def _client_auth(tls: Section, ctx: ssl.SSLContext, base: Path) -> None:
    auth_type = tls.text("client_auth_type") or "NoClientCert"
    if auth_type in _CLIENT_AUTH_UNVERIFIED:
        raise tls.error(
            "client_auth_type",
            f"{auth_type} is not supported by lvsprobe (Python's ssl verifies every "
            "certificate it asks for); use VerifyClientCertIfGiven or "
            "RequireAndVerifyClientCert with client_ca_file",
        )
    if auth_type not in CLIENT_AUTH:
        raise tls.error(
            "client_auth_type", f"unknown value {auth_type!r}; use one of {', '.join(CLIENT_AUTH)}"
        )
    ctx.verify_mode = CLIENT_AUTH[auth_type]
    ca_path = tls.path("client_ca_file", base)
    if ca_path is None:
        if ctx.verify_mode != ssl.CERT_NONE:
            raise tls.error("client_ca_file", f"required by client_auth_type: {auth_type}")
        return
    if ctx.verify_mode == ssl.CERT_NONE:
        # As the toolkit: a CA that is never asked for is a client_auth_type forgotten.
        raise tls.error(
            "client_ca_file",
            "given, but client_auth_type is NoClientCert: set client_auth_type to "
            "RequireAndVerifyClientCert (or VerifyClientCertIfGiven)",
        )
    _read_pem(tls, "client_ca_file", ca_path)
    try:
        ctx.load_verify_locations(ca_path)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise tls.error("client_ca_file", f"no usable certificate in {ca_path}: {reason}") from exc


class TLSStream(SocketStream):
    """A connection served over TLS: the handshake first, then records both ways. A read
    may need the socket writable (and a write readable) while OpenSSL renegotiates keys."""

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        super().__init__(sock)
        self.tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.sock = self.tls

    async def handshake(self, deadline: float | None) -> None:
        while True:
            try:
                self.tls.do_handshake()  # ssl.SSLError (an OSError): the client's fault
                return
            except ssl.SSLWantReadError:
                await Wait(self.sock, READ, deadline=deadline)
            except ssl.SSLWantWriteError:
                await Wait(self.sock, WRITE, deadline=deadline)

    def _attempt(self, call: Callable[[Any], T], arg: Any, blocked_on: int) -> T | None:
        """As a plain socket's, but a TLS record may need the other direction first (keys
        renegotiated), whichever call it is."""
        try:
            result = call(arg)
        except ssl.SSLWantReadError:
            self.want = READ
            return None
        except ssl.SSLWantWriteError:
            self.want = WRITE
            return None
        self.want = READ
        return result
