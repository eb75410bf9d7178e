"""Property tests: whatever YAML a scenario file holds, the loader raises ScenarioError or
returns a scenario that plans and checks without error (never another exception)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ScenarioError
from lvsprobe.replay.expect import check_expectations
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.plan import describe_plan, make_plan
from lvsprobe.replay.scenario import Scenario, parse_scenario

REPLAYS = Path(__file__).resolve().parents[2] / "replays"
CATALOGUE = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(REPLAYS.glob("*.yaml"))}

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_interesting = st.sampled_from(
    [
        "1s",
        "150ms",
        "25h",
        "tcp",
        "http",
        "ftp-active",
        "closed",
        "burst",
        "127.0.0.1",
        "10.0.0.0/30",
        "10.0.0.3/30",
        "::1",
        "[::1]:80",
        "rs1",
        "/x y",
        "a\r\nb",
        "(",
        65536,
        -1,
        0,
        2**63,
        10**30,
        1e308,
    ]
)
_scalars = st.none() | st.booleans() | st.integers() | st.floats() | _text | _interesting
VALUES = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a plain YAML value, itself first."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _paths(child, (*prefix, i))
    return out


def _replaced(doc: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    copy: Any = dict(doc) if isinstance(doc, dict) else list(doc)
    head, rest = path[0], path[1:]
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = _replaced(doc[head], rest, new, delete)
    return copy


def _record(flow_id: int, scenario: Scenario) -> FlowRecord:
    return FlowRecord(
        flow_id=flow_id,
        kind=scenario.flows[0].kind,
        client_address=scenario.clients.addresses[0],
        client_port=40000 + flow_id,
        server_address=scenario.target.address,
        server_port=scenario.target.port,
        protocol=scenario.target.protocol,
        scheduled_s=0.0,
        start_s=0.0,
        start_unix=0.0,
        outcome="ok",
        backend=f"rs{flow_id % 3 + 1}",
    )


def _load_and_use(text: str) -> None:
    """Parse; when the scenario is valid, plan it, describe the plan and run its checks."""
    try:
        scenario = parse_scenario(text, "fuzz.yaml")
    except ScenarioError as exc:
        assert str(exc).startswith("fuzz.yaml"), exc
        return
    plan = make_plan(scenario, max_flows=20)
    assert len(plan) <= 20
    describe_plan(scenario, plan)
    check_expectations(scenario.expect, [_record(i, scenario) for i in range(4)])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_random_documents_give_only_scenario_errors(value: Any) -> None:
    _load_and_use(yaml.safe_dump(value))


@pytest.mark.parametrize("name", sorted(CATALOGUE))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_catalogue_scenarios_give_only_scenario_errors(name: str, data: Any) -> None:
    doc = CATALOGUE[name]
    path = data.draw(st.sampled_from(_paths(doc)[1:]), label="path")
    delete = data.draw(st.booleans(), label="delete")
    new = data.draw(VALUES, label="new")
    _load_and_use(yaml.safe_dump(_replaced(doc, path, new, delete)))


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(sorted(CATALOGUE)), st.integers(0, 2000), st.binary(max_size=30))
def test_spliced_bytes_give_only_scenario_errors(name: str, at: int, junk: bytes) -> None:
    text = (REPLAYS / f"{name}.yaml").read_text()
    with contextlib.suppress(UnicodeDecodeError):
        _load_and_use(text[:at] + junk.decode("latin-1") + text[at:])
