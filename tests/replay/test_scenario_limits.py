"""Hostile scenario files: aliases, size, nesting, wrong types and values past the documented
bounds give a ScenarioError naming the key path and the bound, before any traffic."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import ScenarioError
from lvsprobe.replay import limits
from lvsprobe.replay.scenario import (
    SCENARIO_HELP,
    load_scenario,
    parse_endpoint,
    parse_scenario,
    pool_span,
)

BASE = """\
target: {address: 127.0.0.1, port: 9, backends: {rs1: 127.0.0.11}}
clients: {cidr: 127.0.0.8/29, count: 2}
flows:
  - {kind: tcp, hold: 1s}
arrival: {model: open, rate: 50}
bounds: {max_flows: 5, max_duration: 5s}
"""


def _error(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "s.yaml")
    return str(info.value)


def test_base_is_valid() -> None:
    assert parse_scenario(BASE, "s.yaml").target.backends == {"rs1": "127.0.0.11"}


def _laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "expect:\n  lab:\n" + "".join(f"    {line}\n" for line in lines)


@pytest.mark.parametrize(
    "extra",
    [
        "expect: {lab: &a [*a]}\n",  # recursive: RecursionError before
        _laughs(9),  # billion laughs, under 1 KB: minutes and a MemoryError before
        "expect: {lab: &plain 1}\n",  # an anchor alone is refused too: no half rule
        "defaults: &d {kind: tcp}\n",
    ],
    ids=["recursive", "laughs", "anchor", "merge-base"],
)
def test_anchors_and_aliases_are_refused(extra: str) -> None:
    message = _error(BASE + extra)
    assert message.startswith("s.yaml line ")
    assert "anchors and aliases (&name, *name) are not allowed" in message
    assert "plain config file" in message


def test_merge_key_is_refused() -> None:
    text = BASE.replace("flows:\n  - {kind: tcp, hold: 1s}", "flows:\n  - {<<: *d}")
    assert "anchors and aliases" in _error(text)


def test_nesting_is_bounded() -> None:
    deep = "[" * (limits.MAX_NESTING + 2) + "]" * (limits.MAX_NESTING + 2)
    assert f"nested more than {limits.MAX_NESTING} levels deep" in _error(
        BASE + f"expect: {{lab: {deep}}}\n"
    )


def test_a_list_is_bounded_while_it_is_read() -> None:
    text = BASE + "recorded:\n" + "- {kind: tcp}\n" * (limits.MAX_RECORDED + 1)
    assert f"recorded: more than {limits.MAX_RECORDED:,} entries" in _error(text)


def test_file_size_is_bounded(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(BASE + "#" * limits.MAX_SCENARIO_BYTES)
    with pytest.raises(ScenarioError, match=r"big\.yaml: larger than a scenario file may be"):
        load_scenario(big)
    with pytest.raises(ScenarioError, match=r"more than a scenario file may hold"):
        parse_scenario(big.read_text(), "big.yaml")


def test_an_endless_file_is_read_only_to_the_bound() -> None:
    with pytest.raises(ScenarioError, match=r"/dev/zero: larger than a scenario file may be"):
        load_scenario(Path("/dev/zero"))


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        (
            "backends: {rs1: 127.0.0.11}",
            "backends: 5",
            "target.backends: expected a mapping NAME: ADDRESS[:PORT], got int 5",
        ),
        ("backends: {rs1: 127.0.0.11}", "backends: {rs1: [1]}", "target.backends.rs1: expected"),
        ("rs1: 127.0.0.11", "rs1: '127.0.0.11:99999'", "port '99999' is not in 1..65535"),
        ("rs1: 127.0.0.11", "rs1: '[::1]:80'", None),
        ("address: 127.0.0.1", "address: [1]", "target.address: expected text, got a list"),
        ("cidr: 127.0.0.8/29, count: 2", "addresses: 5", "clients.addresses: expected a non"),
        ("cidr: 127.0.0.8/29, count: 2", "addresses: [1, 2]", "clients.addresses.0: 1 is not"),
        ("cidr: 127.0.0.8/29", "cidr: 127.0.0.11/30", "holds no client address"),
        ("cidr: 127.0.0.8/29, count: 2", "cidr: '::1/128'", "a flow needs both in one family"),
        ("flows:\n  - {kind: tcp, hold: 1s}", "flows: 5", "flows: expected a non-empty list"),
        ("flows:\n  - {kind: tcp, hold: 1s}", "flows: [5]", "flows.0: expected a mapping, got"),
        ("{kind: tcp, hold: 1s}", "{kind: [tcp]}", "flows.0.kind: expected text, got a list"),
        ("{kind: tcp, hold: 1s}", "{kind: http, path: 'a b'}", "flows.0.path: 'a b'"),
        ("{kind: tcp, hold: 1s}", '{kind: http, path: "/x\\r\\nX: y"}', "no line breaks"),
        ("{kind: tcp, hold: 1s}", '{kind: ftp-active, user: "u\\r\\nDELE x"}', "no line breaks"),
        ("{kind: tcp, hold: 1s}", "{kind: tcp, payload_bytes: x}", "expected bytes N"),
        ("arrival: {model: open, rate: 50}", "arrival: 5", "arrival: expected a mapping, got int"),
        ("bounds: {max_flows: 5, max_duration: 5s}", "bounds: [1]", "bounds: expected a mapping"),
        ("rate: 50", "rate: '50'", "arrival.rate: expected a number, got str '50'"),
        ("rate: 50", "rate: .nan", "arrival.rate: expected a number"),
    ],
)
def test_wrong_types_name_the_key_path(old: str, new: str, words: str | None) -> None:
    assert old in BASE
    text = BASE.replace(old, new)
    if words is None:
        parse_scenario(text, "s.yaml")
        return
    message = _error(text)
    assert message.startswith("s.yaml line "), message
    assert words in message


@pytest.mark.parametrize(
    ("old", "new", "bound"),
    [
        ("max_flows: 5", "max_flows: 10000000", "1..1,000,000"),
        ("rate: 50", "rate: 1000000", "0.001..100,000"),
        ("model: open, rate: 50", "model: closed, concurrency: 100000", "1..10,000"),
        ("model: open, rate: 50", "model: burst, burst_size: 20000", "1..10,000"),
        ("max_duration: 5s", "max_duration: 48h", "0..86400s"),
        ("hold: 1s", "hold: 25h", "0..86400s"),
        ("hold: 1s", "hold: 1s, heartbeat: 0.0001", "at least 1ms when hold is set"),
        ("hold: 1s", "hold: 1s, heartbeat_timeout: 2h", "0..3600s"),
        ("max_duration: 5s", "max_duration: 5s, flow_timeout: 2h", "0..3600s"),
        ("count: 2", "count: 70000", "1..65,536"),
        (
            "flows:\n  - {kind: tcp, hold: 1s}",
            "flows:\n" + "  - {kind: tcp}\n" * 101,
            "101 entries, more than the limit of 100",
        ),
    ],
)
def test_values_past_a_bound_name_it(old: str, new: str, bound: str) -> None:
    assert old in BASE
    assert bound in _error(BASE.replace(old, new))


def test_the_bounds_are_documented() -> None:
    for figure in ("1,000,000", "100,000/s", "10,000", "24h", "8 MiB", "anchors"):
        assert figure in SCENARIO_HELP
    assert "1,000,000" in limits.__doc__ or "million" in (limits.__doc__ or "")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10.0.0.1", ("10.0.0.1", None)),
        ("10.0.0.1:80", ("10.0.0.1", 80)),
        ("::1", ("::1", None)),
        ("[::1]", ("::1", None)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
    ],
)
def test_endpoints(text: str, parsed: tuple[str, int | None]) -> None:
    assert parse_endpoint(text) == parsed


@pytest.mark.parametrize(
    "text",
    ["10.0.0.1:0", "10.0.0.1:99999", "10.0.0.1:x", "host:80", "[::1]x", "", "[::1]:", "10.0.0.1:"],
)
def test_bad_endpoints(text: str) -> None:
    with pytest.raises(ValueError, match=r"ADDRESS|port"):
        parse_endpoint(text)


def test_pool_span_excludes_network_and_broadcast() -> None:
    assert pool_span("10.0.0.0/30") == (pool_span("10.0.0.1/32")[0], 2)
    assert pool_span("10.0.0.0/31")[1] == 2
    assert pool_span("fd00::/126")[1] == 4
    for bad in ("10.0.0.3/30", "10.0.0.0/33", "nope"):
        with pytest.raises(ValueError):
            pool_span(bad)


BAD_EXPECT = [
    ("{shares: 5}", "expect.shares: expected a mapping BACKEND: FLOWS, got int 5"),
    ("{shares: {rs1: x}}", "expect.shares.rs1: expected an integer, got str 'x'"),
    ("{shares: {rs1: -1}}", "expect.shares.rs1: -1 is out of range"),
    ("{shares: {}}", "expect.shares: expected at least one"),
    ("{all_ok: 1}", "expect.all_ok: expected true or false, got int 1"),
    ("{all_ok: 'yes'}", "expect.all_ok: expected true or false"),
    ("{backends_used: '3'}", "expect.backends_used: expected an integer, got str '3'"),
    ("{tls_max_resumed_fraction: 1.5}", "expect.tls_max_resumed_fraction: 1.5 is out of range"),
    ("{min_heartbeats: -1}", "expect.min_heartbeats: -1 is out of range"),
    ("{fast: true}", "expect.fast: unknown key"),
    ("[all_ok]", "expect: expected a mapping of checks, got a list"),
]


@pytest.mark.parametrize(("block", "words"), BAD_EXPECT)
def test_expect_is_validated_when_loaded(block: str, words: str) -> None:
    assert words in _error(BASE + f"expect: {block}\n")


@pytest.mark.parametrize(("block", "words"), BAD_EXPECT[:3])
def test_bad_expect_stops_run_before_any_traffic(tmp_path: Path, block: str, words: str) -> None:
    """--check crashed after the run before (AttributeError on `shares: 5`), leaving an
    empty run directory; now neither --dry-run nor a run gets past the loader."""
    path = tmp_path / "s.yaml"
    path.write_text(BASE + f"expect: {block}\n")
    out = tmp_path / "run"
    for extra in (["--dry-run"], ["--out", str(out), "--check", "--skip-pool-check"]):
        res = CliRunner().invoke(cli, ["replay", "run", str(path), "--no-progress", *extra])
        assert res.exit_code == ExitCode.ERROR, res.output
        assert words in res.output
        assert "Traceback" not in res.output
    assert not out.exists()


def test_good_expect_is_normalised() -> None:
    block = "expect: {shares: {1: 2, rs2: 3}, all_ok: true, lab: {mode: nat}}\n"
    expect = parse_scenario(BASE + block, "s.yaml").expect
    assert expect == {"shares": {"1": 2, "rs2": 3}, "all_ok": True, "lab": {"mode": "nat"}}


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).resolve().parents[2] / "replays").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_catalogue_passes_dry_run_within_the_bounds(path: Path) -> None:
    res = CliRunner().invoke(cli, ["replay", "run", str(path), "--dry-run", "--json"])
    assert res.exit_code == ExitCode.OK, res.output
    assert '"flows": ' in res.output


def test_pure_python_parser_reads_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml (PyYAML built without it) the same documents and errors result."""
    import yaml

    from lvsprobe.replay import yamldoc

    texts = [
        BASE,
        BASE + "expect: {lab: &a [*a]}\n",
        BASE + "expect: {lab: " + "[" * 20 + "]" * 20 + "}\n",
        BASE.replace("rate: 50", "rate: '50'"),
        "\x00\x01",
        "a: [1\n",
    ]
    results = []
    for loader in (yamldoc._Loader, yaml.SafeLoader):
        monkeypatch.setattr(yamldoc, "_Loader", loader)
        out: list[object] = []
        for text in texts:
            try:
                out.append(parse_scenario(text, "s.yaml"))
            except ScenarioError as exc:
                out.append(str(exc).split(": ")[0:2])
        results.append(out)
    assert results[0][:4] == results[1][:4]
    assert all(isinstance(r, list) and r[0].startswith("s.yaml") for r in results[1][4:])
