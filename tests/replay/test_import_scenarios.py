"""`replay import` writes only scenarios `replay run` accepts: its options are checked by the
scenario's own rules, and every scenario it can write loads with the scenario loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import ParseError, ScenarioError
from lvsprobe.replay import recorded
from lvsprobe.replay.pcapimport import Flow, ImportResult
from lvsprobe.replay.recorded import replayable, to_scenario
from lvsprobe.replay.scenario import load_scenario, parse_scenario

CAPTURE = Path(__file__).parent / "data" / "loopback-http.pcap"


def _import(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["replay", "import", str(CAPTURE), *args])


@pytest.mark.parametrize(
    ("args", "flag", "words"),
    [
        (["--target", "198.18.1.100:99999"], "--target", "port '99999' is not in 1..65535"),
        (["--target", "vip.example:80"], "--target", "not an IP address"),
        (["--clients", "10.0.0.3/30"], "--clients", "holds no client address"),
        (["--clients", "10.0.0.0/33"], "--clients", "is not a CIDR"),
        (["--target", "[2001:db8::1]:80"], "--clients", "one family"),
        (["--speed", "0"], "--speed", "0"),
    ],
)
def test_options_refused_by_the_scenario_rules(
    tmp_path: Path, args: list[str], flag: str, words: str
) -> None:
    out = tmp_path / "s.yaml"
    res = _import(tmp_path, "-o", str(out), *args)
    assert res.exit_code == ExitCode.USAGE, res.output
    assert flag in res.output and words in res.output
    assert not out.exists()


def test_small_pools_and_ipv6_give_runnable_scenarios(tmp_path: Path) -> None:
    """A /30 holds 2 clients (import wrote count: 3 before, which `replay run` refused)."""
    for name, args, pool in [
        ("v4.yaml", ["--clients", "10.0.0.0/30"], ("10.0.0.1", "10.0.0.2")),
        (
            "v6.yaml",
            ["--target", "[fd00::1]", "--clients", "fd00::10/127"],
            ("fd00::10", "fd00::11"),
        ),
    ]:
        res = _import(tmp_path, "-o", str(tmp_path / name), *args)
        assert res.exit_code == ExitCode.OK, res.output
        scenario = load_scenario(tmp_path / name)
        assert scenario.clients.addresses == pool
        assert len(scenario.recorded) == 24
    assert load_scenario(tmp_path / "v6.yaml").target.port == 8080  # no port: the recorded one


def test_output_directory_is_created_or_named(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "s.yaml"
    res = _import(tmp_path, "-o", str(out))
    assert res.exit_code == ExitCode.OK, res.output
    assert len(load_scenario(out).recorded) == 24
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = _import(tmp_path, "-o", str(blocker / "s.yaml"))
    assert res.exit_code == ExitCode.ERROR
    assert f"{blocker} is not a directory" in res.output and "Traceback" not in res.output


def test_flows_past_the_scenario_limit_are_left_out_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recorded, "MAX_RECORDED", 5)
    res = _import(tmp_path, "-o", str(tmp_path / "s.yaml"))
    assert res.exit_code == ExitCode.OK, res.output
    assert "19 later flows left out" in res.stderr
    scenario = load_scenario(tmp_path / "s.yaml")
    assert len(scenario.recorded) == 5 and "the first 5 of 24 flows" in scenario.description


def _flow(start: float, payload: bytes = b"", port: int = 80, **detail: Any) -> Flow:
    return Flow(
        6, "10.9.0.1", 40000, "10.9.0.9", port, start, start + 1, 3, 10, 10, True, payload, detail
    )


@pytest.mark.parametrize(
    ("flow", "path"),
    [
        (_flow(0, b"GET /x\r\nHost: a\r\n\r\n"), "/x"),  # no HTTP version: the line ends it
        (_flow(0, b"GET http://h.example/p?q=1 HTTP/1.1\r\n"), "/p?q=1"),
        (_flow(0, b"GET h.example:443 HTTP/1.1\r\n"), "/"),
        (_flow(0, b"HEAD"), "/"),  # the request split across segments: IndexError before
        (_flow(0, b"GET / HTTP/1.1\r\n", http_path="/a\x00b"), "/"),
        (_flow(0, b"GET / HTTP/1.1\r\n", http_path="/ok", http_requests=10**7), "/ok"),
    ],
)
def test_recorded_text_is_made_sendable(flow: Flow, path: str) -> None:
    text = to_scenario(ImportResult([flow], 3), "c.pcap", "198.18.1.100", None, "198.18.16.1/24")
    (entry,) = parse_scenario(text, "x.yaml").recorded
    assert entry.mix.path == path
    assert entry.mix.requests in (1, 100_000)


def test_a_recording_longer_than_a_run_needs_speed() -> None:
    result = ImportResult([_flow(0.0), _flow(30 * 3600.0)], 6)
    with pytest.raises(ScenarioError, match=r"more than a run may last \(24 h\).*--speed"):
        to_scenario(result, "long.pcap", "198.18.1.100", 80, "198.18.16.1/24")
    text = to_scenario(result, "long.pcap", "198.18.1.100", 80, "198.18.16.1/24", speed=2.0)
    assert len(parse_scenario(text, "x.yaml").recorded) == 2


_payloads = st.binary(max_size=48) | st.sampled_from(
    [
        b"GET / HTTP/1.1\r\n",
        b"GET /a b\r\n",
        b"POST http://h/p?q HTTP/1.1\r\n",
        b"HEAD",
        b"GET ",
        b"\x16\x03\x01\x00",
        b"USER x\r\nPORT 1,2,3,4,5,6\r\n",
    ]
)
_texts = st.text(max_size=12)
_details = st.fixed_dictionaries(
    {},
    optional={
        "http_path": _texts,
        "http_requests": st.integers(0, 10**7),
        "tls_sni": _texts,
        "ftp_file": _texts,
        "ftp_commands": st.lists(st.sampled_from(["USER", "PORT", "PASV", "RETR"]), max_size=3),
    },
)


@st.composite
def _flows(draw: Any) -> Flow:
    six = draw(st.booleans())
    address = st.ip_addresses(v=6 if six else 4).map(str)
    start = draw(st.floats(0, 40 * 3600.0))
    return Flow(
        draw(st.sampled_from([6, 17, 1])),
        draw(address),
        draw(st.integers(0, 65535) | st.just(20)),
        draw(address),
        draw(st.sampled_from([0, 20, 21, 80, 443, 8080, 30000]) | st.integers(0, 65535)),
        start,
        start + draw(st.floats(0, 3600.0)),
        draw(st.integers(1, 10**6)),
        draw(st.integers(0, 1 << 40)),
        draw(st.integers(0, 1 << 40)),
        draw(st.booleans()),
        draw(_payloads),
        draw(_details),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_flows(), max_size=12),
    st.sampled_from(
        [
            ("198.18.1.100", "198.18.16.1/20"),
            ("198.18.1.100", "10.0.0.0/30"),
            ("198.18.1.100", "10.0.0.1/32"),
            ("198.18.1.100", "10.0.0.0/31"),
            ("fd00::1", "fd00::/120"),
        ]
    ),
    st.none() | st.integers(1, 65535),
    st.floats(0.001, 1e6),
)
def test_every_scenario_import_writes_loads(
    flows: list[Flow], where: tuple[str, str], port: int | None, speed: float
) -> None:
    target, cidr = where
    result = ImportResult(sorted(flows, key=lambda f: f.start), 100, None)
    try:
        text = to_scenario(result, "cap.pcap", target, port, cidr, speed)
    except ParseError:
        assert not replayable(result)
        return
    except ScenarioError as exc:
        assert "--speed" in str(exc)
        return
    scenario = parse_scenario(text, "written.yaml")
    assert len(scenario.recorded) == len(replayable(result))
    assert scenario.target.port == (port or scenario.target.port)
