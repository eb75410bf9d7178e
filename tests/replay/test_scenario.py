"""Scenario files: the schema, defaults, and hostile files that must give a ScenarioError
naming the file and the line."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ScenarioError
from lvsprobe.replay.plan import check_pool, describe_plan, make_plan, require_pool
from lvsprobe.replay.scenario import load_scenario, parse_scenario

GOOD = """\
name: t
seed: 3
target: {address: 198.18.1.100, port: 80, backends: {rs1: 198.18.1.11, rs2: "198.18.1.12:80"}}
clients: {cidr: 198.18.16.1/24, count: 10, pick: random}
flows:
  - {kind: http, weight: 3}
  - {kind: tcp, weight: 1, hold: 2s, heartbeat: 100ms}
arrival: {model: open, rate: 50, process: poisson}
bounds: {max_flows: 40, max_duration: 1m}
"""


def test_good_scenario_and_deterministic_plan() -> None:
    scenario = parse_scenario(GOOD, "good.yaml")
    assert scenario.clients.addresses[0] == "198.18.16.1"
    assert len(scenario.clients.addresses) == 10
    assert scenario.bounds.max_duration_s == 60.0
    assert scenario.flows[1].hold_s == 2.0 and scenario.flows[1].heartbeat_s == 0.1
    plan = make_plan(scenario)
    assert len(plan) == 40
    assert plan == make_plan(parse_scenario(GOOD, "again.yaml"))
    other = make_plan(parse_scenario(GOOD.replace("seed: 3", "seed: 4"), "x.yaml"))
    assert [p.client_address for p in plan] != [p.client_address for p in other]
    assert describe_plan(scenario, plan)["flows"] == 40


def test_open_loop_rate_and_burst_offsets() -> None:
    uniform = parse_scenario(GOOD.replace(", process: poisson", ""), "u.yaml")
    offsets = [p.at_s for p in make_plan(uniform)]
    assert offsets[:3] == [0.0, 0.02, 0.04]
    burst = parse_scenario(
        GOOD.replace(
            "{model: open, rate: 50, process: poisson}",
            "{model: burst, burst_size: 5, burst_every: 1s}",
        ),
        "b.yaml",
    )
    assert [p.at_s for p in make_plan(burst)][:6] == [0.0] * 5 + [1.0]
    bounded = parse_scenario(GOOD.replace("max_duration: 1m", "max_duration: 100ms"), "d.yaml")
    assert len(make_plan(bounded)) < 40  # the duration bounds the open-loop plan too


@pytest.mark.parametrize(
    ("mutation", "line", "words"),
    [
        (("max_duration: 1m", "max_duration: soon"), 9, "duration"),
        (("bounds: {max_flows: 40, max_duration: 1m}\n", ""), None, "bounds: required"),
        (("max_flows: 40, ", ""), 9, "max_flows: required"),
        (("kind: http", "kind: gopher"), 6, "not one of"),
        (("kind: http, weight: 3", "weight: 3"), 6, "kind: required"),
        (("address: 198.18.1.100", "address: vip.example"), 3, "not an IP"),
        (("cidr: 198.18.16.1/24", "cidr: 198.18.16.1/33"), 4, "not a CIDR"),
        (("count: 10", "count: 1000"), 4, "holds 254 from 198.18.16.1"),
        (("rate: 50", "rate: -1"), 8, "out of range"),
        (("seed: 3", "seed: [1]"), 2, "integer"),
        (("name: t", "name: t\nname: u"), 2, "duplicate key"),
        (("heartbeat: 100ms", "heartbeat: 0s"), 7, "at least 1ms when hold is set"),
        (("weight: 1,", "weight: 1, colour: red,"), 7, "unknown key"),
        (
            (
                "flows:\n  - {kind: http, weight: 3}\n  - {kind: tcp, weight: 1, hold: 2s, "
                "heartbeat: 100ms}\n",
                "flows: []\n",
            ),
            5,
            "non-empty",
        ),
        (("{kind: http, weight: 3}", "{kind: http, requests: 3}"), 6, "keepalive"),
        (("port: 80,", "port: 80, backend_pattern: 'rs\\d',"), 3, "capture group"),
        (("{kind: http, weight: 3}", "{kind: ftp-active, sha256: abc}"), 6, "hex"),
    ],
)
def test_hostile_scenarios_name_file_and_line(
    mutation: tuple[str, str], line: int | None, words: str
) -> None:
    text = GOOD.replace(*mutation)
    assert text != GOOD
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.yaml")
    message = str(info.value)
    assert message.startswith("bad.yaml")
    if line is not None:
        assert f"bad.yaml line {line}:" in message
    assert words in message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "key: [unclosed\n", "\x00\x01", "42"])
def test_garbage_files(text: str) -> None:
    with pytest.raises(ScenarioError, match=r"^g\.yaml"):
        parse_scenario(text, "g.yaml")


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScenarioError, match=r"bin\.yaml"):
        load_scenario(tmp_path / "bin.yaml")
    with pytest.raises(ScenarioError, match=r"missing\.yaml"):
        load_scenario(tmp_path / "missing.yaml")


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.text(max_size=300))
def test_fuzz_text_only_scenario_errors(text: str) -> None:
    with contextlib.suppress(ScenarioError):
        parse_scenario(GOOD[: len(GOOD) // 2] + text, "fuzz.yaml")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(GOOD.splitlines()), st.text(max_size=40))
def test_fuzz_line_edits(line: str, replacement: str) -> None:
    with contextlib.suppress(ScenarioError):
        parse_scenario(GOOD.replace(line, replacement, 1), "edit.yaml")


def test_pool_check_names_missing_addresses() -> None:
    assert check_pool(["127.0.0.5", "::1"]) == []
    assert check_pool(["198.18.250.1"]) == ["198.18.250.1"]
    with pytest.raises(ScenarioError, match=r"1 of 2 client addresses .* 198\.18\.250\.1"):
        require_pool(("127.0.0.2", "198.18.250.1"))
