"""Fairness on synthetic flow logs: correct directors pass, misbehaving ones flip the verdict."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from click.testing import CliRunner

from lvsprobe.analyze import hashing, inputs, schedulers
from lvsprobe.analyze.fairness import analyze_counts, analyze_fairness, jain_index
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode


def sequential(fb: SimpleNamespace, picks: list[int]) -> list[Any]:
    """One short flow per pick, 50 ms apart (each one done before the next starts)."""
    return [fb.flow(k, fb.names[p], start_s=0.05 * k) for k, p in enumerate(picks)]


def run_fairness(run: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["analyze", "fairness", str(run), *args])
    return res.exit_code, res.output


def analyze(run: Path, **kw: object):  # type: ignore[no-untyped-def]
    loaded = inputs.load_run(run)
    model = inputs.service_model(loaded, **kw)  # type: ignore[arg-type]
    return analyze_fairness(loaded.flows, model, loaded.service_label())


def test_rr_equal_weights_exact_passes_and_writes_report(fb: SimpleNamespace) -> None:
    run = fb.run(sequential(fb, schedulers.rr_sequence([1, 1, 1], 30)))
    code, out = run_fairness(run)
    assert code == ExitCode.OK, out
    assert "30/30 picks follow" in out
    assert (run / "analysis" / "fairness.json").is_file()
    assert (run / "analysis" / "fairness.html").read_text().count("<script") >= 1


def test_rr_swap_flips_the_verdict(fb: SimpleNamespace) -> None:
    picks = schedulers.rr_sequence([1, 1, 1], 30)
    picks[10], picks[11] = picks[11], picks[10]
    code, out = run_fairness(fb.run(sequential(fb, picks)))
    assert code == ExitCode.CHECK_FAILED
    assert "FAIL" in out


def test_rr_concurrent_flows_may_arrive_in_any_order(fb: SimpleNamespace) -> None:
    picks = schedulers.rr_sequence([1, 1, 1], 9)
    picks[3], picks[4] = picks[4], picks[3]
    recs = sequential(fb, picks)
    recs[4].start_s = recs[3].start_s + 0.0001  # within the tie window: order unknown
    result = analyze(fb.run(recs))
    assert result.passed, result.checks


def test_wrr_432_matches_fresh_service_sequence(fb: SimpleNamespace) -> None:
    picks = schedulers.wrr_sequence([4, 3, 2], 36, schedulers.wrr_after_adds([4, 3, 2]))
    result = analyze(fb.run(sequential(fb, picks), scheduler="wrr", weights=(4, 3, 2)))
    assert result.passed
    assert "freshly built service" in result.checks[0].detail
    assert result.counts == [16, 12, 8]  # ABC, then AABABCABC x3, AABABC


def test_wrr_weights_changed_behind_the_analyzers_back_fails(fb: SimpleNamespace) -> None:
    picks = schedulers.wrr_sequence([3, 3, 2], 32)
    result = analyze(fb.run(sequential(fb, picks), scheduler="wrr", weights=(4, 3, 2)))
    assert not result.passed
    assert result.mismatches


def test_wlc_held_connections_follow_the_model(fb: SimpleNamespace) -> None:
    picks = schedulers.held_sequence("wlc", [3, 1], 40)
    recs = [fb.flow(k, fb.names[p], start_s=0.05 * k, end_s=100.0) for k, p in enumerate(picks)]
    assert analyze(fb.run(recs, scheduler="wlc", weights=(3, 1))).passed


def test_lc_tie_rule_violation_fails(fb: SimpleNamespace) -> None:
    # three idle equal servers: the kernel must take rs1 first (first in list order)
    picks = [1, 0, 2, 0, 1, 2]
    recs = [fb.flow(k, fb.names[p], start_s=0.05 * k, end_s=100.0) for k, p in enumerate(picks)]
    result = analyze(fb.run(recs, scheduler="lc", weights=(1, 1, 1)))
    assert not result.passed
    assert result.mismatches[0]["expected"] == "rs1"


def test_lc_with_closed_flows_counts_inactive(fb: SimpleNamespace) -> None:
    # rs1 holds one closed (TIME_WAIT, inactive) connection: rs2 wins the next pick
    recs = [
        fb.flow(0, "rs1", 0.0, 0.01),
        fb.flow(1, "rs2", 1.0, 100.0),
        fb.flow(2, "rs1", 2.0, 100.0),
    ]
    result = analyze(fb.run(recs, scheduler="lc", weights=(1, 1)))
    assert result.passed, result.mismatches


def clients(n: int) -> list[str]:
    return [f"198.18.{i // 250}.{i % 250 + 1}" for i in range(n)]


def test_sh_with_256_clients_exact_and_chi_square(fb: SimpleNamespace) -> None:
    table = hashing.sh_table([1, 1, 1])
    recs = []
    for k, c in enumerate(clients(256) * 2):
        pick = hashing.sh_pick(table, [1, 1, 1], ipaddress.ip_address(c))
        recs.append(fb.flow(k, fb.names[pick], 0.01 * k, client=c))  # type: ignore[index]
    result = analyze(fb.run(recs, scheduler="sh", weights=(1, 1, 1)))
    assert result.passed
    assert any(c.p_value is not None for c in result.checks)


def test_sh_client_on_the_wrong_backend_fails(fb: SimpleNamespace) -> None:
    table = hashing.sh_table([1, 1, 1])
    recs = []
    for k, c in enumerate(clients(60)):
        pick = hashing.sh_pick(table, [1, 1, 1], ipaddress.ip_address(c))
        recs.append(fb.flow(k, fb.names[pick], 0.01 * k, client=c))  # type: ignore[index]
    recs[7].backend = fb.names[(fb.names.index(recs[7].backend) + 1) % 3]  # type: ignore[arg-type]
    result = analyze(fb.run(recs, scheduler="sh", weights=(1, 1, 1)))
    assert not result.passed
    assert result.mismatches[0]["flow_id"] == 7


def test_mh_exact_mapping(fb: SimpleNamespace) -> None:
    dests = [(ipaddress.ip_address(f"10.0.0.{i}"), 80, 1) for i in (1, 2, 3)]
    table = hashing.mh_table(dests)
    recs = []
    for k, c in enumerate(clients(300)):
        pick = hashing.mh_pick(table, [1, 1, 1], ipaddress.ip_address(c))
        recs.append(fb.flow(k, fb.names[pick], 0.01 * k, client=c))  # type: ignore[index]
    run = fb.run(recs, scheduler="mh", weights=(1, 1, 1))
    assert analyze(run).passed
    assert not analyze(run, scheduler="sh").passed  # scheduler changed: verdict flips


def test_counter_deltas(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(0, "rs1", 0.0)], scheduler="wrr", weights=(4, 3, 2))
    model = inputs.service_model(inputs.load_run(run))
    assert analyze_counts({"rs1": 8, "rs2": 6, "rs3": 4}, model, "svc").passed
    assert not analyze_counts({"rs1": 6, "rs2": 6, "rs3": 6}, model, "svc").passed


def test_jain_index() -> None:
    assert jain_index([10, 10], [0.5, 0.5]) == 1.0
    assert jain_index([20, 0], [0.5, 0.5]) == 0.5


def test_weights_flag_overrides_and_teaches(fb: SimpleNamespace) -> None:
    run = fb.run(sequential(fb, schedulers.wrr_sequence([2, 1], 9)), scheduler=None)
    code, out = run_fairness(run)
    assert code == ExitCode.ERROR
    assert "pass --scheduler" in out
    code, out = run_fairness(run, "--scheduler", "wrr", "--weights", "rs1=2,rs2=1")
    assert code == ExitCode.OK, out
