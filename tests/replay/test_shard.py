"""Sharding a run across Dask workers (pure): disjoint client slices from what each worker
has, every planned flow in exactly one shard at its global time, refusals that name the
worker, and the merge that keeps each planned flow once."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import LvsprobeError, ScenarioError
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.merge import Merge, ShardStatus, decode_rows, encode_rows, skew_summary
from lvsprobe.replay.plan import make_plan
from lvsprobe.replay.scaleout import parse_workers
from lvsprobe.replay.scenario import parse_scenario
from lvsprobe.replay.shard import (
    WorkerClients,
    assign_clients,
    shard_flows,
    shard_scenario,
    split_plan,
)

SCENARIO = """\
name: shards
target: {address: 127.0.0.1, port: 8080}
clients: {cidr: 127.0.0.10/24, count: 8}
flows: [{kind: http}]
arrival: {model: open, rate: 100, process: poisson}
bounds: {max_flows: 200, max_duration: 60s}
"""


def _workers(*names: str, clients: frozenset[str] | None = None) -> list[WorkerClients]:
    pool = clients if clients is not None else frozenset(f"127.0.0.{10 + i}" for i in range(8))
    return [WorkerClients(f"tcp://127.0.0.1:{4000 + i}", n, pool) for i, n in enumerate(names)]


def test_workers_on_one_host_share_the_pool_interleaved_and_every_flow_once() -> None:
    plan = make_plan(parse_scenario(SCENARIO))
    shards = split_plan(plan, _workers("a", "b"))
    assert [s.clients for s in shards] == [
        ("127.0.0.10", "127.0.0.12", "127.0.0.14", "127.0.0.16"),
        ("127.0.0.11", "127.0.0.13", "127.0.0.15", "127.0.0.17"),
    ]
    assert shards[0].flow_ids.isdisjoint(shards[1].flow_ids)
    assert shards[0].flow_ids | shards[1].flow_ids == {p.flow_id for p in plan}
    assert shards[0].flows == shards[1].flows == 100  # round-robin pick: an even split
    # each flow keeps its global start time: two shards at R/2 are one run at R
    mine = shard_flows(plan, shards[1].clients)
    assert [p.at_s for p in mine] == [p.at_s for p in plan if p.flow_id in shards[1].flow_ids]


def test_workers_on_separate_hosts_drive_the_addresses_each_has() -> None:
    plan = make_plan(parse_scenario(SCENARIO))
    first, second = frozenset(f"127.0.0.{10 + i}" for i in range(3)), None
    second = frozenset(f"127.0.0.{13 + i}" for i in range(5))
    workers = [
        WorkerClients("tcp://10.0.0.1:1", "h1", first),
        WorkerClients("tcp://10.0.0.2:1", "h2", second),
    ]
    shards = split_plan(plan, workers)
    assert set(shards[0].clients) == first and set(shards[1].clients) == second
    assert {p.client_address for p in plan if p.flow_id in shards[0].flow_ids} == first


def test_a_worker_without_client_addresses_is_refused_by_name() -> None:
    workers = [*_workers("a"), WorkerClients("tcp://10.0.0.9:7", "empty-host", frozenset())]
    with pytest.raises(ScenarioError, match=r"worker 'empty-host' \(tcp://10.0.0.9:7\) has none"):
        assign_clients(["127.0.0.10", "127.0.0.11"], workers)


def test_addresses_no_worker_has_and_too_few_addresses_are_refused() -> None:
    with pytest.raises(ScenarioError, match="1 of 2 client addresses are configured on no wo"):
        assign_clients(["127.0.0.10", "192.0.2.1"], _workers("a"))
    with pytest.raises(ScenarioError, match=r"worker 'c' \(.*\) gets no client address"):
        assign_clients(["127.0.0.10", "127.0.0.11"], _workers("a", "b", "c"))
    with pytest.raises(ScenarioError, match="no workers"):
        assign_clients(["127.0.0.10"], [])


def test_a_closed_loop_splits_its_concurrency() -> None:
    scenario = parse_scenario(SCENARIO.replace("model: open", "model: closed, concurrency: 5"))
    assert [shard_scenario(scenario, 2, i).arrival.concurrency for i in (0, 1)] == [3, 2]
    assert shard_scenario(parse_scenario(SCENARIO), 2, 1) == parse_scenario(SCENARIO)
    with pytest.raises(ScenarioError, match="concurrency 5 cannot be split across 6"):
        shard_scenario(scenario, 6, 0)


@settings(max_examples=60, deadline=None)
@given(
    holders=st.lists(st.sets(st.integers(0, 7), min_size=1), min_size=1, max_size=4),
    pick=st.sampled_from(["round-robin", "random", "sequential"]),
)
def test_any_cover_of_the_pool_gives_disjoint_shards_holding_every_flow_once(
    holders: list[set[int]], pick: str
) -> None:
    scenario = parse_scenario(SCENARIO.replace("count: 8", f"count: 8, pick: {pick}"))
    plan = make_plan(scenario)
    workers = [
        WorkerClients(f"tcp://h{i}:1", f"w{i}", frozenset(f"127.0.0.{10 + j}" for j in held))
        for i, held in enumerate(holders)
    ]
    used_addresses = {p.client_address for p in plan}
    held = [w.clients & used_addresses for w in workers]
    feasible = used_addresses <= set().union(*held) and any(
        all(a in h for a, h in zip(choice, held, strict=True))
        for choice in itertools.permutations(sorted(used_addresses), len(workers))
    )
    try:
        shards = split_plan(plan, workers)
    except ScenarioError as exc:  # refused only when no split covers the pool, one each
        assert not feasible, exc
        return
    assert feasible
    ids = [i for s in shards for i in s.flow_ids]
    assert sorted(ids) == [p.flow_id for p in plan]
    for shard, worker in zip(shards, sorted(workers, key=lambda w: w.name), strict=True):
        assert set(shard.clients) <= worker.clients


# --- the merge ------------------------------------------------------------------------------


def _record(flow_id: int, client: str = "127.0.0.10", outcome: str = "ok") -> FlowRecord:
    return FlowRecord(flow_id, "http", client, 40000 + flow_id, "127.0.0.1", 8080, "tcp",
                      0.0, 0.1, 1.7e9, end_s=0.2, outcome=outcome)  # fmt: skip


def _rows(shard: int, *ids: int, **extra: Any) -> dict[str, Any]:
    return {"shard": shard, "kind": "rows", "rows": encode_rows([_record(i) for i in ids]), **extra}


def _two_shards() -> Any:
    plan = make_plan(parse_scenario(SCENARIO.replace("max_flows: 200", "max_flows: 8")))
    return split_plan(plan, _workers("a", "b"))


def test_rows_round_trip_and_garbage_is_refused_by_name() -> None:
    records = [_record(3), _record(4, outcome="reset")]
    assert decode_rows(encode_rows(records), "x") == records
    with pytest.raises(LvsprobeError, match="shard 9: not a chunk of flow-log rows"):
        decode_rows(b"\x00garbage", "shard 9")
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, pa.schema([("flow_id", pa.int64())])) as writer:
        writer.write_table(pa.table({"flow_id": [1]}))
    with pytest.raises(LvsprobeError, match="another flow-log schema"):
        decode_rows(sink.getvalue().to_pybytes(), "shard 1")


def test_the_merge_keeps_each_planned_flow_once_and_names_its_worker() -> None:
    shards = _two_shards()
    merge = Merge(shards)
    assert sorted(shards[0].flow_ids) == [0, 2, 4, 6]
    merge.take({"shard": 0, "kind": "ready"})
    added = merge.take(_rows(0, 0, 2, start_unix=100.0, late_s=0.01, started=3))
    assert [r.worker for r in added] == ["a", "a"]
    # timed from the shard's engine start, 0.01 s after the run's start instant: moved onto
    # the run's timeline, as the snapshots and scheduled_s are
    assert [(r.start_s, r.end_s) for r in added] == [(0.1 + 0.01, 0.2 + 0.01)] * 2
    assert merge.take(_rows(0, 2, 1, 4)) == [merge.records[-1]]  # a repeat, another's: dropped
    state = merge.states[0]
    assert (state.received, state.dropped, state.started, state.start_unix) == (3, 2, 3, 100.0)
    merge.take({"shard": 0, "kind": "done", "sent": 5, "stop_reason": None})
    assert state.status is ShardStatus.DONE and state.lost == 0


def test_a_lost_worker_fails_its_shard_with_the_flows_lost() -> None:
    merge = Merge(_two_shards())
    merge.take(_rows(1, 1, 3, start_unix=100.2))
    merge.take(_rows(0, 0, 2, 4, 6, start_unix=100.0))
    merge.take({"shard": 0, "kind": "done", "sent": 4})
    merge.fail(0, "late news")  # a shard that ended stays ended
    merge.fail(1, "its worker left the cluster mid-run")
    merge.take(_rows(1, 5))  # a message of a failed shard changes nothing
    assert [s.status for s in merge.states.values()] == [ShardStatus.DONE, ShardStatus.FAILED]
    assert merge.failure_line() == (
        "shard 1 on worker 'b' (tcp://127.0.0.1:4001) failed: its worker left the cluster "
        "mid-run; 2 of its 4 flows lost, 2 in the log"
    )
    skew = skew_summary(merge.states.values(), {"tcp://127.0.0.1:4001": -0.05})
    assert skew["start_skew_s"] == pytest.approx(0.2)
    assert skew["dask_start_skew_s"] == pytest.approx(0.15)


def test_the_merged_times_are_on_the_client_clock() -> None:
    """Each shard times its flows from its own engine start, late_s after the start instant
    on a worker clock Dask measured `time-delay` behind: the merge puts them on one clock."""
    shards = _two_shards()
    merge = Merge(shards, {shards[1].worker_address: 0.5})
    (a,) = merge.take(_rows(0, 0, start_unix=100.0, late_s=0.01))
    (b,) = merge.take(_rows(1, 1, start_unix=99.7, late_s=0.2))
    assert (a.start_s, a.end_s, a.start_unix) == pytest.approx((0.11, 0.21, 1.7e9))
    assert (b.start_s, b.end_s, b.start_unix) == pytest.approx((0.8, 0.9, 1.7e9 + 0.5))


def test_rows_a_done_message_counted_but_never_delivered_fail_the_shard() -> None:
    merge = Merge(_two_shards())
    merge.take(_rows(0, 0))
    merge.take({"shard": 0, "kind": "done", "sent": 3})
    assert merge.states[0].reason == "2 rows lost in transit"
    assert merge.states[0].lost == 3
    with pytest.raises(LvsprobeError, match="does not know"):
        merge.take({"kind": "rows"})


def test_the_workers_option_is_parsed_strictly(tmp_path: Any) -> None:
    assert parse_workers("local:3").local_workers == 3
    assert parse_workers("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    (tmp_path / "s.json").write_text("{}")
    assert parse_workers(str(tmp_path / "s.json")).scheduler_file == tmp_path / "s.json"
    for bad in ("local:0", "local", "local:x", "nowhere.json"):
        with pytest.raises(ValueError):
            parse_workers(bad)
    assert dataclasses.asdict(parse_workers("local:1"))["text"] == "local:1"


# --- a shard's engines feeding the sink (no Dask: the sink's send is a list) ----------------


@pytest.mark.parametrize("fast", [True, False], ids=["epoll", "asyncio"])
def test_both_engines_send_a_shards_flows_in_chunks(servers: Any, fast: bool) -> None:
    import threading

    from lvsprobe.replay.shardrun import RowSink, ShardSpec, _drive

    text = SCENARIO.replace("port: 8080", f"port: {servers.http}")
    scenario = parse_scenario(text.replace("max_flows: 200", "max_flows: 40"))
    shard = split_plan(make_plan(scenario), _workers("a", "b"))[1]
    plan = shard_flows(make_plan(scenario), shard.clients)
    spec = ShardSpec(1, scenario, None, shard.clients, shard.flows, shard.digest, fast,
                     "q", "go", "stop", flush_every_s=0.05)  # fmt: skip
    sent: list[dict[str, Any]] = []
    sink = RowSink(sent.append, 1, spec.flush_rows, spec.flush_every_s)
    sink.start = {"start_unix": 1.0, "late_s": 0.0}
    assert _drive(spec, plan, sink, threading.Event()) is None
    sent.append(sink.done(None))  # after the last chunk, which it sends
    merge = Merge([shard])
    for message in sent:
        merge.take(message)
    # chunks sent as the flows finish (every 0.05 s here), not one at the end
    assert len(sent) >= 4 and {m["kind"] for m in sent[:-1]} == {"rows"}
    assert sorted(r.flow_id for r in merge.records) == sorted(shard.flow_ids)
    assert {r.outcome for r in merge.records} == {"ok"} and merge.states[1].start_unix == 1.0
    assert merge.states[1].status is ShardStatus.DONE
