"""Synthetic run directories in the replay's own flow-log format (lvsprobe.replay.flowlog)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lvsprobe.replay.flowlog import FLOWS_FILE, FlowLogWriter, FlowRecord
from lvsprobe.replay.flowsummary import summarize, write_summary

VIP = "198.18.0.100"
NAMES = ("rs1", "rs2", "rs3", "rs4")
ADDRESSES = {name: f"10.0.0.{i + 1}" for i, name in enumerate(NAMES)}


def flow(
    flow_id: int,
    backend: str | None,
    start_s: float,
    end_s: float | None = None,
    client: str = "198.18.1.1",
    client_port: int | None = None,
    kind: str = "tcp",
    outcome: str = "ok",
    **extra: Any,
) -> FlowRecord:
    """One flow record; defaults describe a short successful TCP flow to the lab VIP."""
    return FlowRecord(
        flow_id=flow_id,
        kind=kind,
        client_address=client,
        client_port=40000 + flow_id if client_port is None else client_port,
        server_address=VIP,
        server_port=80,
        protocol="tcp",
        scheduled_s=start_s,
        start_s=start_s,
        start_unix=1_700_000_000 + start_s,
        connect_s=0.001,
        end_s=start_s + 0.01 if end_s is None else end_s,
        outcome=outcome,
        backend=backend,
        **extra,
    )


def snapshot_doc(
    scheduler: str, weights: Sequence[int], flags: int = 0, persistent: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A `lvsprobe status --json`-shaped document with one service, backends in list order."""
    return {
        "services": [
            {
                "protocol": "TCP",
                "address": VIP,
                "port": 80,
                "fwmark": 0,
                "scheduler": scheduler,
                "flags": flags,
                "persistent": persistent,
                "backends": [
                    {"address": ADDRESSES[NAMES[i]], "port": 80, "weight": w, "stats": {"conns": 0}}
                    for i, w in enumerate(weights)
                ],
            }
        ]
    }


@pytest.fixture
def fb(tmp_path: Path) -> SimpleNamespace:
    """Flow builder: fb.flow(...) records, fb.run(records, scheduler=..., weights=...) -> RUN/,
    fb.names / fb.addresses of the backends (in kernel list order), fb.vip."""
    counter = iter(range(1000))

    def build(
        records: Sequence[FlowRecord],
        scheduler: str | None = "rr",
        weights: Sequence[int] | None = (1, 1, 1),
        flags: int = 0,
        persistent: dict[str, Any] | None = None,
        target: dict[str, Any] | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> Path:
        run = tmp_path / f"run{next(counter)}"
        run.mkdir()
        writer = FlowLogWriter(run / FLOWS_FILE)
        for r in records:
            writer.add(r)
        writer.close()
        write_summary(run, summarize(records))
        doc = {
            "address": VIP,
            "port": 80,
            "protocol": "tcp",
            "fwmark": 0,
            "backends": dict(ADDRESSES),
            "seed": 1,
        }
        doc.update(target or {})
        (run / "target.json").write_text(json.dumps(doc))
        if scheduler is not None and weights is not None:
            snap = snapshot_doc(scheduler, weights, flags, persistent)
            (run / "director.json").write_text(json.dumps(snap))
        if events is not None:
            (run / "events.json").write_text(json.dumps(events))
        return run

    return SimpleNamespace(
        flow=flow, run=build, names=NAMES, addresses=ADDRESSES, vip=VIP, snapshot=snapshot_doc
    )
