"""Validity dates read from a certificate's DER: built by hand for every form RFC 5280
allows, cross-checked with openssl, and never anything but a ParseError on hostile bytes."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.exporter.certdates import Validity, parse_certificate_validity, pem_certificates
from lvsprobe.exporter.webtls import validity_warnings

UTC_TIME, GENERALIZED_TIME = 0x17, 0x18


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(length)]) + length + content


def _cert(
    not_before: tuple[int, bytes] = (UTC_TIME, b"240101000000Z"),
    not_after: tuple[int, bytes] = (UTC_TIME, b"491231235959Z"),
    version: bool = True,
    issuer: bytes = b"",
) -> bytes:
    """A certificate's DER with what comes before the validity as RFC 5280 lays it out."""
    tbs = (
        (_tlv(0xA0, _tlv(0x02, b"\x02")) if version else b"")
        + _tlv(0x02, b"\x01\x02")  # serial
        + _tlv(0x30, _tlv(0x06, b"\x2a\x86\x48"))  # signature algorithm
        + _tlv(0x30, issuer)
        + _tlv(0x30, _tlv(*not_before) + _tlv(*not_after))
        + _tlv(0x30, b"")  # subject
    )
    return _tlv(0x30, _tlv(0x30, tbs) + _tlv(0x30, b"") + _tlv(0x03, b"\x00"))


def _dates(der: bytes) -> tuple[datetime, datetime]:
    validity = parse_certificate_validity(der, "test")
    return validity.not_before, validity.not_after


def test_forms_rfc5280_allows() -> None:
    expected = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert _dates(_cert()) == expected
    assert _dates(_cert(version=False)) == expected  # v1: no version field
    assert _dates(_cert(issuer=b"\x31" * 200)) == expected  # long-form length, one byte
    assert _dates(_cert(issuer=b"\x31" * 300)) == expected  # two bytes
    assert _dates(_cert() + b"aux") == expected  # TRUSTED CERTIFICATE appends aux data
    pivot = _cert((UTC_TIME, b"500101000000Z"), (GENERALIZED_TIME, b"99991231235959Z"))
    assert _dates(pivot) == (
        datetime(1950, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),  # "no well-defined expiration"
    )


@pytest.mark.parametrize(
    "time",
    [
        (UTC_TIME, b"240101000000.5Z"),
        (UTC_TIME, b"240101000000"),
        (UTC_TIME, b"2401010000Z"),
        (UTC_TIME, b"240101000000+0100"),
        (UTC_TIME, b"241301000000Z"),
        (UTC_TIME, b"240230000000Z"),
        (UTC_TIME, b"240101250000Z"),
        (UTC_TIME, "24010100000\u0660Z".encode()),
        (GENERALIZED_TIME, b"240101000000Z"),
        (GENERALIZED_TIME, b"20240101000000.000Z"),
        (0x04, b"240101000000Z"),
    ],
)
def test_times_rfc5280_forbids(time: tuple[int, bytes]) -> None:
    with pytest.raises(ParseError, match="notAfter"):
        parse_certificate_validity(_cert(not_after=time), "test")


@pytest.mark.parametrize(
    ("der", "reason"),
    [
        (b"", "truncated at byte 0"),
        (b"\x31\x00", "expected Certificate"),
        (_tlv(0x30, _tlv(0x02, b"\x01")), "expected TBSCertificate"),
        (_tlv(0x30, _tlv(0x30, _tlv(0x30, b""))), "expected serial"),
        (_tlv(0x30, _tlv(0x30, _tlv(0x02, b"\x01"))), "truncated"),
        (b"\x30\x80" + _cert()[2:], "bad DER length"),  # BER's indefinite length
        (b"\x30\x85\x00\x00\x00\x00\x10", "bad DER length"),
        (b"\x30\x84\xff\xff\xff\xff", "truncated"),
        (b"\x3f\x01\x00", "high tag number"),
    ],
)
def test_structures_that_are_not_certificates(der: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_certificate_validity(der, "test")


def test_every_truncation_is_a_parse_error() -> None:
    der = _cert(issuer=b"\x31" * 200)
    for size in range(len(der)):
        with pytest.raises(ParseError):
            parse_certificate_validity(der[:size], "test")


@settings(deadline=None)  # no wall-clock limits in tests
@given(st.binary(max_size=200) | st.tuples(st.integers(0, 80), st.integers(0, 255)))
def test_hostile_bytes_raise_only_parse_errors(case: bytes | tuple[int, int]) -> None:
    if isinstance(case, tuple):  # one byte of a good certificate changed
        der = bytearray(_cert())
        der[case[0] % len(der)] = case[1]
        case = bytes(der)
    try:
        assert isinstance(parse_certificate_validity(case, "test"), Validity)
    except ParseError as exc:
        assert str(exc).startswith("test: ")


def test_pem_blocks_in_order() -> None:
    one, two = _cert(), _cert(version=False)
    pem = (
        ssl.DER_cert_to_PEM_cert(one).replace("\n", "\r\n")
        + "junk between blocks\n"
        + ssl.DER_cert_to_PEM_cert(two).replace("CERTIFICATE", "TRUSTED CERTIFICATE")
        + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    ).encode()
    assert pem_certificates(pem, "x.pem") == [one, two]
    assert pem_certificates(b"no pem here", "x.pem") == []
    bad = b"-----BEGIN CERTIFICATE-----\nA*AA\n-----END CERTIFICATE-----\n"
    with pytest.raises(ParseError, match=r"x\.pem: certificate 1"):
        pem_certificates(bad, "x.pem")


def test_validity_warnings() -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)
    good, expired = _cert(), _cert(not_after=(UTC_TIME, b"300531235959Z"))
    future = _cert(not_before=(UTC_TIME, b"300601000001Z"))
    assert validity_warnings([good, good], "s.crt", now) == []
    assert validity_warnings([good, expired], "s.crt", now) == [
        "s.crt: certificate 2 of 2 expired on 2030-05-31 23:59:59 UTC"
    ]
    assert validity_warnings([future], "s.crt", now) == [
        "s.crt: certificate 1 of 1 (the server's own) is not valid until 2030-06-01 00:00:01 UTC"
    ]
    (unreadable,) = validity_warnings([b"\x30\x00"], "s.crt", now)
    assert unreadable.startswith("cannot read its validity dates: s.crt: certificate 1 of 1")


def test_dates_agree_with_openssl(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl missing: make test installs it")

    def openssl(*args: str) -> str:
        return subprocess.run(
            ["openssl", *args], cwd=tmp_path, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "k", "-out", "csr", "-subj", "/CN=t")  # fmt: skip
    now = datetime.now(UTC)
    # -1: expired at once; 40000 days: past 2049, so GeneralizedTime
    for days in ("-1", "2", "40000"):
        cert = tmp_path / f"{days}.crt"
        openssl("x509", "-req", "-in", "csr", "-signkey", "k", "-days", days, "-out", cert.name)
        out = openssl("x509", "-noout", "-startdate", "-enddate", "-in", cert.name)
        dates = dict(line.split("=", 1) for line in out.splitlines())
        validity = parse_certificate_validity(pem_certificates(cert.read_bytes(), "t")[0], "t")
        assert validity.not_before.timestamp() == ssl.cert_time_to_seconds(dates["notBefore"])
        assert validity.not_after.timestamp() == ssl.cert_time_to_seconds(dates["notAfter"])
        assert abs(validity.not_after - now - timedelta(days=int(days))) < timedelta(hours=1)
