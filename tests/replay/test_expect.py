"""`expect:` checks against hand-made flow logs: each check passes and fails as documented."""

from __future__ import annotations

from typing import Any

import pytest

from lvsprobe.errors import ScenarioError
from lvsprobe.replay.expect import check_expectations
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.scenario import parse_scenario


def _rec(flow_id: int, client: str, backend: str, **kw: Any) -> FlowRecord:
    base: dict[str, Any] = dict(
        flow_id=flow_id,
        kind="http",
        client_address=client,
        client_port=1000 + flow_id,
        server_address="v",
        server_port=80,
        protocol="tcp",
        scheduled_s=0.0,
        start_s=0.0,
        start_unix=0.0,
        outcome="ok",
        backend=backend,
        conn_backend=backend,
        attribution_agrees=True,
    )
    base.update(kw)
    return FlowRecord(**base)


GOOD = [_rec(0, "a", "rs1"), _rec(1, "b", "rs2"), _rec(2, "a", "rs1"), _rec(3, "b", "rs2")]


@pytest.mark.parametrize(
    ("expect", "records", "fails"),
    [
        ({"all_ok": True}, GOOD, False),
        ({"all_ok": True}, [*GOOD, _rec(4, "c", "rs1", outcome="reset")], True),
        ({"shares": {"rs1": 2, "rs2": 2}}, GOOD, False),
        ({"shares": {"rs1": 3, "rs2": 1}}, GOOD, True),
        ({"equal_shares": True, "backends_used": 2}, GOOD, False),
        ({"equal_shares": True}, [*GOOD, _rec(4, "c", "rs1"), _rec(5, "d", "rs1")], True),
        ({"sticky_per_client": True}, GOOD, False),
        ({"sticky_per_client": True}, [*GOOD, _rec(4, "a", "rs2")], True),
        ({"attribution_agrees": True}, GOOD, False),
        ({"attribution_agrees": True}, [_rec(0, "a", "rs1", attribution_agrees=None)], True),
        (
            {"tls_resumed_after_first": True},
            [
                _rec(0, "a", "rs1", kind="tls", tls_session_reused=False),
                _rec(1, "a", "rs1", kind="tls", tls_session_reused=True),
            ],
            False,
        ),
        (
            {"tls_max_resumed_fraction": 0.4},
            [
                _rec(0, "a", "rs1", kind="tls", tls_session_reused=False),
                _rec(1, "a", "rs1", kind="tls", tls_session_reused=True),
            ],
            True,
        ),
        (
            {"ftp_checksums": True},
            [_rec(0, "a", "rs1", kind="ftp-active", ftp_checksum_ok=True)],
            False,
        ),
        ({"ftp_checksums": True}, GOOD, True),
        ({"min_heartbeats": 5}, [_rec(0, "a", "rs1", kind="tcp", heartbeats=4)], True),
    ],
)
def test_checks(expect: dict[str, Any], records: list[FlowRecord], fails: bool) -> None:
    assert bool(check_expectations(expect, records)) is fails


def test_unknown_check_is_a_scenario_error_with_line() -> None:
    text = (
        "target: {address: 198.18.1.100, port: 80}\nclients: {cidr: 198.18.16.1/24}\n"
        "flows: [{kind: http}]\nbounds: {max_flows: 1, max_duration: 1s}\n"
        "expect:\n  all_ok: true\n  fast: true\n"
    )
    with pytest.raises(ScenarioError, match=r"e\.yaml line 7: expect\.fast: unknown key"):
        parse_scenario(text, "e.yaml")
