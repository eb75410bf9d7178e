"""The scenario catalogue in replays/: every file loads, says what it checks, and is bounded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from lvsprobe.lab.backends import ftp_file
from lvsprobe.replay.plan import make_plan
from lvsprobe.replay.scenario import load_scenario

REPLAYS = Path(__file__).resolve().parents[2] / "replays"
CATALOGUE = sorted(REPLAYS.glob("*.yaml"))
REQUIRED = {
    "rr-fairness",
    "wrr-weights",
    "lc-long-connections",
    "sh-many-clients",
    "ftp-active",
    "ftp-passive",
    "tls-persistence",
    "long-lived-failover",
    "conn-table-fill",
    "recorded-example",
}


def test_catalogue_is_complete() -> None:
    assert {p.stem for p in CATALOGUE} >= REQUIRED


@pytest.mark.parametrize("path", CATALOGUE, ids=lambda p: p.stem)
def test_scenario_loads_and_is_bounded(path: Path) -> None:
    scenario = load_scenario(path)
    assert len(scenario.description.split()) >= 15, "say what it checks"
    assert scenario.expect, "state the expected outcome"
    assert scenario.bounds.max_flows <= 10_000 and scenario.bounds.max_duration_s <= 600
    plan = make_plan(scenario)
    assert 0 < len(plan) <= scenario.bounds.max_flows
    assert all(a.startswith("198.18.") for a in scenario.clients.addresses)
    assert scenario.target.address.startswith("198.18.")


def test_ftp_checksums_are_the_lab_backends_files() -> None:
    for name in ("ftp-active", "ftp-passive"):
        mix = load_scenario(REPLAYS / f"{name}.yaml").flows[0]
        assert mix.sha256 is not None
        for backend, digest in mix.sha256.items():
            assert hashlib.sha256(ftp_file(backend)).hexdigest() == digest
            assert len(ftp_file(backend)) == mix.size
