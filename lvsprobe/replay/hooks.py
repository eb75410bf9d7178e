"""Commands run at set times of a replay (`--at 30:failover:'ssh lvs1 systemctl stop
keepalived'`): how a failover is driven on a real cluster, where the lab's `lab.failover()`
does not exist. Each command's start and end land in RUN/events.json, the file
`lvsprobe analyze failover` reads, so a drill on a real cluster is analysed like one in the lab.

The commands run one after another in a thread, each bounded by a timeout; a command whose
time comes after the replay has ended is not run (and is reported as such).
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Read by lvsprobe.analyze.failover; the lab's drill writes the same file.
EVENTS_FILE = "events.json"
COMMAND_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TimedCommand:
    """Run `command` (a shell line) `at_s` seconds after the replay starts; name it `event`
    (`failover` and `failback` are what the failover analysis looks for)."""

    at_s: float
    event: str
    command: str


@dataclass(frozen=True)
class CommandRun:
    """What happened to one timed command (times are Unix seconds; None: never started)."""

    timed: TimedCommand
    started_unix: float | None
    done_unix: float | None
    exit_status: int | None
    error: str = ""


def parse_timed_command(text: str) -> TimedCommand:
    """`SECONDS:EVENT:COMMAND`, e.g. `30:failover:systemctl stop keepalived`."""
    parts = text.split(":", 2)
    if len(parts) != 3 or not parts[1].strip() or not parts[2].strip():
        raise ValueError(f"{text!r}: expected SECONDS:EVENT:COMMAND, e.g. 30:failover:'cmd'")
    seconds, event, command = parts
    try:
        at_s = float(seconds)
    except ValueError:
        raise ValueError(f"{text!r}: {seconds!r} is not a number of seconds") from None
    if not 0 <= at_s < 86400:
        raise ValueError(f"{text!r}: the time must be between 0 and 86400 seconds")
    return TimedCommand(at_s, event.strip(), command.strip())


class CommandSchedule:
    """Runs the timed commands in a background thread from `start()` until `finish()`."""

    def __init__(
        self, commands: Sequence[TimedCommand], timeout_s: float = COMMAND_TIMEOUT_S
    ) -> None:
        self.commands = sorted(commands, key=lambda c: c.at_s)
        self.timeout_s = timeout_s
        self.runs: list[CommandRun] = []
        self.started_unix = 0.0
        self._ended = threading.Event()
        self._running: tuple[TimedCommand, float] | None = None  # and when it started
        self._thread = threading.Thread(target=self._work, name="lvsprobe-at", daemon=True)

    def start(self) -> None:
        self.started_unix = time.time()
        self._thread.start()

    def finish(self, give_up: Callable[[], bool] = lambda: False) -> list[CommandRun]:
        """The replay has ended: run nothing new, wait for a command still running (bounded
        by its timeout, or until `give_up()`: a second Ctrl-C), and return what happened to
        every command (one still running then says so)."""
        self._ended.set()
        deadline = time.monotonic() + self.timeout_s + 5
        while self._thread.is_alive() and time.monotonic() < deadline and not give_up():
            self._thread.join(0.1)
        alive = self._thread.is_alive()
        runs = list(self.runs)  # after the check: a command ending meanwhile is in here
        done = {id(r.timed) for r in runs}
        running = self._running
        if alive and running is not None and id(running[0]) not in done:
            timed, started = running
            runs.append(CommandRun(timed, started, None, None, "still running, not waited for"))
            done.add(id(timed))
        return runs + [CommandRun(c, None, None, None) for c in self.commands if id(c) not in done]

    def _work(self) -> None:
        for timed in self.commands:
            delay = self.started_unix + timed.at_s - time.time()
            if self._ended.wait(max(delay, 0.0)):
                return
            self.runs.append(self._run(timed))

    def _run(self, timed: TimedCommand) -> CommandRun:
        started = time.time()
        self._running = (timed, started)
        try:
            proc = subprocess.run(
                timed.command,
                shell=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return CommandRun(
                timed, started, time.time(), None, f"timed out after {self.timeout_s:g} s"
            )
        except OSError as exc:
            return CommandRun(timed, started, time.time(), None, str(exc))
        tail = (
            proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
            if proc.returncode
            else []
        )
        return CommandRun(timed, started, time.time(), proc.returncode, "".join(tail))


def problems(runs: Sequence[CommandRun]) -> list[str]:
    """One line per command that did not run or did not succeed."""
    out = []
    for run in runs:
        label = f"--at {run.timed.at_s:g}:{run.timed.event}"
        if run.started_unix is None:
            out.append(f"{label}: not run, the replay had ended")
        elif run.exit_status != 0:
            why = run.error or f"exit status {run.exit_status}"
            out.append(f"{label}: {why}")
    return out


def write_events(run_dir: Path, runs: Sequence[CommandRun], run_start_unix: float) -> Path:
    """RUN/events.json: the commands that started, with times in seconds since the replay's
    start (`t_s` when the command began, `done_s` when it returned)."""
    events: list[dict[str, Any]] = [
        {
            "event": run.timed.event,
            "t_s": round(run.started_unix - run_start_unix, 6),
            "done_s": round((run.done_unix or run.started_unix) - run_start_unix, 6),
            "command": run.timed.command,
            "exit_status": run.exit_status,
        }
        for run in runs
        if run.started_unix is not None
    ]
    path = run_dir / EVENTS_FILE
    path.write_text(json.dumps({"events": events}, indent=1) + "\n")
    return path
