"""The validity dates of X.509 certificates in a PEM file, read from their DER.

Python's ssl has no public way to read a certificate it has not received from a peer, and
`cryptography` would add a large compiled dependency to a sidecar that needs two dates. The
walk below reads only the fixed prefix of RFC 5280's TBSCertificate (version, serial,
signature, issuer, validity); OpenSSL has already accepted the certificate when it runs.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from lvsprobe.errors import ParseError

# OpenSSL's PEM reader takes all three labels for a certificate in a cert_file.
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN ((?:TRUSTED |X509 )?CERTIFICATE)-----\r?\n(.*?)-----END \1-----", re.DOTALL
)
_SEQUENCE = 0x30
_INTEGER = 0x02
_EXPLICIT_0 = 0xA0  # [0] EXPLICIT Version
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18
_TIME_DIGITS = {_UTC_TIME: 12, _GENERALIZED_TIME: 14}  # RFC 5280: seconds, no fraction, Z


@dataclass(frozen=True)
class Validity:
    """When a certificate may be used (RFC 5280 4.1.2.5), both in UTC."""

    not_before: datetime
    not_after: datetime


def pem_certificates(pem: bytes, source: str) -> list[bytes]:
    """The DER of each certificate block of a PEM file, in order."""
    out = []
    for match in _PEM_CERTIFICATE.finditer(pem):
        try:
            out.append(base64.b64decode(b"".join(match.group(2).split()), validate=True))
        except binascii.Error as exc:
            raise ParseError(source, None, None, f"certificate {len(out) + 1}: {exc}") from exc
    return out


def parse_certificate_validity(der: bytes, source: str) -> Validity:
    """notBefore and notAfter of one DER certificate; a ParseError when it is not one."""
    _, start, end = _expect(der, 0, len(der), _SEQUENCE, "Certificate", source)
    _, pos, tbs_end = _expect(der, start, end, _SEQUENCE, "TBSCertificate", source)
    tag, _, after = _element(der, pos, tbs_end, source)
    if tag == _EXPLICIT_0:
        pos = after  # version, absent in v1 certificates
    for tag, what in ((_INTEGER, "serial"), (_SEQUENCE, "signature"), (_SEQUENCE, "issuer")):
        pos = _expect(der, pos, tbs_end, tag, what, source)[2]
    _, pos, validity_end = _expect(der, pos, tbs_end, _SEQUENCE, "validity", source)
    not_before, pos = _time(der, pos, validity_end, "notBefore", source)
    not_after, _ = _time(der, pos, validity_end, "notAfter", source)
    return Validity(not_before, not_after)


def _element(der: bytes, pos: int, end: int, source: str) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at `pos`, within `end`."""
    if pos + 2 > end:
        raise ParseError(source, None, None, f"DER truncated at byte {pos}")
    tag, first = der[pos], der[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ParseError(source, None, None, f"unexpected high tag number at byte {pos}")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        # 0x80 is BER's indefinite length, never DER; 4 length bytes are 4 GiB
        if not 1 <= count <= 4 or pos + count > end:
            raise ParseError(source, None, None, f"bad DER length at byte {pos - 1}")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise ParseError(source, None, None, f"DER truncated at byte {pos}")
    return tag, pos, pos + length


def _expect(
    der: bytes, pos: int, end: int, tag: int, what: str, source: str
) -> tuple[int, int, int]:
    found = _element(der, pos, end, source)
    if found[0] != tag:
        raise ParseError(
            source,
            None,
            None,
            f"expected {what} (tag 0x{tag:02x}) at byte {pos}, got tag 0x{found[0]:02x}",
        )
    return found


def _time(der: bytes, pos: int, end: int, what: str, source: str) -> tuple[datetime, int]:
    """An RFC 5280 Time: UTCTime YYMMDDHHMMSSZ (years 1950-2049) or GeneralizedTime."""
    tag, start, stop = _element(der, pos, end, source)
    raw = der[start:stop]
    size = _TIME_DIGITS.get(tag)
    if size is None or not re.fullmatch(rb"[0-9]{%d}Z" % size, raw):
        raise ParseError(source, None, None, f"{what}: not an RFC 5280 time: {raw!r}")
    text = raw.decode()
    digits = text[:-1]
    if tag == _UTC_TIME:
        year = int(digits[:2])
        digits = str(year + (1900 if year >= 50 else 2000)) + digits[2:]
    month, day, hour, minute, second = (int(digits[i : i + 2]) for i in range(4, 14, 2))
    try:
        return datetime(int(digits[:4]), month, day, hour, minute, second, tzinfo=UTC), stop
    except ValueError as exc:
        raise ParseError(source, None, None, f"{what}: {text!r}: {exc}") from exc
