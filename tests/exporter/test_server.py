"""The HTTP server on loopback: landing page, /metrics, TLS, basic auth, concurrency, memory."""

from __future__ import annotations

import base64
import errno
import gzip
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import bcrypt
import pytest

from lvsprobe.errors import ParseError
from lvsprobe.exporter import server as server_module
from lvsprobe.exporter.flights import Scrape, scrape_formats
from lvsprobe.exporter.httpsettings import HTTPLimits, parse_listen_address
from lvsprobe.exporter.render import ExpositionFormat
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.exporter.server import ExporterServer
from lvsprobe.exporter.webconfig import WebConfig, read_web_config
from lvsprobe.model import Snapshot


def _serve(
    scrape: Scrape, web: WebConfig | None = None, limits: HTTPLimits | None = None
) -> Iterator[str]:
    server = ExporterServer(("127.0.0.1", 0), scrape, web, limits=limits, warm_up=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def scraper(make_snapshot: Callable[..., Snapshot]) -> Scraper:
    snap = make_snapshot()
    return Scraper(ExportOptions(), read=lambda t, **kw: snap, build=("0.1.0", "3.11.0"))


@pytest.fixture
def plain(scraper: Scraper) -> Iterator[str]:
    yield from _serve(scrape_formats(scraper))


def _get(
    url: str, headers: dict[str, str] | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_landing_metrics_and_404(plain: str) -> None:
    status, headers, body = _get(f"http://{plain}/")
    assert status == 200 and b'href="/metrics"' in body
    status, headers, body = _get(f"http://{plain}/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert b"ipvs_up 1\n" in body
    status, _, _ = _get(f"http://{plain}/nope")
    assert status == 404


def test_gzip_when_asked(plain: str) -> None:
    status, headers, body = _get(f"http://{plain}/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert b"ipvs_up 1\n" in gzip.decompress(body)


def test_a_bug_costs_one_scrape_not_the_exporter() -> None:
    calls = []

    def scrape(fmt: ExpositionFormat, timeout_s: float | None) -> list[bytes]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return [b"ipvs_up 1\n"]

    for address in _serve(scrape):
        assert _get(f"http://{address}/metrics")[0] == 500
        assert _get(f"http://{address}/metrics")[2] == b"ipvs_up 1\n"


def test_50_concurrent_scrapes_all_succeed(plain: str) -> None:
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: _get(f"http://{plain}/metrics"), range(50)))
    assert [r[0] for r in results] == [200] * 50
    assert len({r[2] for r in results}) == 1


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_10000_sequential_scrapes_keep_rss_flat(plain: str) -> None:
    url = f"http://{plain}/metrics"
    for _ in range(1000):  # warm up allocator pools and caches
        assert _get(url)[0] == 200
    before = _rss_kb()
    for _ in range(9000):
        assert _get(url)[0] == 200
    growth_kb = _rss_kb() - before
    assert growth_kb < 8 * 1024, f"RSS grew {growth_kb} KiB over 9000 scrapes"


def test_listen_address_forms() -> None:
    assert parse_listen_address(":9954") == ("", 9954)
    assert parse_listen_address("127.0.0.1:1") == ("127.0.0.1", 1)
    assert parse_listen_address("[::1]:9954") == ("::1", 9954)
    for bad in ("9954", "host:http", "h:70000"):
        with pytest.raises(ValueError):
            parse_listen_address(bad)


# --- TLS and basic auth -----------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made by openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl missing: make test installs it")
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(d / "ca.key"),
        "-out",
        str(d / "ca.crt"),
        "-days",
        "2",
        "-subj",
        "/CN=lvsprobe test CA",
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(d / f"{name}.key"),
            "-out",
            str(d / f"{name}.csr"),
            "-subj",
            f"/CN={name}",
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(d / f"{name}.csr"),
            "-CA",
            str(d / "ca.crt"),
            "-CAkey",
            str(d / "ca.key"),
            "-CAcreateserial",
            "-out",
            str(d / f"{name}.crt"),
            "-days",
            "2",
            "-extfile",
            str(d / "san.ext"),
        )
    return d


def _web_config(pki: Path, body: str) -> WebConfig:
    path = pki / "web.yml"
    path.write_text(body)
    return read_web_config(path)


def _client_ctx(pki: Path, cert: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        ctx.load_cert_chain(pki / "client.crt", pki / "client.key")
    return ctx


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_tls_and_basic_auth(pki: Path, scraper: Scraper) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    web = _web_config(
        pki,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        f"basic_auth_users:\n  prometheus: {hashed}\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    )
    for address in _serve(scrape_formats(scraper), web):
        url = f"https://{address}/metrics"
        ctx = _client_ctx(pki, cert=False)
        status, headers, body = _get(url, _basic("prometheus", "s3cret"), ctx)
        assert status == 200 and b"ipvs_up 1" in body
        assert headers["X-Frame-Options"] == "deny"
        assert _get(url, _basic("prometheus", "s3cret"), ctx)[0] == 200  # cached check
        status, headers, _ = _get(url, _basic("prometheus", "wrong"), ctx)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert _get(url, _basic("nobody", "s3cret"), ctx)[0] == 401
        assert _get(url, None, ctx)[0] == 401
        with pytest.raises(urllib.error.URLError):
            _get(
                f"http://{address}/metrics".replace("http://", "https://"),
                None,
                ssl.create_default_context(),
            )  # untrusted CA


def test_client_certificate_required(pki: Path, scraper: Scraper) -> None:
    web = _web_config(
        pki,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    for address in _serve(scrape_formats(scraper), web):
        url = f"https://{address}/metrics"
        assert _get(url, None, _client_ctx(pki, cert=True))[0] == 200
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            _get(url, None, _client_ctx(pki, cert=False))
        # The server survives a failed handshake.
        assert _get(url, None, _client_ctx(pki, cert=True))[0] == 200


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("tls_server_config:\n  cert_file: server.crt\n", "cert_file and key_file"),
        ("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", "cannot read"),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAnyClientCert\n",
            "not supported",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "client_ca_file",
        ),
        ("basic_auth_users:\n  alice: plaintext\n", "bcrypt"),
        ("unknown_key: 1\n", "unknown"),
        ("- a list\n", "mapping"),
        ("a: [unclosed\n", "not YAML"),
    ],
)
def test_bad_web_config_names_the_problem(pki: Path, body: str, needle: str) -> None:
    with pytest.raises(ParseError, match=needle):
        _web_config(pki, body)


def test_client_leaving_mid_scrape_costs_nothing(make_snapshot: Callable[..., Snapshot]) -> None:
    import gc
    import socket
    import time

    from lvsprobe.model import Forward, RealServer

    base = make_snapshot()
    many = tuple(
        RealServer(ipaddress.IPv4Address(0x0A000000 + i), 80, Forward.ROUTE, 1, i, i)
        for i in range(30_000)
    )
    snap = replace(base, services=(replace(base.services[3], real_servers=many),))
    scraper = Scraper(ExportOptions(), read=lambda t, **kw: snap)
    for address in _serve(scrape_formats(scraper)):
        host, port = address.split(":")
        for _ in range(3):
            with socket.create_connection((host, int(port)), timeout=30) as sock:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                assert sock.recv(64).startswith(b"HTTP/1.1 200")
        for _ in range(200):  # bounded: the server thread notices the closed socket
            if gc.isenabled():
                break
            time.sleep(0.05)
        assert gc.isenabled()
        status, _, body = _get(f"http://{address}/metrics")
        assert status == 200 and body.count(b"\nipvs_backend_weight{") == 30_000


class _FailingAccepts:
    """The listening socket, but its accept() calls fail for `failing_s` seconds, as when the
    process is out of file descriptors (EMFILE)."""

    def __init__(self, sock: socket.socket, failing_s: float) -> None:
        self._sock, self.calls = sock, 0
        self._failing_until = time.monotonic() + failing_s

    def accept(self) -> tuple[socket.socket, object]:
        self.calls += 1
        if time.monotonic() < self._failing_until:
            raise OSError(errno.EMFILE, "Too many open files")
        return self._sock.accept()

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def test_accept_failing_pauses_accepting_instead_of_spinning(
    scraper: Scraper, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listening socket stays readable while accept() fails: the loop pauses accepting
    (ACCEPT_RETRY_S) rather than retrying on every turn (thousands of calls a second), then
    serves the waiting client."""
    monkeypatch.setattr(server_module, "ACCEPT_RETRY_S", 0.2)
    server = ExporterServer(("127.0.0.1", 0), scrape_formats(scraper), warm_up=False)
    listening = _FailingAccepts(server.socket, failing_s=0.5)
    server.socket = listening  # type: ignore[assignment]
    with server.in_thread() as address:
        status, _, body = _get(f"http://{address}/metrics")
    assert status == 200 and b"ipvs_" in body
    assert listening.calls <= 10  # a few failed tries 0.2 s apart, then the one that served
