"""HTTP semantics of the exporter on loopback: HTTP/1.0 framing, HEAD, bad requests, health
endpoints and auth, OpenMetrics negotiation (checked with prometheus-client's own parsers),
and the flags that configure the server."""

from __future__ import annotations

import base64
import gzip
import re
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_classic

from lvsprobe.cli import cli
from lvsprobe.exporter.flights import scrape_formats
from lvsprobe.exporter.httpsettings import HTTPLimits, check_telemetry_path
from lvsprobe.exporter.negotiate import accepts_gzip, negotiate_format, parse_accept
from lvsprobe.exporter.render import ExpositionFormat
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.exporter.server import ExporterServer
from lvsprobe.exporter.webconfig import BasicAuth, WebConfig
from lvsprobe.model import Snapshot

ROOT = Path(__file__).resolve().parents[2]
NAT_PROC = ROOT / "tests/fixtures/kernel-6.1/nat/proc"
# What Prometheus 2.x sends (scrape_protocols default), and Prometheus before 2.43.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
OLD_PROMETHEUS_ACCEPT = "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5"
LIMITS = HTTPLimits(read_timeout_s=5, write_timeout_s=5, idle_timeout_s=5)


@pytest.fixture(params=[False, True], ids=["nat", "compat"])
def scraper(request: pytest.FixtureRequest, make_snapshot: Callable[..., Snapshot]) -> Scraper:
    snap = make_snapshot()
    options = ExportOptions(compat_node_exporter=request.param)
    return Scraper(options, read=lambda t, **kw: snap, build=("0.1.0", "3.11.0"))


@pytest.fixture
def address(scraper: Scraper) -> Iterator[str]:
    server = ExporterServer(("127.0.0.1", 0), scrape_formats(scraper), limits=LIMITS)
    with server.in_thread() as where:
        yield where


def _get(
    url: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _raw(address: str, request: bytes) -> bytes:
    """Send `request` and read until the server closes (bounded by a 30 s timeout)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        reply = b""
        while data := sock.recv(1 << 16):
            reply += data
    return reply


def _split(reply: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


# --- HTTP/1.0, HEAD and bad requests ------------------------------------------------------


def test_http_1_0_gets_a_content_length_body_and_a_close(address: str) -> None:
    for request in (
        b"GET /metrics HTTP/1.0\r\n\r\n",
        b"GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ):
        status, headers, body = _split(_raw(address, request))  # returns: the server closed
        assert status.split()[1] == "200"
        assert "transfer-encoding" not in headers
        assert int(headers["content-length"]) == len(body)
        assert headers.get("connection", "close").lower() == "close"
        assert b"ipvs_up 1\n" in body


def test_http_1_1_close_is_honoured(address: str) -> None:
    reply = _raw(address, b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    status, headers, body = _split(reply)
    assert status == "HTTP/1.1 200 " or status.startswith("HTTP/1.1 200")
    assert int(headers["content-length"]) == len(body)


def test_pipelined_requests_are_answered_in_order(address: str) -> None:
    reply = _raw(
        address,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    first, _, rest = reply.partition(b"lvsprobe exporter is healthy.\n")
    assert first.startswith(b"HTTP/1.1 200") and rest.startswith(b"HTTP/1.1 200")
    assert b"ipvs_up 1\n" in rest


def test_head_has_headers_and_no_body(address: str) -> None:
    reply = _raw(address, b"HEAD /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    status, headers, body = _split(reply)
    assert status.startswith("HTTP/1.1 200") and body == b""
    assert headers["content-type"] == ExpositionFormat.CLASSIC.value


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", "405"),
        (b"GARBAGE\r\n\r\n", "400"),
        (b"GET /metrics HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "431"),
    ],
    ids=["post", "garbage", "huge-head"],
)
def test_bad_requests_get_an_error_and_a_close(
    address: str, request_bytes: bytes, code: str
) -> None:
    status, _, _ = _split(_raw(address, request_bytes))
    assert status.split()[1] == code
    assert _get(f"http://{address}/healthz")[0] == 200  # and the server goes on


# --- health endpoints, landing page, auth ----------------------------------------------


def test_landing_page_links_metrics_and_health(address: str) -> None:
    status, headers, body = _get(f"http://{address}/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for path in ("/metrics", "/healthz", "/-/healthy", "/-/ready"):
        assert f'href="{path}"'.encode() in body


def test_health_endpoints_need_no_auth_but_metrics_do(scraper: Scraper) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    web = WebConfig(auth=BasicAuth({"prometheus": hashed}))
    server = ExporterServer(("127.0.0.1", 0), scrape_formats(scraper), web, limits=LIMITS)
    with server.in_thread() as address:
        for path in ("/healthz", "/-/healthy"):
            assert _get(f"http://{address}{path}")[0] == 200
        for path in ("/", "/metrics", "/nope"):
            assert _get(f"http://{address}{path}")[0] == 401
        good = {"Authorization": "Basic " + base64.b64encode(b"prometheus:s3cret").decode()}
        assert _get(f"http://{address}/metrics", good)[0] == 200
        ready = _get(f"http://{address}/-/ready")
        assert ready[0] == 200, ready  # the warm-up read has completed by now


# --- OpenMetrics ------------------------------------------------------------------------


def _samples(families: Iterator[object]) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    return sorted(
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for fam in families
        for s in fam.samples  # type: ignore[attr-defined]
    )


def test_openmetrics_when_asked_and_both_formats_parse_to_the_same_samples(
    address: str, check_metrics: Callable[[bytes], subprocess.CompletedProcess[bytes]]
) -> None:
    status, headers, classic = _get(f"http://{address}/metrics")
    assert headers["Content-Type"] == ExpositionFormat.CLASSIC.value
    result = check_metrics(classic)
    assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()
    for accept, fmt in (
        (PROMETHEUS_ACCEPT, ExpositionFormat.OPENMETRICS_1_0_0),
        (OLD_PROMETHEUS_ACCEPT, ExpositionFormat.OPENMETRICS_0_0_1),
    ):
        status, headers, body = _get(
            f"http://{address}/metrics", {"Accept": accept, "Accept-Encoding": "gzip"}
        )
        assert status == 200 and headers["Content-Type"] == fmt.value
        text = gzip.decompress(body).decode()
        assert text.endswith("\n# EOF\n")
        assert "# TYPE ipvs_connections counter\n" in text
        assert "\nipvs_connections_total " in text
        openmetrics = _samples(parse_openmetrics(text))
        assert openmetrics == _samples(parse_classic(classic.decode()))
        assert len(openmetrics) > 100


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        (None, ExpositionFormat.CLASSIC),
        ("", ExpositionFormat.CLASSIC),
        ("*/*", ExpositionFormat.CLASSIC),
        ("text/plain", ExpositionFormat.CLASSIC),
        (PROMETHEUS_ACCEPT, ExpositionFormat.OPENMETRICS_1_0_0),
        (OLD_PROMETHEUS_ACCEPT, ExpositionFormat.OPENMETRICS_0_0_1),
        ("application/openmetrics-text", ExpositionFormat.OPENMETRICS_1_0_0),
        ("text/plain;q=0.9, application/openmetrics-text;q=0.8", ExpositionFormat.CLASSIC),
        ("application/openmetrics-text;version=2.0.0, text/plain", ExpositionFormat.CLASSIC),
        ("application/openmetrics-text;q=0, */*", ExpositionFormat.CLASSIC),
        (
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
            "encoding=delimited;q=0.9,application/openmetrics-text;version=1.0.0;q=0.8",
            ExpositionFormat.OPENMETRICS_1_0_0,
        ),
        ('APPLICATION/OpenMetrics-Text; Version="1.0.0"', ExpositionFormat.OPENMETRICS_1_0_0),
    ],
)
def test_negotiate_format(accept: str | None, fmt: ExpositionFormat) -> None:
    assert negotiate_format(accept) is fmt


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("identity", False),
        ("*", True),
        ("gzip;q=0, *", False),
        ("deflate;q=1, gzip;q=0.1", True),
        (None, False),
    ],
)
def test_accepts_gzip(header: str | None, ok: bool) -> None:
    assert accepts_gzip(header) is ok


@given(st.text())
def test_negotiation_never_raises_on_any_header(header: str) -> None:
    assert isinstance(negotiate_format(header), ExpositionFormat)
    assert isinstance(accepts_gzip(header), bool)
    assert all(name == name.lower() for name, _ in parse_accept(header))


# --- flags ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--web.telemetry-path", "metrics"], "--web.telemetry-path"),
        (["--web.telemetry-path", "/-/ready"], "--web.telemetry-path"),
        (["--web.read-timeout", "0s"], "--web.read-timeout"),
        (["--web.write-timeout", "ten"], "--web.write-timeout"),
        (["--web.idle-timeout", "5x"], "--web.idle-timeout"),
        (["--web.max-connections", "0"], "--web.max-connections"),
    ],
)
def test_bad_web_flags_exit_2_naming_the_flag(args: list[str], flag: str) -> None:
    # The bad listen address is checked last: a flag checked before it must be the one named.
    argv = ["export", "--procfs-root", str(NAT_PROC), "--web.listen-address", "bad", *args]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert flag in result.output


@pytest.mark.parametrize(
    ("path", "ok"),
    [("/metrics", True), ("/x/y", True), ("metrics", False), ("/", False), ("/m?x", False)],
)
def test_check_telemetry_path(path: str, ok: bool) -> None:
    if ok:
        assert check_telemetry_path(path) == path
    else:
        with pytest.raises(ValueError, match=re.escape(repr(path))):
            check_telemetry_path(path)
