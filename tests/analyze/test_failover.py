"""Failover classification on synthetic long-lived runs, sync on and off."""

from __future__ import annotations

from types import SimpleNamespace

from click.testing import CliRunner

from lvsprobe.analyze import inputs
from lvsprobe.analyze.failover import analyze_failover, classify, expectation
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode

FAILOVER = 10.0


def long_lived(fb: SimpleNamespace, n: int, broken: set[int], outcome: str = "reset") -> list:
    recs = []
    for k in range(n):
        dead = k in broken
        recs.append(
            fb.flow(
                k,
                fb.names[k % 3],
                start_s=0.1 * k,
                end_s=FAILOVER + 0.5 if dead else 30.0,
                outcome=outcome if dead else "ok",
                heartbeats=100,
            )
        )
    # new connections after the failover: refused for 3.6 s, then fine
    for j in range(20):
        t = FAILOVER + 0.5 * j
        ok = t >= FAILOVER + 3.6
        recs.append(
            fb.flow(n + j, fb.names[j % 3] if ok else None, t, outcome="ok" if ok else "timeout")
        )
    return recs


def test_classify() -> None:
    assert classify("ok", None) == "survived"
    assert classify("reset", None) == "reset"
    assert classify("error:wrong_backend", "rs2 answered") == "wrong_backend"
    assert classify("error:eof", None) == "error"


def test_sync_off_breaks_nearly_all(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 50, set(range(50))))
    result = analyze_failover(inputs.load_run(run).flows, FAILOVER, sync=False)
    assert result.long_lived == 50
    assert result.fates == {"reset": 50}
    assert result.recovery_s is not None and abs(result.recovery_s - 4.0) < 1e-6
    assert result.new_failed == 8
    assert expectation(result)["passed"] is True


def test_sync_on_keeps_established_and_counts_the_gaps(fb: SimpleNamespace) -> None:
    recs = long_lived(fb, 50, set())
    # one connection opened 50 ms before the failover: fewer than 3 packets, not synced
    recs.append(fb.flow(999, "rs1", FAILOVER - 0.05, end_s=FAILOVER + 1, outcome="reset"))
    run = fb.run(recs)
    result = analyze_failover(inputs.load_run(run).flows, FAILOVER, sync=True)
    assert result.gaps["few_packets"] == 1
    assert result.broken_total == 1 and result.broken_synced == 0
    assert expectation(result)["passed"] is True


def test_sync_on_losing_synced_connections_fails(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 50, {3, 4}))
    result = analyze_failover(inputs.load_run(run).flows, FAILOVER, sync=True)
    assert result.broken_synced == 2
    assert expectation(result)["passed"] is False


def test_cli_compares_runs_and_reads_events(fb: SimpleNamespace) -> None:
    events = [{"t_s": FAILOVER, "event": "failover"}, {"t_s": 25.0, "event": "failback"}]
    off = fb.run(long_lived(fb, 30, set(range(30))), events=events, target={"sync": False})
    on = fb.run(long_lived(fb, 30, set()), events=events, target={"sync": True})
    res = CliRunner().invoke(cli, ["analyze", "failover", str(off), str(on)])
    assert res.exit_code == ExitCode.OK, res.output
    assert "30/30 broke" in res.output and "0/30 broke" in res.output
    html = (off / "analysis" / "failover.html").read_text()
    assert "Open connections over time" in html
    res = CliRunner().invoke(cli, ["analyze", "failover", str(on), "--sync", "off"])
    assert res.exit_code == ExitCode.CHECK_FAILED


def test_no_failover_time_or_nothing_open(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 5, set()))
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run)])
    assert res.exit_code == ExitCode.ERROR and "pass --failover-at" in res.output
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run), "--failover-at", "500"])
    assert res.exit_code == ExitCode.ERROR and "no connection was open" in res.output


def test_breaks_after_the_failback_are_counted_apart(fb: SimpleNamespace) -> None:
    # sync on: every connection rode through the failover, then died at the fail-back (25 s)
    recs = [
        fb.flow(k, fb.names[k % 3], 0.1 * k, end_s=27.0, outcome="timeout", heartbeats=100)
        for k in range(10)
    ]
    run = fb.run(recs)
    result = analyze_failover(inputs.load_run(run).flows, FAILOVER, 25.0, sync=True)
    assert result.lost_at == {"failback": 10}
    assert result.broken_synced == 0 and result.loss_ratio == 0.0
    assert expectation(result)["passed"] is True
    result = analyze_failover(inputs.load_run(run).flows, FAILOVER, 25.0, sync=False)
    assert expectation(result)["passed"] is False  # no sync, yet nothing broke at failover
