"""Every flow kind against real servers on loopback, from a pool of 127.0.0.x clients."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.replay import flowlog
from lvsprobe.replay.fastloop import FastRunner, fast_eligible
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.plan import make_plan
from lvsprobe.replay.runner import Runner, RunOptions
from lvsprobe.replay.scenario import parse_scenario


@pytest.fixture(params=["asyncio", "fastloop"])
def engine(request: pytest.FixtureRequest) -> str:
    """Both drivers: the asyncio one (every kind) and the epoll loop (tcp/http/udp/syn)."""
    return str(request.param)


def _run(
    port: int,
    flows: str,
    max_flows: int = 6,
    timeout: str = "5s",
    concurrency: int = 2,
    engine: str = "asyncio",
    options: RunOptions | None = None,
) -> list[FlowRecord]:
    text = f"""
name: loopback
seed: 7
target: {{address: 127.0.0.1, port: {port}}}
clients: {{cidr: 127.0.0.2/24, count: 3}}
flows:
{flows}
arrival: {{model: closed, concurrency: {concurrency}}}
bounds: {{max_flows: {max_flows}, max_duration: 20s, flow_timeout: {timeout}}}
"""
    scenario = parse_scenario(text, "loopback.yaml")
    plan = make_plan(scenario)
    if engine == "fastloop":
        assert fast_eligible(plan)
        result = FastRunner(scenario, plan, options or RunOptions()).run()
    else:
        result = asyncio.run(Runner(scenario, plan, options or RunOptions()).run())
    assert len(result.records) == max_flows
    return result.records


def _ok(records: list[FlowRecord]) -> None:
    bad = [(r.flow_id, r.outcome, r.detail) for r in records if r.outcome != "ok"]
    assert not bad


def test_http_close_names_backend_and_binds_pool_addresses(servers: Any, engine: str) -> None:
    records = _run(servers.http, "  - {kind: http, path: /x}", engine=engine)
    _ok(records)
    assert {r.backend for r in records} == {"rs1"}
    assert {r.client_address for r in records} == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    assert all(r.client_port and r.connect_s is not None and r.ttfb_s is not None for r in records)
    assert all(r.requests == 1 and r.in_bytes > 0 and r.out_bytes > 0 for r in records)


def test_http_keepalive_many_requests_and_post(servers: Any, engine: str) -> None:
    records = _run(
        servers.http,
        "  - {kind: http, keepalive: true, requests: 5, payload_bytes: 300, think: 10ms}",
        max_flows=2,
        engine=engine,
    )
    _ok(records)
    assert [r.requests for r in records] == [5, 5]


def test_http_error_status_is_an_outcome(servers: Any, engine: str) -> None:
    records = _run(servers.http, "  - {kind: http, path: /missing}", max_flows=1, engine=engine)
    assert records[0].outcome == "error:http-404"


def test_tcp_echo_and_held_connection_with_heartbeats(servers: Any, engine: str) -> None:
    records = _run(servers.tcp, "  - {kind: tcp, payload_bytes: 1000}", max_flows=2, engine=engine)
    _ok(records)
    assert all(r.backend == "rs2" and r.in_bytes == 1000 + len(b"rs2 echo\n") for r in records)
    held = _run(
        servers.tcp, "  - {kind: tcp, hold: 450ms, heartbeat: 100ms}", max_flows=1, engine=engine
    )
    _ok(held)
    assert held[0].heartbeats >= 4


def test_many_held_connections_lose_no_heartbeat(servers: Any, engine: str) -> None:
    # regression: a receive cancelled by a timer used to drop bytes it had already read,
    # so answered heartbeats went uncounted and flows ended as timeout
    held = _run(
        servers.tcp,
        "  - {kind: tcp, hold: 1500ms, heartbeat: 20ms, heartbeat_timeout: 5s}",
        max_flows=12,
        concurrency=12,
        engine=engine,
    )
    _ok(held)
    assert all(r.heartbeats >= 20 for r in held)


def test_udp_request_reply(servers: Any, engine: str) -> None:
    records = _run(servers.udp, "  - {kind: udp, requests: 3, payload_bytes: 50}", engine=engine)
    _ok(records)
    assert all(r.protocol == "udp" and r.requests == 3 and r.backend == "rs3" for r in records)


def test_tls_handshake_then_resumption_per_client(servers: Any) -> None:
    records = _run(servers.tls, "  - {kind: tls, resume: true}", max_flows=6)
    _ok(records)
    assert all(r.backend == "rs1" and r.tls_version for r in records)
    by_client: dict[str, list[bool | None]] = {}
    for r in sorted(records, key=lambda r: r.flow_id):
        by_client.setdefault(r.client_address, []).append(r.tls_session_reused)
    # the first flow of each client has nothing to resume; later ones resume its session
    assert all(v[0] is False and all(v[1:]) for v in by_client.values())


def test_tls_without_resume_never_reuses(servers: Any) -> None:
    records = _run(servers.tls, "  - {kind: tls}", max_flows=3)
    _ok(records)
    assert not any(r.tls_session_reused for r in records)


@pytest.mark.parametrize("kind", ["ftp-passive", "ftp-active"])
def test_ftp_login_list_retrieve_and_verify(servers: Any, kind: str) -> None:
    if servers.ftp is None:
        pytest.skip("vsftpd is not installed (make test installs it)")
    sha = hashlib.sha256(servers.ftp_file).hexdigest()
    records = _run(servers.ftp, f"  - {{kind: {kind}, sha256: {sha}}}", max_flows=3)
    _ok(records)
    for r in records:
        assert r.backend == "rs1"
        assert r.ftp_checksum_ok is True and r.ftp_sha256 == sha
        assert r.ftp_file_size == len(servers.ftp_file)
        assert r.ftp_data_client_port and r.requests == 2


def test_ftp_wrong_checksum_is_an_error(servers: Any) -> None:
    if servers.ftp is None:
        pytest.skip("vsftpd is not installed (make test installs it)")
    records = _run(servers.ftp, "  - {kind: ftp-passive, sha256: '" + "0" * 64 + "'}", max_flows=1)
    assert records[0].outcome == "error:ftp-sha256"
    assert records[0].ftp_checksum_ok is False


def test_refused_and_timeout_outcomes(engine: str) -> None:
    import socket

    with socket.socket() as idle:
        idle.bind(("127.0.0.1", 0))
        port = idle.getsockname()[1]
        records = _run(port, "  - {kind: http}", max_flows=1, engine=engine)
        assert records[0].outcome == "refused"
        # the port it was refused from: how the director's table names the flow (the health
        # drill joins the kernel's entries for a dead server on it)
        assert records[0].client_port is not None and records[0].client_port > 0
        idle.listen(1)  # accepts, never answers
        records = _run(port, "  - {kind: http}", max_flows=1, timeout="300ms", engine=engine)
    assert records[0].outcome == "timeout"


def test_syn_flows_are_bounded_raw_syns(servers: Any, engine: str) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("raw sockets need root (CAP_NET_RAW)")
    records = _run(servers.http, "  - {kind: syn}", max_flows=20, engine=engine)
    _ok(records)
    assert len({(r.client_address, r.client_port) for r in records}) == 20
    assert all(r.connect_s is None and r.out_bytes == 0 for r in records)


@pytest.mark.timeout(120)
def test_fastloop_survives_a_flow_asking_for_wakeups_in_the_past(
    servers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # regression: a TcpFlow past its hold asked for a wake-up in the past and the epoll
    # loop's timer pass re-ran it forever; now each pass runs only what was due when it began
    from lvsprobe.replay import fastloop
    from lvsprobe.replay.flows import BackendMatcher, Flow, Step

    class Eager(Flow):
        def start(self, now: float) -> Step:
            return Step(wake_at=now - 1.0)

        def timer(self, now: float) -> Step:
            return Step(wake_at=now - 1.0)

        def receive(self, data: bytes, now: float) -> Step:
            return Step()

    monkeypatch.setattr(fastloop, "make_flow", lambda *_: Eager(BackendMatcher("(x)")))
    records = _run(servers.tcp, "  - {kind: tcp}", max_flows=1, timeout="300ms", engine="fastloop")
    assert records[0].outcome == "timeout"


def test_an_ended_flow_leaves_no_stale_fd_in_the_loop() -> None:
    """Regression: a flow that ended with a receive pending closed its socket while the loop
    still watched the fd; the next socket got the same fd number and its connect failed in
    epoll_ctl(MOD) with ENOENT (seen as `error:enoent` on FTP passive data connections)."""
    import socket
    import time

    from lvsprobe.replay.driver import FlowContext, drive_flow, new_record

    with socket.socket() as idle:
        idle.bind(("127.0.0.1", 0))
        idle.listen(4)  # accepts, never answers: the flow ends by timeout, a receive pending
        port = idle.getsockname()[1]
        scenario = parse_scenario(
            f"name: stale\ntarget: {{address: 127.0.0.1, port: {port}}}\n"
            "clients: {cidr: 127.0.0.2/24, count: 1}\nflows: [{kind: http}]\n"
            "arrival: {model: closed, concurrency: 1}\n"
            "bounds: {max_flows: 1, max_duration: 20s, flow_timeout: 300ms}\n",
            "stale.yaml",
        )
        planned = make_plan(scenario)[0]

        async def main() -> None:
            loop = asyncio.get_running_loop()
            start = loop.time()
            record = new_record(planned, 0.0, time.time(), "tcp")
            await drive_flow(planned, record, lambda: loop.time() - start, FlowContext(scenario))
            assert record.outcome == "timeout"
            with socket.socket() as after:  # the lowest free fd: the flow's, just closed
                after.setblocking(False)
                await loop.sock_connect(after, ("127.0.0.1", port))

        asyncio.run(main())


def test_every_finished_flow_reaches_the_journal_once(
    servers: Any, engine: str, tmp_path: Path
) -> None:
    """Both engines hand each flow to the journal as it ends: refused ones and ok ones alike."""
    journal = flowlog.open_journal(tmp_path, planned=8, scenario="loopback")
    options = RunOptions(journal=journal)
    flows = "  - {kind: http}\n  - {kind: tcp, payload_bytes: 8, port: 1}"
    records = _run(servers.http, flows, max_flows=8, engine=engine, options=options)
    journal.flush()
    journaled = flowlog.read_flows(tmp_path).to_pylist()
    assert journaled == [dataclasses.asdict(r) for r in records]
    assert {r.outcome for r in records} == {"ok", "refused"}
