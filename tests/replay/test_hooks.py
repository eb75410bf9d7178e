"""`--at` commands: a second Ctrl-C does not wait for a command still running, and the record
says it was still running rather than never run."""

from __future__ import annotations

import time
from pathlib import Path

from lvsprobe.replay.hooks import CommandSchedule, TimedCommand, problems

BOUND_S = 30.0


def test_finish_gives_up_on_a_running_command_when_told(tmp_path: Path) -> None:
    started = tmp_path / "started"
    slow = TimedCommand(0.0, "failover", f"touch {started}; sleep 5")
    later = TimedCommand(3600.0, "failback", "true")
    schedule = CommandSchedule([slow, later], timeout_s=10.0)
    schedule.start()
    deadline = time.monotonic() + BOUND_S
    while not started.exists():
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.02)
    runs = schedule.finish(give_up=lambda: True)
    assert [r.timed.event for r in runs] == ["failover", "failback"]
    running, never = runs
    assert running.started_unix is not None and running.done_unix is None
    assert running.error == "still running, not waited for"
    assert never.started_unix is None
    assert problems(runs) == [
        "--at 0:failover: still running, not waited for",
        "--at 3600:failback: not run, the replay had ended",
    ]
