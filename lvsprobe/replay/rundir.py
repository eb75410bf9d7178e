"""The run directory of `lvsprobe replay run --out RUN`: made ready before the first packet is
sent, finished when the run ends.

Ready means created, holding no earlier run (with `--force`, the files lvsprobe wrote there
are removed first, and only those), proven writable, locked against a second writer, and
given what is known before the run: scenario.yaml, target.json and the flow journal. A run
directory that cannot be written is found before the traffic is paid for, not after it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import itertools
import json
import operator
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsprobe.errors import LvsprobeError
from lvsprobe.replay import flowlog, flowsummary
from lvsprobe.replay.attribution import JOINED_COLUMNS, attribute, save_snapshots
from lvsprobe.replay.expect import check_expectations
from lvsprobe.replay.flowcolumns import FlowColumns
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.flowsummary import summarize_columns
from lvsprobe.replay.gcpause import collections_paused
from lvsprobe.replay.hooks import EVENTS_FILE
from lvsprobe.replay.journal import Journal
from lvsprobe.replay.profile import rate_figures
from lvsprobe.replay.scenario import Scenario
from lvsprobe.replay.thresholds import Threshold, judge

# Everything lvsprobe writes into a run directory: a directory holding any of these holds a
# run. `analysis/` and `report.html` are written by `lvsprobe analyze` and `lvsprobe report`
# (lvsprobe/analyze/report.py) from the run's files, so they go with it.
RUN_FILES = (
    flowlog.FLOWS_FILE,
    flowlog.FLOWS_FILE + ".tmp",
    flowlog.JOURNAL_FILE,
    flowlog.SUMMARY_FILE,
    flowlog.SUMMARY_FILE + ".tmp",
    flowlog.SCENARIO_FILE,
    flowlog.TARGET_FILE,
    flowlog.SNAPSHOT_DIR,
    EVENTS_FILE,
    "analysis",
    "report.html",
)
_PROBE = ".lvsprobe-write-probe"


@dataclass
class RunDir:
    """A run directory being written: its lock is held until `close()`."""

    path: Path
    journal: Journal[FlowRecord]
    _lock_fd: int | None = field(default=None, repr=False)

    def close(self) -> None:
        self.journal.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def _fail(path: Path, what: str, exc: OSError) -> LvsprobeError:
    return LvsprobeError(f"--out {path}: {what}: {exc.strerror or exc}")


def lock_run_dir(path: Path) -> int | None:
    """Take the run directory's lock (flock on the directory itself: the kernel drops it when
    the holder dies, SIGKILL included); the fd to close, None where locks are unsupported."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LvsprobeError(f"{path}: a running `lvsprobe replay run` is writing it") from None
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return None  # some network filesystems: go on without the guard
        raise
    return fd


def _clear(path: Path, force: bool) -> None:
    held = [name for name in RUN_FILES if (path / name).exists()]
    if held and not force:
        raise LvsprobeError(
            f"--out {path}: already holds a run ({', '.join(held)}); "
            "choose a new directory, or give --force to replace that run"
        )
    for name in held:
        victim = path / name
        try:
            if victim.is_dir() and not victim.is_symlink():
                shutil.rmtree(victim)
            else:
                victim.unlink()
        except OSError as exc:
            raise _fail(path, f"cannot remove the old run's {name}", exc) from exc


def open_run_dir(
    path: Path, scenario: Scenario, scenario_path: Path | None, planned: int, force: bool
) -> RunDir:
    """Make `path` ready for a run (see the module docstring); LvsprobeError naming --out
    when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(path, "cannot create the run directory", exc) from exc
    try:
        lock_fd = lock_run_dir(path)
    except OSError as exc:
        raise _fail(path, "cannot open the run directory", exc) from exc
    try:
        _clear(path, force)
        probe = path / _PROBE
        probe.write_bytes(b"lvsprobe\n")
        probe.unlink()
        _write_inputs(path, scenario, scenario_path)
        journal = flowlog.open_journal(path, planned, scenario.name)
    except OSError as exc:
        if lock_fd is not None:
            os.close(lock_fd)
        raise _fail(path, "not writable", exc) from exc
    except BaseException:
        if lock_fd is not None:
            os.close(lock_fd)
        raise
    return RunDir(path, journal, lock_fd)


def _write_inputs(run_dir: Path, scenario: Scenario, scenario_path: Path | None) -> None:
    """scenario.yaml (a byte copy) and target.json: known before the run, so a run killed
    before its end still names its target."""
    if scenario_path is not None:
        shutil.copyfile(scenario_path, run_dir / flowlog.SCENARIO_FILE)
    target = scenario.target
    doc = {
        "address": target.address,
        "port": target.port,
        "protocol": target.protocol,
        "fwmark": target.fwmark,
        "backends": dict(target.backends),
        "seed": scenario.seed,
        "scenario": scenario.name,
    }
    (run_dir / flowlog.TARGET_FILE).write_text(json.dumps(doc, indent=2) + "\n")


def write_run(
    run: RunDir,
    scenario: Scenario,
    result: Any,
    stop_reason: str | None,
    planned: int,
    check: bool = False,
    hurry: bool = False,
    thresholds: Sequence[Threshold] = (),
    planned_at_s: Sequence[float | None] = (),
) -> dict[str, Any]:
    """End the run: attribute (unless `hurry`: a second Ctrl-C), write the snapshots,
    flows.parquet (replacing the journal) and summary.json; returns the summary.

    `result` is a RunResult (records and snapshots) from either engine; `thresholds` are
    judged on it (the scenario's and the command line's); `planned_at_s` is each planned
    flow's start offset by flow id (None: closed), for the planned and achieved rates.
    """
    try:
        with collections_paused():  # over the records and the columns read off them
            return _write_run(
                run, scenario, result, stop_reason, planned, check, hurry, thresholds, planned_at_s
            )
    except OSError as exc:  # a full disk, say: the journal still holds every finished flow
        raise LvsprobeError(
            f"--out {run.path}: cannot write the run's files: {exc.strerror or exc}; its "
            f"finished flows are in {flowlog.JOURNAL_FILE}, and `lvsprobe replay summary "
            f"{run.path}` finishes the directory once that is fixed"
        ) from exc


def _write_run(
    run: RunDir,
    scenario: Scenario,
    result: Any,
    stop_reason: str | None,
    planned: int,
    check: bool,
    hurry: bool,
    thresholds: Sequence[Threshold],
    planned_at_s: Sequence[float | None],
) -> dict[str, Any]:
    run.journal.flush()  # every finished flow is on disk before the slower steps below
    matched = 0
    conn_error = None
    joined: tuple[str, ...] = ()  # the columns the join filled in since the flows were journaled
    if result.snapshots:
        save_snapshots(run.path, result.snapshots)
        if hurry:
            conn_error = "conn-table attribution skipped: interrupted twice"
        else:
            joined = JOINED_COLUMNS
            try:
                matched = attribute(result.records, result.snapshots, scenario.target.backends)
            except (LvsprobeError, ImportError) as exc:
                # the flows are still worth writing: say why the join is missing
                conn_error = f"conn-table attribution failed: {exc}"
    checks = None
    if check:
        failures = check_expectations(scenario.expect, result.records)
        checks = {"passed": not failures, "failures": failures}
    run.journal.close()
    table = flowlog.flows_table(run.path, result.records, joined, run.journal.written())
    # The Parquet writer lets go of the GIL: the summary is made while flows.parquet is written
    with _meanwhile(functools.partial(flowlog.write_flows_table, run.path, table)):
        summary = _summary(
            scenario, FlowColumns(table), result.skipped, stop_reason, planned, thresholds,
            planned_at_s, snapshots=len(result.snapshots), conn_table_matched=matched,
            conn_table_error=conn_error, checks=checks,
        )  # fmt: skip
    flowsummary.write_summary(run.path, summary)
    result.summary = summary
    return summary


@contextlib.contextmanager
def _meanwhile(work: Callable[[], object]) -> Iterator[None]:
    """`work` in a thread of its own while the block runs; its exception raised after the
    block's (the block's own goes first, once the thread is done)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # raised in the caller's thread below
            failed.append(exc)

    thread = threading.Thread(target=run, name="lvsprobe-finish")
    thread.start()
    try:
        yield
    finally:
        thread.join()
    if failed:
        raise failed[0]


def _summary(
    scenario: Scenario,
    columns: FlowColumns,
    skipped: int,
    stop_reason: str | None,
    planned: int,
    thresholds: Sequence[Threshold],
    planned_at_s: Sequence[float | None],
    **extra: Any,
) -> dict[str, Any]:
    """The run's summary: its flows', the planned and achieved rates, the thresholds judged."""
    planned_open_s = [at for at in planned_at_s if at is not None]
    opened_s = _opened_s(columns, planned_at_s) if planned_open_s else []  # else closed: none
    summary = summarize_columns(
        columns,
        scenario=scenario.name,
        planned=planned,
        complete=stop_reason is None and columns.rows + skipped == planned,
        stopped=stop_reason,
        skipped=skipped,
        **extra,
        rates=rate_figures(planned_open_s, opened_s),
    )
    if thresholds:
        summary["thresholds"] = judge(thresholds, summary, columns, scenario.target.backends)
    return summary


def _opened_s(columns: FlowColumns, planned_at_s: Sequence[float | None]) -> list[float]:
    """The start times of the flows the plan opened (an `at_s`; not a closed stage's)."""
    import numpy as np

    planned_open = np.fromiter(
        map(operator.is_not, planned_at_s, itertools.repeat(None)), np.bool_, len(planned_at_s)
    )
    flow_ids = columns.numbers("flow_id").values
    known = (flow_ids >= 0) & (flow_ids < len(planned_at_s))
    opened = known.copy()
    opened[known] = planned_open[flow_ids[known]]
    return columns.numbers("start_s").values[opened].tolist()


def finish_run_dir(path: Path) -> dict[str, Any]:
    """`lvsprobe replay summary RUN`: the run's summary. A run that died before its end is
    finished first: its journal becomes flows.parquet, its summary is rebuilt and written. A run
    still being written is only read (`in_progress` is then true in what is returned)."""
    try:
        lock_fd = lock_run_dir(path)
    except LvsprobeError:
        return {**flowsummary.read_summary(path), "in_progress": True}
    except OSError as exc:
        raise LvsprobeError(f"{path}: cannot open the run directory: {exc.strerror}") from exc
    try:
        log = None
        if not (path / flowlog.FLOWS_FILE).is_file():
            log = flowlog.read_flow_log(path)
            flowlog.write_flows_table(path, log.table)
        if (path / flowlog.SUMMARY_FILE).is_file():
            summary = flowsummary.read_summary(path)
        else:
            summary = flowsummary.rebuild_summary(log or flowlog.read_flow_log(path))
            flowsummary.write_summary(path, summary)
        for leftover in (flowlog.JOURNAL_FILE, flowlog.FLOWS_FILE + ".tmp"):
            (path / leftover).unlink(missing_ok=True)  # flows.parquet holds their rows
        return summary
    except OSError as exc:
        raise LvsprobeError(f"{path}: cannot finish the run directory: {exc.strerror}") from exc
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
