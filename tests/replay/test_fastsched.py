"""The epoll engine's schedule: its timers (fastsched.py), and the loop around them on real
loopback sockets."""

from __future__ import annotations

import gc
import math
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsprobe.replay.fastloop import FastRunner
from lvsprobe.replay.fastsched import Arrivals, Timers
from lvsprobe.replay.flowmix import FlowMix
from lvsprobe.replay.plan import PlannedFlow, make_plan
from lvsprobe.replay.profile import Stage
from lvsprobe.replay.runner import RunOptions
from lvsprobe.replay.scenario import parse_scenario


def test_nothing_armed_is_never_due() -> None:
    timers: Timers[str] = Timers()
    assert timers.next_s() == math.inf and timers.due(1e9) == []


@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.sampled_from([0.5, 2.0, 7.0]), st.booleans()),
        max_size=40,
    ),
    st.floats(0, 120),
)
def test_timers_give_exactly_what_is_due_whatever_the_spans(
    arms: list[tuple[float, float, bool]], now: float
) -> None:
    """Deadlines of several spans (armed in start order, as the engine arms them) and
    wake-ups at any time: due(now) gives each one due, once; next_s is the earliest left."""
    timers: Timers[int] = Timers()
    armed = {}
    for item, (start, span, wakeup) in enumerate(sorted(arms)):
        at = start if wakeup else start + span
        if wakeup:
            timers.wake(at, item)
        else:
            timers.deadline(span, at, item)
        armed[item] = at
    due = timers.due(now)
    assert sorted(due) == sorted(i for i, at in armed.items() if at <= now)
    left = [at for i, at in armed.items() if at > now]
    assert timers.next_s() == min(left, default=math.inf)
    assert timers.due(now) == []


def _scenario(port: int, flows: str, max_flows: int, timeout: str) -> str:
    return (
        f"name: spans\ntarget: {{address: 127.0.0.1, port: {port}}}\n"
        f"clients: {{cidr: 127.0.0.2/24, count: 3}}\nflows:\n{flows}\n"
        "arrival: {model: closed, concurrency: 4}\n"
        f"bounds: {{max_flows: {max_flows}, max_duration: 30s, flow_timeout: {timeout}}}\n"
    )


def test_flows_of_different_spans_each_time_out_at_their_own_deadline() -> None:
    """A held tcp flow (hold + timeout) and http flows (timeout) against a server that never
    answers: each ends by timeout, at or after its own deadline, never another's."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the backlog accepts: connects succeed, nothing is ever read
        port = silent.getsockname()[1]
        flows = "  - {kind: http, weight: 3}\n  - {kind: tcp, hold: 600ms, heartbeat: 10s}"
        scenario = parse_scenario(_scenario(port, flows, 8, "300ms"), "spans.yaml")
        plan = make_plan(scenario)
        assert {p.kind for p in plan} == {"http", "tcp"}
        result = FastRunner(scenario, plan, RunOptions()).run()
    assert len(result.records) == 8
    for record in result.records:
        span = 0.3 + (0.6 if record.kind == "tcp" else 0.0)
        assert record.outcome == "timeout", (record.kind, record.outcome, record.detail)
        assert record.end_s - record.start_s >= span - 1e-3, record
        assert f"within {span:.1f}s" in (record.detail or "")


def test_closing_without_unregistering_lets_the_next_socket_reuse_the_fd(servers: object) -> None:
    """close() drops a socket from the epoll set: one connection after another (each taking
    the fd number the last one freed) all complete, none is lost to a stale registration."""
    text = _scenario(servers.http, "  - {kind: http}", 40, "5s")  # type: ignore[attr-defined]
    scenario = parse_scenario(text.replace("concurrency: 4", "concurrency: 1"), "reuse.yaml")
    result = FastRunner(scenario, make_plan(scenario), RunOptions()).run()
    assert [r.outcome for r in result.records] == ["ok"] * 40


@pytest.mark.parametrize("kind", [socket.SOCK_STREAM, socket.SOCK_DGRAM])
def test_flow_sockets_are_born_non_blocking_and_bound(kind: int) -> None:
    from lvsprobe.replay.driver import _socket

    with _socket("127.0.0.3", "127.0.0.1", kind) as sock:
        assert sock.gettimeout() == 0.0 and not sock.getblocking()
        assert sock.type == kind and sock.getsockname()[0] == "127.0.0.3"


def _live_conns() -> int:
    from lvsprobe.replay.fastconn import Conn

    return sum(isinstance(o, Conn) for o in gc.get_objects())


def test_a_finished_flow_leaves_only_its_record(servers: object) -> None:
    """Its timers (the deadline lasts the 10 s flow timeout) keep nothing of a flow that has
    ended: its Conn, socket and sans-IO flow are freed as it closes, not held for the cyclic
    collector to walk again and again (0.7 s of a 10 s run went to that)."""
    text = _scenario(servers.http, "  - {kind: http}", 30, "10s")  # type: ignore[attr-defined]
    scenario = parse_scenario(text, "freed.yaml")
    runner = FastRunner(scenario, make_plan(scenario), RunOptions())
    result = runner.run()
    assert [r.outcome for r in result.records] == ["ok"] * 30
    assert _live_conns() == 0  # the runner, its timers and records are still referenced here


def test_the_loop_runs_with_the_collector_off_and_leaves_it_as_it_was(servers: object) -> None:
    """While the loop runs, no collection walks the plan and the growing records; after it,
    the collector is on again if it was (and stays off if the caller had turned it off)."""
    text = _scenario(servers.http, "  - {kind: http}", 20, "10s")  # type: ignore[attr-defined]
    scenario = parse_scenario(text, "quiet.yaml")
    seen: list[bool] = []
    options = RunOptions(on_progress=lambda _: seen.append(gc.isenabled()))
    for enabled in (True, False):
        seen.clear()
        (gc.enable if enabled else gc.disable)()
        try:
            FastRunner(scenario, make_plan(scenario), options).run()
            assert seen[0] is False  # the first progress report: in the loop
            assert gc.isenabled() is enabled
        finally:
            gc.enable()


def test_the_loop_makes_no_garbage_cycles(servers: object) -> None:
    """What the loop leaves behind, flows ok or failed (refused, timed out, an HTTP error,
    a tcp echo, udp), is freed by reference count: nothing is left for the collector, which
    the loop keeps off."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        runs = [
            (servers.http, "  - {kind: http, weight: 3}\n  - {kind: http, path: /missing}"),  # type: ignore[attr-defined]
            (servers.tcp, "  - {kind: tcp, payload_bytes: 100}\n  - {kind: tcp, port: 1}"),  # type: ignore[attr-defined]
            (servers.udp, "  - {kind: udp, requests: 2}"),  # type: ignore[attr-defined]
            (port, "  - {kind: http}"),
        ]
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for target, flows in runs:
                scenario = parse_scenario(_scenario(target, flows, 12, "300ms"), "cycles.yaml")
                FastRunner(scenario, make_plan(scenario), RunOptions()).run()
            gc.collect()
            left = [type(o).__name__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    assert left == []


class _CountedPlan(list):  # type: ignore[type-arg]
    """A plan that counts the flows read from it."""

    reads = 0

    def __getitem__(self, index: Any) -> Any:
        _CountedPlan.reads += 1
        return super().__getitem__(index)


def _stage_plan(flows: int) -> list[PlannedFlow]:
    """Two closed stages of `flows` flows each, stage 0 over at 1 s, stage 1 from 1 s to 2 s."""
    mix = FlowMix("http")
    return [
        PlannedFlow(i, "http", "127.0.0.2", "127.0.0.1", 80, None, 0, mix, i // flows)
        for i in range(2 * flows)
    ]


def test_a_closed_stage_that_ends_skips_its_rest_in_one_count() -> None:
    """Regression: the flows a closed stage had no time for were skipped one by one inside the
    loop (166k skips in a 5 s run); now they are counted, the plan read a few times, not once
    per flow skipped. The next stage's flows then start as before."""
    flows = 100_000
    plan = _CountedPlan(_stage_plan(flows))
    stages = (Stage(1.0, concurrency=2), Stage(1.0, concurrency=2))
    arrivals = Arrivals(plan, stages)
    started: list[tuple[int, float]] = []
    arrivals.start_due(0.0, lambda: 0.0, lambda p, t: started.append((p.flow_id, t)), bool)
    assert started == [(0, 0.0), (1, 0.0)]  # the stage's 2 slots
    _CountedPlan.reads = 0
    arrivals.start_due(1.5, lambda: 1.5, lambda p, t: started.append((p.flow_id, t)), bool)
    assert arrivals.skipped == flows - 2
    assert started[2:] == [(flows, 1.5), (flows + 1, 1.5)]  # stage 1's 2 slots
    assert _CountedPlan.reads < 100


def test_a_stop_starts_nothing_more() -> None:
    arrivals = Arrivals(_stage_plan(10), (Stage(1.0, concurrency=4), Stage(1.0, concurrency=4)))
    started: list[int] = []

    def start(planned: PlannedFlow, _: float) -> None:
        started.append(planned.flow_id)
        arrivals.stopped = True  # (a signal handler's stop, as a flow starts)

    arrivals.start_due(0.0, lambda: 0.0, start, bool)
    assert started == [0] and arrivals.next is not None and arrivals.next.flow_id == 1


@given(
    st.lists(
        st.one_of(
            st.builds(lambda d, r: f"{{duration: {d}s, rate: {r}}}", st.integers(1, 3),
                      st.integers(1, 40)),
            st.builds(lambda d, c: f"{{duration: {d}s, concurrency: {c}}}", st.integers(1, 3),
                      st.integers(1, 4)),
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(1, 300),
)  # fmt: skip
def test_a_plan_lists_its_flows_stage_by_stage(stages: list[str], max_flows: int) -> None:
    """What the bulk skip relies on: each stage's flows are one run of the plan."""
    text = _scenario(80, "  - {kind: http}", max_flows, "5s").replace(
        "arrival: {model: closed, concurrency: 4}", f"arrival: {{stages: [{', '.join(stages)}]}}"
    )
    plan = make_plan(parse_scenario(text.replace("max_duration: 30s", "max_duration: 20s"), "s"))
    assert [p.stage for p in plan] == sorted(p.stage for p in plan)
