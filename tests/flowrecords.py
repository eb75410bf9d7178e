"""A finished HTTP flow's record for tests of what stores or reads flow records (imported as
`tests.flowrecords`): flow `flow_id` from 127.0.0.2 to 127.0.0.1:8080, started 0.1 s after
the one before and lasting 10 ms; `fields` override any of its fields."""

from __future__ import annotations

from typing import Any

from lvsprobe.replay.flowrecord import FlowRecord


def flow_record(flow_id: int, **fields: Any) -> FlowRecord:
    """The record of flow `flow_id`, ok unless `fields` say otherwise."""
    values: dict[str, Any] = dict(
        flow_id=flow_id,
        kind="http",
        client_address="127.0.0.2",
        client_port=40000 + flow_id,
        server_address="127.0.0.1",
        server_port=8080,
        protocol="tcp",
        scheduled_s=0.1 * flow_id,
        start_s=0.1 * flow_id,
        start_unix=1.7e9,
        end_s=0.1 * flow_id + 0.01,
        outcome="ok",
    )
    return FlowRecord(**{**values, **fields})
