"""Thresholds: parsed and checked at load, judged after the run, exit 3 naming every breach."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import ScenarioError
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.flowsummary import summarize
from lvsprobe.replay.scenario import parse_scenario
from lvsprobe.replay.thresholds import evaluate, parse_threshold


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("p99 < 200ms", {"subject": "latency", "stat": "p99", "value": 0.2, "phase": "total"}),
        ("p(99.9)<=1s", {"stat": "p99.9", "value": 1.0, "op": "<="}),
        ("ttfb uncorrected p50 < 500us", {"phase": "ttfb", "timing": "uncorrected"}),
        ("mean{backend=rs1} > 1ms", {"stat": "mean", "key": "backend", "name": "rs1"}),
        ("errors < 0.1%", {"subject": "errors", "value": 0.001}),
        ("errors{kind=tcp} <= 0.05", {"key": "kind", "value": 0.05}),
        ("share{backend=rs2} >= 30%", {"subject": "share", "value": 0.3}),
        ("rate > 95%", {"subject": "rate", "value": 0.95, "per_s": False}),
        ("rate >= 900/s", {"value": 900.0, "per_s": True}),
    ],
)
def test_threshold_forms(text: str, fields: dict[str, Any]) -> None:
    parsed = parse_threshold(text)
    for key, value in fields.items():
        expected = pytest.approx(value) if isinstance(value, float) else value
        assert getattr(parsed, key) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("p99 < 200", "needs its unit"),
        ("p98 < 2ms", "unknown subject"),
        ("errors < 5ms", "is a share"),
        ("errors < 150%", "at most 100%"),
        ("rate > 5", "rate is N%"),
        ("share{kind=http} > 5%", "per backend"),
        ("p99 = 1s", "is not SUBJECT"),
        ("", "is not SUBJECT"),
    ],
)
def test_bad_thresholds_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_threshold(text)


SCENARIO = """name: gated
target: {address: 127.0.0.1, port: PORT, backends: {rs1: 127.0.0.1, rs9: 127.0.0.9}}
clients: {cidr: 127.0.0.20/24, count: 2}
flows: [{kind: http}]
arrival: {model: open, rate: 200}
bounds: {max_flows: 20, max_duration: 10s}
"""


def test_scenario_thresholds_are_checked_at_load_naming_the_line() -> None:
    good = SCENARIO.replace("PORT", "80") + "thresholds: ['p99 < 1s', 'errors < 1%']\n"
    assert len(parse_scenario(good, "g.yaml").thresholds) == 2
    for bad, reason in [
        ("thresholds: ['p99 < 1 parsec']", "is not SUBJECT"),
        ("thresholds: [5]", "expected text"),
        ("thresholds: ['errors{kind=udp} < 1%']", "no 'udp' flows"),
        ("thresholds: ['p99{stage=3} < 1s']", "has 1 stages"),
        ("thresholds: 'p99 < 1s'", "expected a non-empty list"),
    ]:
        with pytest.raises(ScenarioError, match=r"g.yaml line 7: thresholds.*" + reason):
            parse_scenario(SCENARIO.replace("PORT", "80") + bad + "\n", "g.yaml")
    closed = SCENARIO.replace("model: open, rate: 200", "model: closed, concurrency: 2")
    with pytest.raises(ScenarioError, match="closed model plans no rate"):
        parse_scenario(closed.replace("PORT", "80") + "thresholds: ['rate > 90%']\n", "g.yaml")


def _rec(flow_id: int, backend: str, outcome: str = "ok") -> FlowRecord:
    rec = FlowRecord(flow_id, "http", "127.0.0.2", 1, "127.0.0.1", 80, "tcp", 0.0, 0.0, 0.0)
    rec.end_s, rec.outcome, rec.backend = 0.010, outcome, backend
    rec.settle()
    return rec


def test_evaluate_judges_each_threshold_and_an_empty_group_breaches() -> None:
    rows = [_rec(i, "rs1" if i % 4 else "rs2", "ok" if i else "reset") for i in range(100)]
    summary = summarize(rows, rates={"planned_per_s": 100.0, "achieved_per_s": 90.0,
                                     "achieved_ratio": 0.9})  # fmt: skip
    texts = ["p99 < 20ms", "errors < 0.5%", "share > 10%", "share{backend=rs2} < 20%",
             "rate > 95%", "p99{backend=rs3} < 1s", "rate > 80/s"]  # fmt: skip
    result = evaluate([parse_threshold(t) for t in texts], summary, rows, ["rs1", "rs2", "rs9"])
    verdicts = {r["threshold"]: (r["passed"], r["observed"]) for r in result["results"]}
    assert verdicts["p99 < 20ms"] == (True, "10.01ms")
    assert verdicts["errors < 0.5%"] == (False, "1.000% of 100")
    assert verdicts["share > 10%"] == (False, "rs9 0.00%")  # a named backend that got nothing
    assert verdicts["share{backend=rs2} < 20%"][0] is False
    assert verdicts["rate > 95%"] == (False, "90.0% (90.0 of 100.0/s)")
    assert verdicts["p99{backend=rs3} < 1s"] == (False, "no flows")
    assert verdicts["rate > 80/s"][0] is True
    assert result["passed"] is False


def test_run_exits_3_naming_every_breached_threshold(tmp_path: Path, servers: Any) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("PORT", str(servers.http)) + "thresholds: ['p99 < 10s']\n")
    out = tmp_path / "run"
    args = ["replay", "run", str(path), "--out", str(out), "--no-progress"]
    result = CliRunner().invoke(cli, [*args, "--threshold", "errors < 1%"])
    assert result.exit_code == ExitCode.OK, result.output
    assert "✓ p99 < 10s" in result.output and "p99.9" in result.output
    gates = ["--threshold", "p50 < 1us", "--threshold", "share{backend=rs9} > 10%"]
    result = CliRunner().invoke(cli, [*args, "--force", "--json", *gates])
    assert result.exit_code == ExitCode.CHECK_FAILED
    breached = [line for line in result.stderr.splitlines() if "threshold breached" in line]
    assert len(breached) == 2 and "p50 < 1us" in breached[0] and "rs9 0.00%" in breached[1]
    summary = json.loads(result.stdout)
    assert [r["passed"] for r in summary["thresholds"]["results"]] == [True, False, False]
    assert summary["rates"]["achieved_ratio"] > 0


def test_a_bad_threshold_flag_exits_2_before_any_traffic(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("PORT", "9"))
    for text in ("p99 <", "errors{kind=ftp-active} < 1%"):
        result = CliRunner().invoke(
            cli, ["replay", "run", str(path), "--out", str(tmp_path / "r"), "--threshold", text]
        )
        assert result.exit_code == ExitCode.USAGE and "--threshold" in result.stderr
    assert not (tmp_path / "r").exists()
