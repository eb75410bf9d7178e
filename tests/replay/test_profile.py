"""Rate profiles: ramping, constant, step and closed stages; per-stage mixes; the pool model;
their validation; both engines keeping each closed stage to its window."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import pytest

from lvsprobe.errors import ScenarioError
from lvsprobe.replay.fastloop import FastRunner
from lvsprobe.replay.plan import make_plan, stages_of
from lvsprobe.replay.profile import Stage, closed_budgets, open_arrivals, planned_rate, windows
from lvsprobe.replay.runner import Runner, RunOptions
from lvsprobe.replay.scenario import parse_scenario

BASE = """
name: staged
target: {address: 127.0.0.1, port: PORT}
clients: {cidr: 127.0.0.2/24, count: 3}
flows: [{kind: http, path: /}, {kind: tcp, weight: 0}]
bounds: {max_flows: MAX, max_duration: 30s, flow_timeout: 5s}
"""


def scenario(arrival: str, port: int = 80, max_flows: int = 100_000) -> Any:
    text = BASE.replace("PORT", str(port)).replace("MAX", str(max_flows)) + arrival
    return parse_scenario(text, "staged.yaml")


def test_a_ramp_starts_as_many_flows_as_its_area_and_speeds_up() -> None:
    ramp = (Stage(10.0, 0.0, 100.0),)  # 0 -> 100/s over 10 s: 500 flows
    times = [at for at, _ in open_arrivals(ramp, False, random.Random(1), 60.0)]
    assert len(times) == 500
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[10] > gaps[-1] > 0  # faster at the end
    assert planned_rate(ramp, 5.0) == pytest.approx(50.0)


def test_constant_stages_space_flows_evenly_and_steps_change_the_rate() -> None:
    steps = (Stage(1.0, 10.0, 10.0), Stage(1.0, 40.0, 40.0))
    times = [round(at, 6) for at, _ in open_arrivals(steps, False, random.Random(1), 60.0)]
    assert times[:3] == [0.0, 0.1, 0.2]
    assert len(times) == 50 and times[10] == pytest.approx(1.0)
    assert times[11] - times[10] == pytest.approx(0.025)


def test_poisson_arrivals_average_the_profile() -> None:
    ramp = (Stage(20.0, 100.0, 300.0),)  # 4000 expected
    count = sum(1 for _ in open_arrivals(ramp, True, random.Random(3), 60.0))
    assert 3700 < count < 4300


def test_closed_stages_share_what_the_open_ones_leave() -> None:
    stages = (Stage(10.0, 10.0, 10.0), Stage(5.0, concurrency=2), Stage(5.0, concurrency=6))
    assert windows(stages) == [(0.0, 10.0), (10.0, 15.0), (15.0, 20.0)]
    assert closed_budgets(stages, 1100, 60.0) == {1: 250, 2: 750}
    assert planned_rate(stages, 12.0) is None


def test_plan_tags_flows_with_their_stage_and_uses_each_stage_mix() -> None:
    s = scenario(
        """arrival:
  model: open
  start_rate: 10
  stages:
    - {duration: 2s, rate: 50}
    - {duration: 2s, target: 100, mix: {tcp: 1}}
    - {duration: 1s, concurrency: 3}
""",
        max_flows=400,
    )
    plan = make_plan(s)
    by_stage = {k: [p for p in plan if p.stage == k] for k in (0, 1, 2)}
    assert len(by_stage[0]) == 100 and {p.kind for p in by_stage[0]} == {"http"}
    assert len(by_stage[1]) == 150 and {p.kind for p in by_stage[1]} == {"tcp"}
    assert {p.at_s for p in by_stage[2]} == {None} and len(by_stage[2]) == 150
    assert stages_of(s)[1].start_rate_per_s == 50.0  # a ramp starts where the last stage ended


def test_models_without_stages_keep_their_plans() -> None:
    closed = scenario("arrival: {model: closed, concurrency: 4}\n", max_flows=50)
    assert [p.at_s for p in make_plan(closed)] == [None] * 50
    opened = scenario("arrival: {model: open, rate: 20}\n", max_flows=10)
    assert [round(p.at_s or 0, 6) for p in make_plan(opened)][:3] == [0.0, 0.05, 0.1]


@pytest.mark.parametrize(
    ("arrival", "reason"),
    [
        (
            "{model: open, rate: 5, stages: [{duration: 1s, rate: 5}]}",
            "arrival.rate: not with stages",
        ),
        ("{stages: [{duration: 1s, rate: 5, target: 6}]}", "exactly one of"),
        ("{stages: [{duration: 1s}]}", "exactly one of"),
        ("{stages: [{rate: 5}]}", "duration: required"),
        ("{stages: [{duration: 1s, rate: 200000}]}", "out of range"),
        ("{stages: [{duration: 1s, rate: 5, mix: {udp: 1}}]}", "no 'udp' entry"),
        ("{stages: [{duration: 1s, rate: 5, mix: {http: 0}}]}", "all weights are 0"),
        ("{stages: [{duration: 1s, rate: 5, speed: 2}]}", "unknown key"),
        ("{model: closed, stages: [{duration: 1s, rate: 5}]}", "not with model closed"),
        ("{start_rate: 5}", "only with stages"),
        ("{model: pool, rate: 5}", "arrival.connections: required with model pool"),
        ("{model: open, connections: 3}", "only there"),
        ("{model: pool, connections: 2, stages: [{duration: 1s, concurrency: 2}]}", "pool model"),
        ("{model: pool, connections: 2, rate: 5}", "http flows only"),
        ("{stages: " + str([{"duration": 1, "rate": 1}] * 101) + "}", "more than the limit"),
    ],
)
def test_bad_profiles_are_refused_naming_the_key(arrival: str, reason: str) -> None:
    with pytest.raises(
        ScenarioError, match=r"staged.yaml line \d+: .*" + reason.replace("(", r"\(")
    ):
        scenario(f"arrival: {arrival}\n")


@pytest.mark.parametrize("engine", ["asyncio", "fastloop"])
def test_engines_keep_closed_stages_to_their_windows(servers: Any, engine: str) -> None:
    s = scenario(
        """arrival:
  stages:
    - {duration: 0.5s, rate: 20}
    - {duration: 0.6s, concurrency: 2}
    - {duration: 0.5s, rate: 20}
""",
        port=servers.http,
        max_flows=2000,
    )
    plan = make_plan(s)
    options = RunOptions()
    if engine == "fastloop":
        result = FastRunner(s, plan, options).run()
    else:
        result = asyncio.run(Runner(s, plan, options).run())
    closed = [r for r in result.records if r.stage == 1]
    assert all(r.outcome == "ok" for r in result.records)
    assert len([r for r in result.records if r.stage == 0]) == 10
    assert len([r for r in result.records if r.stage == 2]) == 10
    assert closed and all(0.5 - 0.05 <= r.start_s < 1.1 for r in closed)
    assert result.skipped == len(plan) - len(result.records)
    assert all(r.total_s is not None for r in result.records)
