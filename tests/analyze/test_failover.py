"""Failover classification on synthetic long-lived runs, sync on and off."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from lvsprobe.analyze import inputs
from lvsprobe.analyze.drillfiles import director_table, read_drill
from lvsprobe.analyze.failover import analyze_failover, classify, expectation
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import AnalysisError

FAILOVER = 10.0
HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Origin Expires\n"


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
                client=f"198.18.16.{k + 1}",
                outcome=outcome if dead else "ok",
                heartbeats=100,
            )
        )
    # new connections after the failover: refused for 3.6 s, then fine
    for j in range(20):
        t = FAILOVER + 0.5 * j
        ok = t >= FAILOVER + 3.6
        recs.append(
            fb.flow(
                n + j,
                fb.names[j % 3] if ok else None,
                t,
                client="198.18.17.1",
                outcome="ok" if ok else "timeout",
            )
        )
    return recs


def conn_sync_row(client: str, port: int, state: str = "ESTABLISHED", origin: str = "SYNC") -> str:
    """One /proc/net/ip_vs_conn_sync row (addresses in hex, as the kernel prints them)."""
    hexa = f"{int(ipaddress.ip_address(client)):08X}"
    return f"TCP {hexa} {port:04X} C6120064 0050 0A000001 0050 {state:<11} {origin:<6}     800\n"


def drill_files(
    run: Path,
    synced: list[tuple[str, int]],
    sync: bool = True,
    via_new: int | None = None,
    sysctls: dict[str, dict[str, str]] | None = None,
) -> None:
    """What the lab's drill writes: events.json (object form), the backup's table before the
    failover, and (with `via_new`: that probe's flow id) its table before the fail-back."""
    (run / "directors").mkdir()
    table = HEADER + "".join(conn_sync_row(a, p) for a, p in synced)
    (run / "directors" / "before-failover-lvs2.txt").write_text(table)
    tables = [{"when": "before-failover", "ns": "lvs2", "t_s": 9.5,
               "file": "directors/before-failover-lvs2.txt"}]  # fmt: skip
    if via_new is not None:
        later = table + conn_sync_row("198.18.17.1", 40000 + via_new, "TIME_WAIT", "LOCAL")
        # an earlier probe as a copy from the old director (SYNC): not evidence of recovery
        later += conn_sync_row("198.18.17.1", 40000 + via_new - 2, "TIME_WAIT")
        (run / "directors" / "before-failback-lvs2.txt").write_text(later)
        tables.append({"when": "before-failback", "ns": "lvs2", "t_s": 24.0,
                       "file": "directors/before-failback-lvs2.txt"})  # fmt: skip
    doc = {
        "events": [
            {"event": "failover", "t_s": FAILOVER, "done_s": FAILOVER + 1.2, "to": "lvs2"},
            {"event": "failback", "t_s": 25.0, "done_s": 26.0, "to": "lvs1"},
        ],
        "sync": sync,
        "sync_threshold": [3, 50],
        "directors": tables,
        "sysctls": sysctls or {},
    }
    (run / "events.json").write_text(json.dumps(doc))


def test_classify() -> None:
    assert classify("ok", None) == "survived"
    assert classify("reset", None) == "reset"
    assert classify("refused", "Connection refused") == "refused"
    assert classify("error:wrong_backend", "rs2 answered") == "wrong_backend"
    assert classify("error:eof", None) == "error"
    assert classify("error:ehostunreach", "No route to host") == "unreachable"


def test_sync_off_breaks_nearly_all(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 50, set(range(50))))
    result = analyze_failover(inputs.load_run(run).flows, FAILOVER, sync=False)
    assert result.long_lived == 50
    assert result.fates == {"reset": 50}
    # the first connection established after the last failed one: 14.0 + 1 ms connect
    assert result.recovery_s == pytest.approx(4.001)
    assert result.new_failed == 8 and result.new_total == 20
    assert result.new_fates == {"survived": 12, "timeout": 8}
    assert expectation(result)["passed"] is True


def test_estimate_counts_the_few_packets_gap(fb: SimpleNamespace) -> None:
    recs = long_lived(fb, 20, set())
    # heartbeats every 100 ms since 0.3 s before the failover: ~5 inbound packets < 10
    recs.append(
        fb.flow(999, "rs1", FAILOVER - 0.3, end_s=FAILOVER + 1, outcome="reset", heartbeats=2)
    )
    run = fb.run(recs)
    flows = inputs.load_run(run).flows
    result = analyze_failover(flows, FAILOVER, sync=True, sync_threshold=10)
    assert result.gaps == {"few_packets": 1, "syncable": 20}
    assert result.broken_total == 1 and result.broken_synced == 0
    assert expectation(result)["passed"] is True
    assert analyze_failover(flows, FAILOVER, sync=True).broken_synced == 1  # "3 50": synced


def test_backup_table_decides_and_names_the_unsynced(fb: SimpleNamespace) -> None:
    recs = long_lived(fb, 10, {8, 9})
    run = fb.run(recs)
    flows = inputs.load_run(run).flows
    backup = {(f"198.18.16.{k + 1}", 40000 + k): "ESTABLISHED" for k in range(8)}
    result = analyze_failover(flows, FAILOVER, sync=True, backup=backup)
    assert result.evidence == "backup-table"
    assert result.gaps == {"not_on_backup": 2, "synced": 8}
    kept = {c["flow_id"] for c in result.connections if c["lost_at"] != "failover"}
    assert kept == {c["flow_id"] for c in result.connections if c["sync"] == "synced"}
    verdict = expectation(result)
    assert verdict["passed"] is True
    assert "never synced" in verdict["detail"] and "flow 8 198.18.16.9:40008" in verdict["detail"]
    # a synced connection that broke fails the check, by name
    backup[("198.18.16.9", 40008)] = "ESTABLISHED"
    result = analyze_failover(flows, FAILOVER, sync=True, backup=backup)
    verdict = expectation(result)
    assert verdict["passed"] is False and "synced yet broken: flow 8" in verdict["detail"]


def test_sync_on_losing_synced_connections_fails(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 50, {3, 4}))
    result = analyze_failover(inputs.load_run(run).flows, FAILOVER, sync=True)
    assert result.broken_synced == 2
    assert expectation(result)["passed"] is False


def test_probes_caught_open_are_not_long_lived(fb: SimpleNamespace) -> None:
    recs = long_lived(fb, 10, set())
    # a short probe in flight at the failover (no heartbeats): counted apart
    recs.append(fb.flow(500, None, FAILOVER - 0.01, FAILOVER + 2, outcome="timeout"))
    result = analyze_failover(inputs.load_run(fb.run(recs)).flows, FAILOVER, sync=True)
    assert result.long_lived == 10 and result.in_flight == {"timeout": 1}
    assert expectation(result)["passed"] is True


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


def test_cli_works_from_a_drill_run_alone(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 6, {5}))
    # probe 10 (flow 16, started at 15 s) was the first through lvs2
    drill_files(run, [(f"198.18.16.{k + 1}", 40000 + k) for k in range(5)], via_new=6 + 10)
    drill = read_drill(run)
    assert drill.sync is True and drill.sync_threshold == (3, 50)
    assert drill.time_of("failback") == 25.0 and drill.done_of("failover") == FAILOVER + 1.2
    assert director_table(run, drill, "lvs2") == {
        (f"198.18.16.{k + 1}", 40000 + k): "ESTABLISHED" for k in range(5)
    }
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run), "--json"])
    assert res.exit_code == ExitCode.OK, res.output
    doc = json.loads(res.output)["runs"][0]
    assert doc["evidence"] == "backup-table" and doc["sync"] is True
    assert doc["gaps"] == {"not_on_backup": 1, "synced": 5}
    assert doc["failover_done_s"] == FAILOVER + 1.2
    assert doc["recovery_evidence"] == "new-director-table"
    assert doc["recovery_s"] == pytest.approx(5.001)
    assert "never synced" in doc["expectation"]["detail"]
    res = CliRunner().invoke(cli, ["report", str(run)])
    assert res.exit_code == ExitCode.OK, res.output
    page = (run / "report.html").read_text()
    assert "time to recover" in page and "fail-back" in page


def test_malformed_drill_record_is_named(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 3, set()))
    (run / "events.json").write_text('{"events": [{"event": "failover"}]}')
    with pytest.raises(AnalysisError, match=r"events\.json: malformed"):
        read_drill(run)
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run)])
    assert res.exit_code == ExitCode.ERROR and "malformed event list" in res.output
    bad = fb.run(long_lived(fb, 3, set()))
    drill_files(bad, [])
    (bad / "directors" / "before-failover-lvs2.txt").write_text(HEADER + "TCP garbage\n")
    res = CliRunner().invoke(cli, ["analyze", "failover", str(bad)])
    assert res.exit_code == ExitCode.ERROR and "before-failover-lvs2.txt" in res.output


def test_no_failover_time_or_nothing_open(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 5, set()))
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run)])
    assert res.exit_code == ExitCode.ERROR and "pass --failover-at" in res.output
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run), "--failover-at", "500"])
    assert res.exit_code == ExitCode.ERROR and "no connection was open" in res.output


def test_breaks_after_the_failback_are_counted_apart(fb: SimpleNamespace) -> None:
    # sync on: every connection rode through the failover, then died at the fail-back (25 s)
    recs = [
        fb.flow(k, fb.names[k % 3], 0.1 * k, end_s=27.0, outcome="reset", heartbeats=100)
        for k in range(10)
    ]
    run = fb.run(recs)
    result = analyze_failover(inputs.load_run(run).flows, FAILOVER, 25.0, sync=True)
    assert result.lost_at == {"failback": 10}
    assert result.broken_synced == 0 and result.loss_ratio == 0.0
    assert expectation(result)["passed"] is True
    result = analyze_failover(inputs.load_run(run).flows, FAILOVER, 25.0, sync=False)
    assert expectation(result)["passed"] is False  # no sync, yet nothing broke at failover


def test_a_timeout_broke_when_its_heartbeat_went_unanswered(fb: SimpleNamespace) -> None:
    # ended by a 20 s heartbeat timeout at 31 s: the break was at 11 s, the failover's
    recs = [
        fb.flow(k, "rs1", 0.1 * k, end_s=31.0, outcome="timeout", heartbeats=50) for k in range(4)
    ]
    flows = inputs.load_run(fb.run(recs)).flows
    result = analyze_failover(flows, FAILOVER, 25.0, sync=False, heartbeat_timeout_s=20.0)
    assert result.lost_at == {"failover": 4}
    assert analyze_failover(flows, FAILOVER, 25.0, sync=False).lost_at == {"failback": 4}


def test_the_drills_record_round_trips(fb: SimpleNamespace) -> None:
    from lvsprobe.lab.drillrecord import Drill, write_events
    from lvsprobe.lab.lab import Switch

    run = fb.run(long_lived(fb, 4, set()))
    t0 = 1_700_000_000.0  # the flow builder's start_unix - start_s
    drill = Drill(
        switches=[
            Switch("lvs1", "lvs2", t0 + FAILOVER, t0 + FAILOVER + 1.5),
            Switch("lvs2", "lvs1", t0 + 25.0, t0 + 26.0),
        ],
        tables=[{"when": "before-failover", "ns": "lvs2", "unix": t0 + 9.0, "file": "x.txt"}],
        sync_wait={"established_s": 3.0, "synced_s": float("inf")},
        sync_threshold=[3, 50],
    )
    write_events(run, drill, sync=True)
    record = read_drill(run)
    assert record.time_of("failover") == pytest.approx(FAILOVER)
    assert record.done_of("failover") == pytest.approx(FAILOVER + 1.5)
    assert record.time_of("failback") == pytest.approx(25.0)
    assert record.new_director() == "lvs2" and record.sync is True
    assert record.directors[0]["t_s"] == pytest.approx(9.0)
    assert record.sync_wait["synced_s"] is None  # the wait ran out: recorded, not hidden


def test_synced_yet_broken_under_strict_conntrack_says_why(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 4, {0, 1, 2, 3}, outcome="timeout"))
    strict = {"vs.conntrack": "1", "nf_conntrack_tcp_be_liberal": "0"}
    drill_files(
        run, [(f"198.18.16.{k + 1}", 40000 + k) for k in range(4)], sysctls={"lvs2": strict}
    )
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run), "--json"])
    assert res.exit_code == ExitCode.CHECK_FAILED, res.output
    detail = json.loads(res.output)["runs"][0]["expectation"]["detail"]
    assert "synced yet broken" in detail and "vs.conntrack=1" in detail
    assert read_drill(run).sysctls == {"lvs2": strict}


def test_a_late_heartbeat_timer_never_asks_for_a_wake_up_in_the_past() -> None:
    # Found by the failover proof: under TCG the timer of a beat due before the end of the
    # hold fired after it, with a beat unanswered; the flow asked to be woken at that past
    # beat again and again (the epoll engine's timer loop then never returned).
    from lvsprobe.replay.flows import BackendMatcher, TcpFlow

    flow = TcpFlow(BackendMatcher(r"(rs\d+)"), 1, 64, hold_s=1.0, heartbeat_s=0.3,
                   heartbeat_timeout_s=20.0)  # fmt: skip
    flow.start(0.0)
    flow.timer(0.3)
    step = flow.timer(1.05)
    assert step.wake_at is not None and step.wake_at > 1.05 and not step.done


KA = {
    "advert_int_s": 0.5,
    "priorities": {"lvs1": 150, "lvs2": 100},
    "preempt": True,
    "delay_loop_s": 1.0,
    "connect_timeout_s": 2.0,
    "retry": 1,
    "delay_before_retry_s": 0.5,
    "inhibit_on_failure": False,
}


def keepalived_events(
    run: Path,
    fault: str,
    takeover_s: float,
    back: float | None,
    preempt: bool = True,
    lvs1_backup: float | None = None,
    dumped: bool = True,
) -> None:
    """RUN/events.json of a keepalived failover drill: the fault at FAILOVER on lvs1, lvs2
    MASTER `takeover_s` later (notify read 0.1 s after keepalived's own time), undone at 20 s,
    lvs1 MASTER again at `back` (None: never)."""
    took = FAILOVER + takeover_s
    notify = [
        {"ns": "lvs1", "t_s": 1.0, "line": 'INSTANCE "VI_LVS" MASTER 150'},
        {"ns": "lvs2", "t_s": 0.9, "line": 'INSTANCE "VI_LVS" BACKUP 100'},
        {"ns": "lvs2", "t_s": took + 0.1, "line": 'INSTANCE "VI_LVS" MASTER 100'},
    ]
    if fault == "link":
        notify.append({"ns": "lvs1", "t_s": FAILOVER + 0.05, "line": 'INSTANCE "VI_LVS" FAULT 150'})
    if lvs1_backup is not None:
        notify.append({"ns": "lvs1", "t_s": lvs1_backup, "line": 'INSTANCE "VI_LVS" BACKUP 150'})
    dumps = (
        [
            {
                "ns": "lvs2",
                "after": "takeover",
                "instance": "VI_LVS",
                "state": "MASTER",
                "last_transition_s": took,
            }
        ]
        if dumped
        else []
    )
    if back is not None:
        notify += [
            {"ns": "lvs1", "t_s": back, "line": 'INSTANCE "VI_LVS" MASTER 150'},
            {"ns": "lvs2", "t_s": back + 0.01, "line": 'INSTANCE "VI_LVS" BACKUP 100'},
        ]
    events = [{"event": "failover", "t_s": FAILOVER, "done_s": took, "to": "lvs2"}]
    if back is not None:
        events.append({"event": "failback", "t_s": 20.0, "done_s": back, "to": "lvs1"})
    doc = {
        "events": events,
        "sync": True,
        "sync_threshold": [3, 50],
        "ha": "keepalived",
        "keepalived": KA | {"preempt": preempt},
        "notify": notify,
        "vrrp_dumps": dumps,
        "faults": [
            {
                "fault": fault,
                "target": "lvs1",
                "started_s": FAULT_STARTED,
                "t_s": FAILOVER,
                "done_s": FAILOVER + 1,
                "undo_started_s": 19.9,
                "undo_s": 20.0,
                "undone_s": 20.1,
            }
        ],
    }
    (run / "events.json").write_text(json.dumps(doc))


FAULT_STARTED = FAILOVER - 0.01


def vrrp_of(run: Path, *extra: str) -> tuple[int, dict]:
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run), "--json", *extra])
    assert res.exit_code in (0, 3), res.output
    return res.exit_code, json.loads(res.output)["runs"][0]["vrrp"]


def test_vrrp_predictions() -> None:
    from lvsprobe.analyze.vrrp import Timers

    timers = Timers.from_json(KA, "t")
    assert timers.skew_s("lvs2") == pytest.approx(156 / 256 * 0.5)
    assert timers.master_down_s("lvs2") == pytest.approx(1.5 + 0.3046875)
    assert timers.takeover_window("stop", "lvs2") == (0.3046875, 0.3046875)  # priority-0 advert
    assert timers.takeover_window("freeze", "lvs2") == pytest.approx((1.3046875, 1.8046875))


def test_a_clean_stop_is_taken_over_after_the_skew(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 6, set()))
    keepalived_events(run, "stop", 0.4, back=24.0, lvs1_backup=22.5)
    code, vrrp = vrrp_of(run)
    assert code == ExitCode.OK, vrrp
    assert (
        vrrp["takeover_s"] == pytest.approx(0.4) and vrrp["takeover_evidence"] == "keepalived-json"
    )
    assert vrrp["notify_latency_s"] == pytest.approx(0.1)
    assert vrrp["failback_s"] == pytest.approx(4.0) and vrrp["rejoin_s"] == pytest.approx(2.5)
    # the stopped lvs1 wrote no state: it is MASTER only until the stop, not beside lvs2
    assert vrrp["both_master_s"] == pytest.approx(0.01)  # the hand-back itself
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run)])
    assert "takeover: lvs2 MASTER 0.400 s after the stop" in res.output


def test_an_earlier_drills_split_brain_is_not_this_runs(fb: SimpleNamespace) -> None:
    """A second drill on the same cluster: the notify log still holds the first one's
    freeze (both MASTER for 9 s, before this run's start); a defect counted it here."""
    run = fb.run(long_lived(fb, 6, set()))
    keepalived_events(run, "stop", 0.4, back=24.0, lvs1_backup=22.5)
    doc = json.loads((run / "events.json").read_text())
    earlier = [
        {"ns": "lvs2", "t_s": -120.0, "line": 'INSTANCE "VI_LVS" MASTER 100'},
        {"ns": "lvs2", "t_s": -111.0, "line": 'INSTANCE "VI_LVS" BACKUP 100'},
    ]
    lvs1_first = {"ns": "lvs1", "t_s": -200.0, "line": 'INSTANCE "VI_LVS" MASTER 150'}
    doc["notify"] = [lvs1_first, *earlier, *doc["notify"][1:]]
    (run / "events.json").write_text(json.dumps(doc))
    code, vrrp = vrrp_of(run)
    assert code == ExitCode.OK, vrrp
    assert vrrp["both_master_s"] == pytest.approx(0.01)  # the hand-back itself, as without


def test_a_takeover_later_than_predicted_fails(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 6, set()))
    keepalived_events(run, "freeze", 3.5, back=20.2, dumped=False)
    code, vrrp = vrrp_of(run)
    assert code == ExitCode.CHECK_FAILED and vrrp["takeover_evidence"] == "notify"
    checks = {c["check"]: c["passed"] for c in vrrp["checks"]}
    assert checks == {"takeover": False, "fail-back": True, "split brain": None}
    assert vrrp["both_master_s"] > 5  # frozen lvs1 still said MASTER
    assert vrrp_of(run, "--tolerance", "2")[0] == ExitCode.OK


def test_nopreempt_keeps_the_backup_master(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 6, set()))
    keepalived_events(run, "link", 1.6, back=None, preempt=False, lvs1_backup=21.0)
    code, vrrp = vrrp_of(run)
    assert code == ExitCode.OK, vrrp
    assert vrrp["failback_expected"] is False and "nopreempt: as configured" in vrrp["detail"]
    keepalived_events(run, "link", 1.6, back=23.0, preempt=False, lvs1_backup=21.0)
    code, vrrp = vrrp_of(run)
    assert code == ExitCode.CHECK_FAILED and "though nopreempt" in vrrp["detail"]


def test_preempt_that_never_happens_fails(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 6, set()))
    keepalived_events(run, "stop", 0.3, back=None, lvs1_backup=22.0)
    code, vrrp = vrrp_of(run)
    assert code == ExitCode.CHECK_FAILED and "expected it to preempt" in vrrp["detail"]


def test_a_malformed_keepalived_record_is_named(fb: SimpleNamespace) -> None:
    run = fb.run(long_lived(fb, 6, set()))
    keepalived_events(run, "stop", 0.3, back=None)
    doc = json.loads((run / "events.json").read_text())
    del doc["keepalived"]["advert_int_s"]
    (run / "events.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(cli, ["analyze", "failover", str(run)])
    assert res.exit_code == ExitCode.ERROR and "keepalived settings" in res.output
