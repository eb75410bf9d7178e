"""--web.config.file: good configs build what they say, every hostile one is a ParseError
naming the file and the key (through the CLI: one line, exit 1), random YAML never escapes
the LvsprobeError family."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import ssl
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import LvsprobeError, ParseError
from lvsprobe.exporter.certdates import parse_certificate_validity, pem_certificates
from lvsprobe.exporter.webconfig import WebConfig, read_web_config

ROOT = Path(__file__).resolve().parents[2]
NAT_PROC = ROOT / "tests/fixtures/kernel-6.1/nat/proc"
HASH = "$2b$04$" + "." * 53  # a hash bcrypt accepts, of no known password
PLACEHOLDER = "$2y$10$REPLACE.WITH.A.REAL.BCRYPT.HASH.OF.THE.PASSWORD.abcdefghijk"
TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"


def _openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a server pair (EC P-256: quick to make), plus broken variants, by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl missing: make test installs it")
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(d, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=lvsprobe test CA")  # fmt: skip
    _openssl(d, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=s")
    _openssl(d, "req", *ec, "-keyout", "other.key", "-out", "other.csr", "-subj", "/CN=o")
    for name, days in (("server.crt", "2"), ("expired.crt", "-1")):
        _openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", name, "-days", days)  # fmt: skip
    _openssl(d, "pkey", "-in", "server.key", "-aes256", "-passout", "pass:x", "-out", "enc.key")
    (d / "garbage.crt").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (d / "adir").mkdir()
    return d


def _write(pki: Path, body: str, name: str = "web.yml") -> Path:
    path = pki / name
    path.write_text(body)
    return path


def _read(pki: Path, body: str, **kw: datetime) -> WebConfig:
    return read_web_config(_write(pki, body), **kw)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """A TLS handshake in memory (no sockets); the client's end when it completes."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_end = client.wrap_bio(c_in, c_out, server_hostname="s")
    server_end = server.wrap_bio(s_in, s_out, server_side=True)
    done = {client_end: False, server_end: False}
    for _ in range(20):  # bounded: a handshake is a few round trips
        for end in done:
            try:
                end.do_handshake()
                done[end] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client_end
    raise AssertionError("handshake did not complete")


def _client(pki: Path, *ciphers: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.check_hostname = False
    if ciphers:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(":".join(ciphers))
    return ctx


def test_a_full_config_builds_what_it_says(pki: Path) -> None:
    web = _read(
        pki,
        TLS + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n"
        "  min_version: TLS12\n  max_version: TLS13\n  prefer_server_cipher_suites: false\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
        "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: sameorigin\n"
        "    Content-Security-Policy: \"default-src 'none'; frame-ancestors 'none'\"\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n  ops1: {HASH}\n",
    )
    assert web.tls is not None and web.auth is not None
    assert web.tls.verify_mode == ssl.CERT_OPTIONAL
    assert (web.tls.minimum_version, web.tls.maximum_version) == (
        ssl.TLSVersion.TLSv1_2,
        ssl.TLSVersion.TLSv1_3,
    )
    assert not web.tls.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert web.headers == {
        "X-Frame-Options": "sameorigin",
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    }
    assert set(web.auth.users) == {"prometheus", "ops1"}
    # The Go names map onto OpenSSL's: a TLS 1.2 client offering the suite gets it.
    end = _handshake(web.tls, _client(pki, "ECDHE-ECDSA-AES128-GCM-SHA256"))
    assert end.cipher()[:2] == ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2")
    with pytest.raises(ssl.SSLError):
        _handshake(web.tls, _client(pki, "ECDHE-ECDSA-AES256-GCM-SHA384"))
    assert _handshake(web.tls, _client(pki)).version() == "TLSv1.3"


def test_plain_configs_that_say_so(pki: Path) -> None:
    assert _read(pki, "http_server_config:\n  headers:\n") == WebConfig()
    assert _read(pki, "http_server_config:\n").tls is None
    assert _read(pki, TLS + "  cipher_suites: []\n").tls is not None


T, H, U = "tls_server_config", "http_server_config.headers", "basic_auth_users"
NO_FILE = "No such file or directory"


def _cert(value: str) -> str:
    return TLS.replace("server.crt", value)


def _key(value: str) -> str:
    return TLS.replace("server.key", value)


def _header(name: str, value: str) -> str:
    return f"http_server_config:\n  headers:\n    {name}: {value}\n"


def _user(name: str, hashed: str) -> str:
    return f"basic_auth_users:\n  {name}: {hashed}\n"


# (body, the key named, what is said about it); {pki} is the directory of the config
HOSTILE = [
    # wrong types anywhere: TypeError tracebacks before
    (_cert("5"), f"{T}.cert_file", "expected a string, got an integer 5"),
    (_cert("[a]"), f"{T}.cert_file", "expected a string, got a list"),
    (_key("{a: 1}"), f"{T}.key_file", "got a mapping"),
    (_key("true"), f"{T}.key_file", "got a boolean True"),
    (_key("''"), f"{T}.key_file", "is empty"),
    (TLS + "  min_version: [TLS12]\n", f"{T}.min_version", "expected a string"),
    (TLS + "  min_version: 1.2\n", f"{T}.min_version", "got a number 1.2"),
    (TLS + "  client_auth_type: [x]\n", f"{T}.client_auth_type", "got a list"),
    (TLS + "  cipher_suites: TLS_AES_128_GCM_SHA256\n", f"{T}.cipher_suites", "expected a list"),
    (TLS + "  cipher_suites: [1]\n", f"{T}.cipher_suites", "one is an integer 1"),
    (TLS + "  prefer_server_cipher_suites: 'y'\n", f"{T}.prefer_server_cipher_suites", "true"),
    ("tls_server_config: [a]\n", T, "expected a mapping, got a list"),
    ("http_server_config:\n  http2: 'no'\n", "http_server_config.http2", "expected true or"),
    ("http_server_config:\n  headers: [a]\n", H, "expected a mapping"),
    ("basic_auth_users: [a]\n", U, "expected a mapping"),
    # TLS versions, suites and client auth
    (
        TLS + "  min_version: TLS13\n  max_version: TLS12\n",
        f"{T}.min_version",
        "TLS13 is above max_version TLS12 (either may be the default): every handshake would fail",
    ),
    (TLS + "  max_version: TLS11\n", f"{T}.min_version", "TLS12 is above max_version TLS11"),
    (TLS + "  min_version: TLS1.2\n", f"{T}.min_version", "unknown TLS version 'TLS1.2'; use"),
    (TLS + "  max_version: SSL3\n", f"{T}.max_version", "unknown TLS version"),
    (
        TLS + "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
        f"{T}.cipher_suites",
        "unknown cipher suite 'TLS_RSA_WITH_RC4_128_SHA'",
    ),
    (TLS + "  cipher_suites: [ECDHE-RSA-AES128-SHA]\n", f"{T}.cipher_suites", "use Go's names"),
    (TLS + "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", f"{T}.cipher_suites", "only TLS 1.3"),
    (TLS + "  client_auth_type: RequireAnyClientCert\n", f"{T}.client_auth_type", "not supported"),
    (TLS + "  client_auth_type: RequestClientCert\n", f"{T}.client_auth_type", "not supported"),
    (TLS + "  client_auth_type: Always\n", f"{T}.client_auth_type", "unknown value 'Always'"),
    (
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n",
        f"{T}.client_ca_file",
        "required by client_auth_type",
    ),
    (TLS + "  client_ca_file: ca.crt\n", f"{T}.client_ca_file", "client_auth_type is NoClientCert"),
    # files: the key and the file it names (the key was named as if it were the file)
    ("tls_server_config:\n", T, "is empty: refused rather than serve plain HTTP"),
    ("tls_server_config: {}\n", T, "is empty"),
    ("tls_server_config:\n  min_version: TLS13\n", T, "cert_file and key_file are both required"),
    (_cert("nope.crt"), f"{T}.cert_file", f"cannot read {{pki}}/nope.crt: {NO_FILE}"),
    (_key("nope.key"), f"{T}.key_file", f"cannot read {{pki}}/nope.key: {NO_FILE}"),
    (_cert("adir"), f"{T}.cert_file", "cannot read {pki}/adir: Is a directory"),
    (_cert('"a\\0b"'), f"{T}.cert_file", "contains a NUL character"),
    (_cert("server.key"), f"{T}.cert_file", "no PEM certificate (BEGIN CERTIFICATE) in {pki}/"),
    (_cert("garbage.crt"), f"{T}.cert_file", "not a usable certificate in {pki}/garbage.crt"),
    (_key("server.crt"), f"{T}.key_file", "no PEM private key"),
    (
        _key("other.key"),
        f"{T}.key_file",
        "{pki}/other.key is not the key of the certificate in {pki}/server.crt",
    ),
    (_key("enc.key"), f"{T}.key_file", "{pki}/enc.key is encrypted"),
    (
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nope.crt\n",
        f"{T}.client_ca_file",
        "cannot read {pki}/nope.crt",
    ),
    (
        TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n",
        f"{T}.client_ca_file",
        "no usable certificate in {pki}/server.key",
    ),
    # headers: the toolkit's list, printable ASCII (a CRLF was written into responses)
    (
        _header("Content-Security-Policy", '"a\\r\\nSet-Cookie: x=1"'),
        f"{H}.Content-Security-Policy",
        "'\\r' at position 1: a header value is printable ASCII",
    ),
    (_header("Strict-Transport-Security", '"a\\nb"'), f"{H}.Strict-Transport-Security", "'\\n'"),
    (_header("X-XSS-Protection", '"0\\0"'), f"{H}.X-XSS-Protection", "'\\x00' at position 1"),
    (_header("X-XSS-Protection", '"\\x7f"'), f"{H}.X-XSS-Protection", "'\\x7f' at position 0"),
    (_header("Content-Security-Policy", "caf\u00e9"), f"{H}.Content-Security-Policy", "'\u00e9'"),
    (_header("X-XSS-Protection", "0"), f"{H}.X-XSS-Protection", "(quote it), got an integer 0"),
    (_header("X-Frame-Options", "allow"), f"{H}.X-Frame-Options", "'allow' is not one of deny"),
    (_header("Content-Length", "'0'"), f"{H}.Content-Length", "this header cannot be configured"),
    (_header('"Set-Cookie\\r\\nX"', "a"), f"{H}.'Set-Cookie\\r\\nX'", "cannot be"),
    (_header("1", "a"), f"{H}.1", "cannot be configured"),
    # users: a hash bcrypt refuses or never matches was a 401 per scrape, or a traceback
    ("basic_auth_users:\n", U, "is empty: refused rather than serve without authentication"),
    (
        _user("a", "$2b$10$keFmZsb14CCQg2eO0GAEO"),
        f"{U}.a",
        "expected 53 characters after $2b$10$, got 21; make one with: htpasswd -nBC 10",
    ),
    (
        _user("prometheus", PLACEHOLDER),
        f"{U}.prometheus",
        "(it is the example file's placeholder); make one with: htpasswd",
    ),
    (_user("a", "$apr1$x$y"), f"{U}.a", "an MD5 hash (htpasswd without -B)"),
    (_user("a", "'{SHA}abc='"), f"{U}.a", "not a bcrypt hash"),
    (_user("a", "s3cret"), f"{U}.a", "not a bcrypt hash"),
    (_user("a", HASH.replace("$04$", "$03$")), f"{U}.a", "cost 03 is outside bcrypt's 04..31"),
    (_user("a", HASH.replace("$04$", "$32$")), f"{U}.a", "cost 32"),
    (_user("a", HASH.replace("$04$", "$1x$")), f"{U}.a", "two-digit cost"),
    (_user("a", HASH[:-1] + "!"), f"{U}.a", "'!' at position 59"),
    (_user("a", HASH[:28] + "C" + HASH[29:]), f"{U}.a", "not a hash bcrypt can write"),
    (_user("a", HASH[:-1] + "k"), f"{U}.a", "not a hash bcrypt can write"),
    (_user("a", "5"), f"{U}.a", "expected a bcrypt hash, got an integer 5"),
    (_user("123", HASH), f"{U}.123", "a user name is a string (quote it)"),
    (_user("'a:b'", HASH), f"{U}.a:b", "can never log in"),
    # keys
    ("tlsserverconfig: {}\n", "tlsserverconfig", "unknown key; did you mean tls_server_config?"),
    ("x: 1\n", "x", "unknown key; known: tls_server_config"),
    ("rate_limit: {burst: 1}\n", "rate_limit", "not supported by lvsprobe"),
    (TLS + "  curve_preferences: [X25519]\n", f"{T}.curve_preferences", "not supported"),
    (TLS + "  client_allowed_sans: [a]\n", f"{T}.client_allowed_sans", "not supported"),
    (TLS + "  cert: x\n", f"{T}.cert", "inline PEM is not supported"),
    (TLS + "  certfile: x\n", f"{T}.certfile", "did you mean cert_file?"),
    ("http_server_config:\n  header: {}\n", "http_server_config.header", "did you mean headers?"),
]


@pytest.mark.parametrize(("body", "key", "reason"), HOSTILE)
def test_hostile_config_names_the_file_and_key(pki: Path, body: str, key: str, reason: str) -> None:
    path = _write(pki, body)
    with pytest.raises(ParseError) as info:
        read_web_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ") and message.isprintable(), message
    assert reason.format(pki=pki) in message


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("", "is empty: refused rather than serve plain HTTP without authentication"),
        ("# nothing but a comment\n", "is empty"),
        ("- a list\n", "expected a mapping, got a list"),
        ("just text\n", "expected a mapping, got a string 'just text'"),
        ("a: [unclosed\n", "not YAML"),
        (f"basic_auth_users:\n  a: {HASH}\nbasic_auth_users:\n  b: {HASH}\n", "duplicate key"),
        (f"basic_auth_users:\n  a: {HASH}\n  a: {HASH}\n", "found duplicate key 'a'"),
        ("a: 2024-13-45\n", "not YAML: month must be in 1..12"),  # ValueError inside PyYAML
        ("a: !!timestamp x\n", "not YAML"),  # AttributeError inside PyYAML
        ("a: !!int x\n", "not YAML"),
        ("[" * 5000, "not YAML"),  # RecursionError inside PyYAML
        ("a: !!python/object/apply:os.system [true]\n", "not YAML"),
    ],
)
def test_hostile_file_names_the_file(pki: Path, body: str, reason: str) -> None:
    path = _write(pki, body)
    with pytest.raises(ParseError) as info:
        read_web_config(path)
    assert str(info.value).startswith(f"{path}: ") and reason in str(info.value)


def test_a_device_or_huge_file_is_refused_unread() -> None:
    with pytest.raises(ParseError, match="/dev/zero: larger than 16 MiB"):
        read_web_config(Path("/dev/zero"))


def test_merge_keys_are_not_duplicates(pki: Path) -> None:
    body = f"basic_auth_users:\n  <<: {{a: {HASH}}}\n  a: {HASH.replace('$04$', '$05$')}\n"
    web = _read(pki, body)
    assert web.auth is not None and web.auth.users["a"].startswith(b"$2b$05$")


def test_expired_certificate_is_served_and_logged(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "lvsprobe.exporter"):
        assert _read(pki, TLS.replace("server.crt", "expired.crt")).tls is not None
    (record,) = caplog.records
    end = parse_certificate_validity(
        pem_certificates((pki / "expired.crt").read_bytes(), "x")[0], "x"
    ).not_after
    assert f"{pki}/web.yml: tls_server_config.cert_file: {pki}/expired.crt" in record.message
    assert f"certificate 1 of 1 (the server's own) expired on {end:%Y-%m-%d %H:%M:%S} UTC" in (
        record.message
    )


def test_certificate_dates_are_checked_against_now(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = pem_certificates((pki / "server.crt").read_bytes(), "x")[0]
    validity = parse_certificate_validity(cert, "x")
    with caplog.at_level(logging.WARNING, "lvsprobe.exporter"):
        _read(pki, TLS)  # now: valid for two days
        assert not caplog.records
        _read(pki, TLS, now=validity.not_before - timedelta(seconds=1))
        _read(pki, TLS, now=validity.not_after + timedelta(seconds=1))
    early, late = (record.message for record in caplog.records)
    assert f"is not valid until {validity.not_before:%Y-%m-%d %H:%M:%S} UTC" in early
    assert f"expired on {validity.not_after:%Y-%m-%d %H:%M:%S} UTC" in late


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (TLS.replace("server.crt", "5"), "tls_server_config.cert_file"),
        (TLS.replace("server.crt", "nope.crt"), "tls_server_config.cert_file"),
        (TLS + "  min_version: TLS13\n  max_version: TLS12\n", "tls_server_config.min_version"),
        (f"basic_auth_users:\n  prometheus: {PLACEHOLDER}\n", "basic_auth_users.prometheus"),
        ("http_server_config:\n  headers:\n    X-XSS-Protection: \"1\\r\\nX: y\"\n",
         "http_server_config.headers.X-XSS-Protection"),
    ],
)  # fmt: skip
def test_cli_says_one_line_and_exits_1(pki: Path, body: str, key: str) -> None:
    path = _write(pki, body, "cli.yml")
    result = subprocess.run(
        [sys.executable, "-m", "lvsprobe", "export", "--web.listen-address", "127.0.0.1:0",
         "--web.config.file", str(path), "--procfs-root", str(NAT_PROC)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"lvsprobe: {path}: {key}: ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


KEYS = st.sampled_from(
    ["tls_server_config", "http_server_config", "basic_auth_users", "cert_file", "key_file",
     "client_auth_type", "client_ca_file", "min_version", "max_version", "cipher_suites",
     "prefer_server_cipher_suites", "http2", "headers", "X-Frame-Options",
     "Content-Security-Policy", "prometheus", "rate_limit"]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(
        ["server.crt", "server.key", "ca.crt", "enc.key", "TLS10", "TLS11", "TLS12", "TLS13",
         HASH, PLACEHOLDER, "RequireAndVerifyClientCert", "NoClientCert", "deny", "nosniff",
         "adir", "/dev/null",
         "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"]
    )
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(KEYS | st.text(max_size=8) | st.integers(), inner, max_size=4)
    ),
    max_leaves=12,
)


YAML_CHARACTERS = (
    st.sampled_from(list("ab:-[]{}&*!|>'\"%@`#,? \n\t0123456789.$<")) | st.characters()
)


@settings(deadline=None, max_examples=300)  # no wall-clock limits in tests
@given(data=st.dictionaries(KEYS, VALUES, max_size=3) | VALUES)
def test_random_yaml_raises_only_lvsprobe_errors(pki: Path, data: object) -> None:
    path = _write(pki, yaml.safe_dump(data, sort_keys=False), "fuzz.yml")
    with contextlib.suppress(LvsprobeError):
        read_web_config(path)


@settings(deadline=None, max_examples=300)  # no wall-clock limits in tests
@given(text=st.text(alphabet=YAML_CHARACTERS, max_size=60))
def test_random_text_raises_only_lvsprobe_errors(pki: Path, text: str) -> None:
    path = pki / "fuzz.yml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a lone surrogate: not UTF-8
    with contextlib.suppress(LvsprobeError):
        read_web_config(path)
