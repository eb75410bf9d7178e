"""The nanny drill's analysis on synthetic runs shaped like `lvsprobe lab drill health`'s."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner

from lvsprobe.analyze.vrrp import Timers, parse_notify_line
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import ParseError

FAULT, DOWN, UNDO, UP = 10.0, 11.2, 16.0, 16.8
VICTIM = {"name": "rs1", "address": "10.0.0.1", "port": 80, "vs": "[198.18.0.100]:tcp:80"}
RS = "[10.0.0.1]:tcp:80"
SETTINGS = {
    "advert_int_s": 0.5,
    "priorities": {"lvs1": 150, "lvs2": 100},
    "preempt": True,
    "delay_loop_s": 1.0,
    "connect_timeout_s": 2.0,
    "retry": 1,
    "delay_before_retry_s": 0.5,
    "inhibit_on_failure": False,
}


def status_doc(victim_weight: int | None) -> dict[str, Any]:
    """`lvsprobe status --json` of the director: the victim absent when `victim_weight` None."""
    backends = [
        {
            "address": a,
            "port": 80,
            "forward": "masq",
            "weight": w,
            "active_conns": 0,
            "inactive_conns": 0,
        }
        for a, w in (("10.0.0.1", victim_weight), ("10.0.0.2", 1), ("10.0.0.3", 1))
        if w is not None
    ]
    service = {
        "protocol": "TCP",
        "family": "inet",
        "address": "198.18.0.100",
        "port": 80,
        "fwmark": 0,
        "scheduler": "rr",
        "flags": 0,
        "persistent": None,
        "backends": backends,
    }
    return {"schema": 1, "loaded": True, "via": "procfs", "services": [service]}


def health_run(
    fb: SimpleNamespace,
    *,
    stray_failure: bool = False,
    during_weight: int | None = None,
    inhibit: bool = False,
    down_at: float = DOWN,
    after_removal: bool = False,
) -> Path:
    """Short flows every 0.25 s from 0 to 25 s, rr over rs1..rs3; rs1 dead from FAULT to UNDO:
    the flows the kernel sent it before the checker's DOWN were refused."""
    recs, victim = [], []
    names = ["rs1", "rs2", "rs3"]
    for i in range(100):
        t = 0.25 * i
        dead = FAULT <= t < UNDO
        pick = names[i % 3]
        if down_at <= t < UP:
            pick = names[1 + i % 2]  # the checker took rs1 out: rs2, rs3 only
        if after_removal and i == 50:
            pick = "rs1"  # yet the kernel sent it one
        refused = pick == "rs1" and dead
        recs.append(
            fb.flow(
                i,
                None if refused else pick,
                t,
                client=f"198.18.16.{i % 200 + 1}",
                outcome="refused" if refused else "ok",
            )
        )
        if pick == "rs1":
            victim.append(
                {
                    "client": f"198.18.16.{i % 200 + 1}",
                    "port": 40000 + i,
                    "state": "CLOSE" if refused else "TIME_WAIT",
                    "first_seen_s": t + 0.3,
                }
            )
    if stray_failure:  # a flow that failed though the kernel sent it to a live server
        recs[43] = fb.flow(43, None, 10.75, client="198.18.16.44", outcome="timeout")
    run = fb.run(recs)
    (run / "directors").mkdir()
    (run / "directors" / "victim-conns.json").write_text(json.dumps(victim))
    directors = []
    for when, weight, t in (
        ("before", 1, 5.0),
        ("during", during_weight, 12.0),
        ("after", 1, 20.0),
    ):
        name = f"directors/{when}-lvs1.json"
        (run / name).write_text(json.dumps(status_doc(weight)))
        directors.append({"when": when, "ns": "lvs1", "t_s": t, "snapshot": name})
    notify = [
        {"ns": "lvs1", "t_s": 0.5, "line": 'INSTANCE "VI_LVS" MASTER 150'},
        {"ns": "lvs1", "t_s": down_at, "line": f"RS {RS} {VICTIM['vs']} DOWN"},
        {"ns": "lvs2", "t_s": down_at + 0.1, "line": f"RS {RS} {VICTIM['vs']} DOWN"},
        {"ns": "lvs1", "t_s": UP, "line": f"RS {RS} {VICTIM['vs']} UP"},
    ]
    doc = {
        "drill": "health",
        "ha": "keepalived",
        "keepalived": SETTINGS | {"inhibit_on_failure": inhibit},
        "victim": VICTIM,
        "active_director": "lvs1",
        "faults": [
            {
                "fault": "kill-backend",
                "target": "rs1",
                "started_s": FAULT - 0.02,
                "t_s": FAULT,
                "done_s": FAULT + 0.01,
                "undo_started_s": UNDO - 5,
                "undo_s": UNDO,
                "undone_s": UNDO + 1,
            }
        ],
        "notify": notify,
        "victim_conns": "directors/victim-conns.json",
        "directors": directors,
    }
    (run / "events.json").write_text(json.dumps(doc))
    return run


def analyze(run: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    res = CliRunner().invoke(cli, ["analyze", "health", str(run), "--json", *extra])
    assert res.exit_code in (0, 3), res.output
    return res.exit_code, json.loads(res.output)


def checks(doc: dict[str, Any]) -> dict[str, bool | None]:
    return {c["check"]: c["passed"] for c in doc["checks"]}


def test_predictions_follow_keepalived_timers() -> None:
    timers = Timers.from_json(SETTINGS, "t")
    assert timers.checker_down_window(timed_out=False) == (0.5, 1.5)  # retry x delay_before_retry
    assert timers.checker_down_window(timed_out=True) == (4.5, 5.5)  # + 2 attempts x 2 s
    assert timers.checker_up_bound(timed_out=False) == 1.0
    assert timers.checker_up_bound(timed_out=True) == 3.0


def test_a_killed_server_removed_in_time_with_matching_counts(fb: SimpleNamespace) -> None:
    code, doc = analyze(health_run(fb))
    assert code == ExitCode.OK, doc["checks"]
    assert doc["removal_s"] == pytest.approx(1.2) and doc["readd_s"] == pytest.approx(0.8)
    window = doc["window"]
    # flows 40..44 start in [10, 11.2): the kernel sent 42 to rs1 (round robin); refused
    assert window["flows"] == 5 and window["to_victim"] == 1 and window["failed"] == 1
    assert window["victim_fates"] == {"refused": 1}
    assert checks(doc) == {
        "removal": True,
        "window counts": True,
        "none after removal": True,
        "inhibit or removal": True,
        "return": True,
    }
    assert sum(doc["timeline"]["to_victim"]) == len(
        json.loads((health_run(fb) / "directors/victim-conns.json").read_text())
    )


def test_a_failure_the_director_did_not_send_to_the_victim_is_named(fb: SimpleNamespace) -> None:
    code, doc = analyze(health_run(fb, stray_failure=True))
    assert code == ExitCode.CHECK_FAILED
    detail = next(c["detail"] for c in doc["checks"] if c["check"] == "window counts")
    assert "differing flows: [43]" in detail


def test_a_slow_checker_fails_its_prediction(fb: SimpleNamespace) -> None:
    code, doc = analyze(health_run(fb, down_at=13.0))  # 3 s: the window is 0.5..1.5 s
    assert code == ExitCode.CHECK_FAILED and checks(doc)["removal"] is False
    assert analyze(health_run(fb, down_at=13.0), "--tolerance", "2")[0] == ExitCode.OK


def test_inhibit_keeps_the_destination_at_weight_zero(fb: SimpleNamespace) -> None:
    code, doc = analyze(health_run(fb, inhibit=True, during_weight=0))
    assert code == ExitCode.OK, doc["checks"]
    code, doc = analyze(health_run(fb, inhibit=True))  # configured inhibit, yet removed
    assert code == ExitCode.CHECK_FAILED and checks(doc)["inhibit or removal"] is False
    code, doc = analyze(health_run(fb, during_weight=1))  # removal configured, still there
    assert code == ExitCode.CHECK_FAILED


def test_a_flow_sent_to_the_removed_server_fails(fb: SimpleNamespace) -> None:
    code, doc = analyze(health_run(fb, after_removal=True))
    assert code == ExitCode.CHECK_FAILED and checks(doc)["none after removal"] is False


def test_report_has_the_timeline(fb: SimpleNamespace) -> None:
    run = health_run(fb)
    analyze(run)
    res = CliRunner().invoke(cli, ["report", str(run)])
    assert res.exit_code == ExitCode.OK, res.output
    page = (run / "report.html").read_text()
    assert "predicted removal" in page and "checker: down" in page and "Health" in page


def test_runs_without_a_health_record_are_refused(fb: SimpleNamespace, tmp_path: Path) -> None:
    run = fb.run([fb.flow(0, "rs1", 0.0)])
    res = CliRunner().invoke(cli, ["analyze", "health", str(run)])
    assert res.exit_code == ExitCode.ERROR and "no health drill record" in res.output
    bad = health_run(fb)
    doc = json.loads((bad / "events.json").read_text())
    doc["notify"].append({"ns": "lvs1", "t_s": 1.0, "line": "SOMETHING else"})
    (bad / "events.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(cli, ["analyze", "health", str(bad)])
    assert res.exit_code == ExitCode.ERROR and "not a keepalived notify line" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    "line",
    ['INSTANCE "VI_1" MASTER', "RS [10.0.0.1]:tcp:80 UP", "VS x DOWN", "", 'GROUP "G" up 1'],
)
def test_foreign_notify_lines_are_parse_errors(line: str) -> None:
    with pytest.raises(ParseError, match="not a keepalived notify line"):
        parse_notify_line(line, 0.0, "lvs1")


def test_a_flow_just_before_the_up_line_is_not_judged(fb: SimpleNamespace) -> None:
    # keepalived re-adds the server, then writes UP; the reader stamps it a little later: a
    # flow started 0.1 s before the UP line may go to rs1 (seen in the lab, 12 ms before)
    run = health_run(fb)
    conns = json.loads((run / "directors/victim-conns.json").read_text())
    conns.append(
        {"client": "198.18.16.67", "port": 40066, "state": "TIME_WAIT", "first_seen_s": UP + 0.2}
    )
    (run / "directors/victim-conns.json").write_text(json.dumps(conns))
    doc = json.loads((run / "events.json").read_text())
    doc["notify"][3]["t_s"] = 16.6  # flow 66 started at 16.5
    (run / "events.json").write_text(json.dumps(doc))
    _, result = analyze(run)
    assert checks(result)["none after removal"] is True, result["checks"]
