"""Service include/exclude patterns and the --names file: what they accept and how they fail."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest

from lvsprobe.errors import ParseError
from lvsprobe.exporter.filters import ServiceFilter, parse_service_match
from lvsprobe.exporter.names import parse_name_key, read_names
from lvsprobe.exporter.webconfig import read_web_config
from lvsprobe.model import Protocol, ServiceKey

ip = ipaddress.ip_address
WEB = ServiceKey(None, Protocol.TCP, ip("10.0.0.1"), 80)
WEB6 = ServiceKey(None, Protocol.TCP, ip("2001:db8::1"), 443)
MARK = ServiceKey(None, None, None, 0, fwmark=5)


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("10.0.0.1", {WEB}),
        ("10.0.0.0/8", {WEB}),
        ("10.0.0.0/8:80", {WEB}),
        ("10.0.0.0/8:81", set()),
        (":443", {WEB6}),
        ("[2001:db8::/32]:443", {WEB6}),
        ("2001:db8::/32", {WEB6}),
        ("fwmark:5", {MARK}),
        ("fwmark:0x5", {MARK}),
        (":0", set()),
    ],
)
def test_patterns(pattern: str, matches: set[ServiceKey]) -> None:
    m = parse_service_match(pattern)
    got = {k for k in (WEB, WEB6, MARK) if m.matches(k.address, k.port, k.fwmark)}
    assert got == matches


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "fwmark:",
        "fwmark:0",
        "fwmark:x",
        ":65536",
        ":http",
        "10.0.0.0/33",
        "[::1",
        "[::1]x",
        "host:80",
    ],
)
def test_bad_patterns_say_why(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_service_match(bad)


def test_include_then_exclude() -> None:
    f = ServiceFilter(
        include=(parse_service_match("10.0.0.0/8"), parse_service_match("fwmark:5")),
        exclude=(parse_service_match(":80"),),
    )
    assert [f.allows_key(k) for k in (WEB, WEB6, MARK)] == [False, False, True]
    assert ServiceFilter().allows_key(WEB) and not ServiceFilter().active


def test_names_file(tmp_path: Path) -> None:
    path = tmp_path / "names.yml"
    path.write_text('10.0.0.1:80/tcp: web\n"[2001:db8::1]:443/TCP": web6\nfwmark:5: mail\n')
    names = read_names(path)
    assert [names.lookup(k) for k in (WEB, WEB6, MARK)] == ["web", "web6", "mail"]
    assert names.lookup(ServiceKey(None, Protocol.UDP, ip("10.0.0.1"), 80)) is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("10.0.0.1:80/tcpx: web\n", "PROTOCOL"),
        ("10.0.0.1/tcp: web\n", ":PORT"),
        ("10.0.0.300:80/tcp: web\n", "bad address"),
        ("fwmark:0: web\n", "fwmark"),
        ("10.0.0.1:80/tcp: ''\n", "non-empty"),
        ("- a list\n", "mapping"),
        ("a: [\n", "not YAML"),
    ],
)
def test_bad_names_file_names_the_entry(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "names.yml"
    path.write_text(text)
    with pytest.raises(ParseError, match=reason) as info:
        read_names(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("reader", [read_names, read_web_config])
def test_unreadable_yaml_file_is_named(tmp_path: Path, reader: Callable[[Path], object]) -> None:
    latin1 = tmp_path / "latin1.yml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    for path, reason in (
        (tmp_path / "missing.yml", "cannot read"),
        (tmp_path, "cannot read"),
        (latin1, "not UTF-8 text"),
    ):
        with pytest.raises(ParseError, match=reason) as info:
            reader(path)
        assert str(path) in str(info.value)


def test_name_key_forms() -> None:
    assert parse_name_key("10.0.0.1:80/udp") == ("udp", ip("10.0.0.1"), 80, 0)
    assert parse_name_key("fwmark:7") == ("", None, 0, 7)
