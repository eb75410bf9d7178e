"""What both engines (runner.py's asyncio Runner, fastloop.py's FastRunner) take and give:
the run's options, its progress, its result, and the stop signals a command installs around
it. No asyncio here: the epoll engine's process never imports it.

A stop request (Ctrl-C) ends the run early but cleanly: flows still in flight are recorded as
`error:interrupted`, the flow log and summary are written, `complete` is false. Each flow is
handed to the run's journal (`RunOptions.journal`) as it finishes, so a run killed before its
end keeps the flows it finished.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from lvsprobe.replay.attribution import ConnSnapshot
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.journal import Batcher

# Below this, snapshots of a busy director's table (megabytes each) would be taken back to
# back: 0 wrote 18k files in a one-second run.
MIN_SNAPSHOT_EVERY_S = 0.1


def check_snapshot_every(seconds: float) -> float:
    """`seconds` if it is a sane interval between conn-table snapshots, else ValueError."""
    if not MIN_SNAPSHOT_EVERY_S <= seconds < float("inf"):  # false for nan too
        raise ValueError(f"{seconds} is not a number of seconds >= {MIN_SNAPSHOT_EVERY_S}")
    return seconds


@dataclass(slots=True)
class Progress:
    started: int = 0
    done: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    total: int = 0


@dataclass
class RunOptions:
    conn_table: Callable[[], bytes] | None = None
    snapshot_every_s: float = 1.0
    on_progress: Callable[[Progress], None] | None = None
    progress_every_s: float = 0.5
    journal: Batcher[FlowRecord] | None = None  # where each flow goes as it finishes
    live: Watcher | None = None  # told of each flow as it starts and ends (live.py)
    hurry: Callable[[], bool] = lambda: False  # true: skip the final conn-table snapshot

    def __post_init__(self) -> None:
        check_snapshot_every(self.snapshot_every_s)


@dataclass
class RunResult:
    records: list[FlowRecord]
    summary: dict[str, Any]
    interrupted: bool
    snapshots: list[ConnSnapshot] = field(default_factory=list)
    skipped: int = 0  # planned flows of closed stages that ended before they could start


class StopSignals:
    """SIGINT and SIGTERM from a run's start until its directory is written.

    The first asks the run to stop: flows in flight become error:interrupted, all is written.
    The second also skips the slow steps left (the final conn-table snapshot, attribution,
    waiting for a running --at command). A third quits at once with `quit_status`: the journal
    keeps the flows finished up to its last flush, and `lvsprobe replay summary RUN` finishes
    the directory. Installed for the whole run, not only the engine's part, so a signal never
    lands as a KeyboardInterrupt in the middle of writing the log.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, run_dir: Path, quit_status: int) -> None:
        self.received = 0
        self._run_dir, self._quit_status = run_dir, quit_status
        self._stop: Callable[[], object] = lambda: None
        self._saved: dict[int, Any] = {}

    def on_stop(self, stop: Callable[[], object]) -> None:
        """What a signal calls (the engine's `stop`, made safe for its loop); called at once
        if a signal came before the engine was there to stop."""
        self._stop = stop
        if self.received:
            stop()

    def hurry(self) -> bool:
        return self.received >= 2

    def __enter__(self) -> StopSignals:
        for signum in self.SIGNALS:
            self._saved[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for signum, handler in self._saved.items():
            # Interrupted, the command is ending in 130 with all written: a late Ctrl-C is
            # ignored, not a traceback or a death by SIGINT (Python restores the default
            # handler while it exits, but leaves an ignored signal ignored).
            signal.signal(signum, signal.SIG_IGN if self.received else handler)

    def _say(self, text: str) -> None:
        # os.write: the signal may have interrupted a write to sys.stderr (the progress line)
        os.write(sys.stderr.fileno(), f"\nlvsprobe: {text}\n".encode())

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.received += 1
        if self.received >= 3:
            self._say(
                "quitting now: the flows finished up to the last second are in the journal; "
                f"`lvsprobe replay summary {self._run_dir}` finishes the run directory"
            )
            os._exit(self._quit_status)
        if self.received == 2:
            self._say("interrupted again: writing the finished flows now (again to quit at once)")
        self._stop()


class Watcher(Protocol):
    """What an engine tells as the run goes (the live metrics and progress, live.py)."""

    def started(self, kind: str, now_s: float) -> None: ...

    def finished(self, record: FlowRecord) -> None: ...
