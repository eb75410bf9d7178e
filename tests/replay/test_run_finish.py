"""A run's finish: flows.parquet written from the run's journal (its rows already in Arrow)
equals the log written from the records, the conn-table join's columns included, and any
doubt about the journal falls back to the records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lvsprobe.replay import flowlog, flowsummary
from lvsprobe.replay.attribution import JOINED_COLUMNS
from lvsprobe.replay.flowlog import FlowRecord


def _records(count: int) -> list[FlowRecord]:
    out = []
    for i in range(count):
        rec = FlowRecord(i, "http" if i % 3 else "tcp", f"127.0.0.{2 + i % 5}", 40000 + i,
                         "127.0.0.1", 80, "tcp", 0.01 * i, 0.01 * i + 0.001, 1.7e9 + i)  # fmt: skip
        rec.connect_s = None if i % 7 == 0 else 0.0002 * (i % 11)
        rec.end_s = rec.start_s + 0.003
        rec.outcome = "ok" if i % 4 else "reset"
        rec.backend = None if i % 5 == 0 else f"rs{i % 3}"
        rec.detail = "é" if i == 3 else None
        rec.stage = i % 2
        rec.settle()
        out.append(rec)
    return out


def _journaled(run: Path, records: list[FlowRecord], finish_order: list[int]) -> None:
    journal = flowlog.open_journal(run, len(records), "s")
    journal.flush_rows = 4  # several batches, as a run writes them
    for i in finish_order:
        journal.add(records[i])
    journal.close()


def _reference(tmp_path: Path, records: list[FlowRecord]) -> object:
    (tmp_path / "ref").mkdir()
    flowlog.write_flows(tmp_path / "ref", records)
    return pq.read_table(tmp_path / "ref" / flowlog.FLOWS_FILE)


@pytest.mark.parametrize("in_order", [True, False])
def test_the_log_from_the_journal_is_the_log_from_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_order: bool
) -> None:
    """Journaled in flow order (an open model's flows end as they start), or out of it and
    sorted (a large run: the threshold lowered here)."""
    records = _records(23)
    run = tmp_path / "run"
    run.mkdir()
    order = list(range(23)) if in_order else [*range(20, 23), *range(10, 20), *range(10)]
    _journaled(run, records, order)
    monkeypatch.setattr(flowlog, "JOURNAL_SORT_MIN_ROWS", 20)
    monkeypatch.setattr(flowlog, "records_to_table", _not_converted)
    assert flowlog.finish_flows(run, records) == 23
    monkeypatch.undo()
    table = pq.read_table(run / flowlog.FLOWS_FILE)
    assert table.equals(_reference(tmp_path, records), check_metadata=True)
    assert not (run / flowlog.JOURNAL_FILE).exists()
    assert not flowlog.read_flow_log(run).from_journal


def test_a_small_journal_out_of_order_is_not_sorted(tmp_path: Path) -> None:
    """Sorting it needs pyarrow.compute, dearer to load than converting a few records."""
    code = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_run_finish import _journaled, _records
from lvsprobe.replay import flowlog
records = _records(30)
_journaled(Path({str(tmp_path)!r}), records, [*range(15, 30), *range(15)])
flowlog.finish_flows(Path({str(tmp_path)!r}), records)
print("pyarrow.compute" in sys.modules, flowlog.read_flows(Path({str(tmp_path)!r})).num_rows)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "30"]


def test_the_joined_columns_come_from_the_records(tmp_path: Path) -> None:
    """The conn-table join fills its columns after the flows were journaled."""
    records = _records(9)
    run = tmp_path / "run"
    run.mkdir()
    _journaled(run, records, list(range(9)))
    for rec in records[::2]:
        rec.conn_backend_address, rec.conn_backend = "198.18.1.11", "rs1"
        rec.attribution_agrees = rec.backend == "rs1"
    flowlog.finish_flows(run, records, JOINED_COLUMNS)
    table = pq.read_table(run / flowlog.FLOWS_FILE)
    assert table.equals(_reference(tmp_path, records), check_metadata=True)
    assert table.column("conn_backend").to_pylist()[:3] == ["rs1", None, "rs1"]


@pytest.mark.parametrize("damage", ["missing flow", "other flow", "torn", "no journal"])
def test_a_journal_not_holding_exactly_the_records_falls_back_to_them(
    tmp_path: Path, damage: str
) -> None:
    records = _records(10)
    run = tmp_path / "run"
    run.mkdir()
    order = list(range(10))
    if damage == "missing flow":
        order.remove(4)
    _journaled(run, records, order)
    journal = run / flowlog.JOURNAL_FILE
    written = records
    if damage == "other flow":
        written = [*records[:4], _records(11)[10], *records[5:]]
    elif damage == "torn":
        journal.write_bytes(journal.read_bytes()[:-20])
        written = records[:8]  # (what the journal keeps: the last batch is torn)
    elif damage == "no journal":
        journal.unlink()
    flowlog.finish_flows(run, written)
    table = pq.read_table(run / flowlog.FLOWS_FILE)
    assert table.equals(_reference(tmp_path, written), check_metadata=True)


def _not_converted(_records: object) -> object:
    raise AssertionError("records converted again: the journal holds them in Arrow")


@pytest.mark.parametrize("in_order", [True, False])
def test_the_log_from_the_batches_the_journal_kept_is_the_log_from_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_order: bool
) -> None:
    """A run's finish: the journal's file is not read back, nor a record converted again."""
    records = _records(23)
    run = tmp_path / "run"
    run.mkdir()
    journal = flowlog.open_journal(run, len(records), "s")
    journal.flush_rows = 4
    for i in range(23) if in_order else [*range(20, 23), *range(10, 20), *range(10)]:
        journal.add(records[i])
    journal.close()
    monkeypatch.setattr(flowlog, "JOURNAL_SORT_MIN_ROWS", 20)
    monkeypatch.setattr(flowlog, "records_to_table", _not_converted)
    monkeypatch.setattr(flowlog, "read_journal", _not_read)
    written = flowlog.flows_table(run, records, (), journal.written())
    flowlog.write_flows_table(run, written)
    monkeypatch.undo()
    table = pq.read_table(run / flowlog.FLOWS_FILE)
    reference = _reference(tmp_path, records)
    assert table.equals(reference, check_metadata=True)
    assert written.equals(reference)
    assert not (run / flowlog.JOURNAL_FILE).exists()


def test_a_run_directory_written_whole_reads_back_as_the_records(tmp_path: Path) -> None:
    """write_run end to end: flows.parquet holds the records, and summary.json is their
    summary (its thresholds judged on them)."""
    from lvsprobe.replay.rundir import open_run_dir, write_run
    from lvsprobe.replay.runparts import RunResult
    from lvsprobe.replay.scenario import parse_scenario
    from lvsprobe.replay.thresholds import evaluate, parse_threshold

    scenario = parse_scenario(
        "name: s\ntarget: {address: 127.0.0.1, port: 80}\nclients: {cidr: 127.0.0.2/32}\n"
        "flows: [{kind: http}]\narrival: {model: open, rate: 100}\n"
        "bounds: {max_flows: 30, max_duration: 10s}\n",
        "s.yaml",
    )
    records = _records(30)
    planned_at_s = [None if i % 5 == 0 else 0.01 * i for i in range(30)]
    thresholds = [parse_threshold(t) for t in ("errors < 1%", "share > 10%", "p99 < 1s")]
    run = open_run_dir(tmp_path / "run", scenario, None, 30, False)
    try:
        for rec in sorted(records, key=lambda r: -r.flow_id):
            run.journal.add(rec)
        summary = write_run(run, scenario, RunResult(records, {}, False), None, 30,
                            thresholds=thresholds, planned_at_s=planned_at_s)  # fmt: skip
    finally:
        run.close()
    table = pq.read_table(tmp_path / "run" / flowlog.FLOWS_FILE)
    assert table.equals(_reference(tmp_path, records), check_metadata=True)
    expected = flowsummary.summarize(records)
    assert {k: summary[k] for k in expected} == expected
    assert summary["thresholds"] == evaluate(thresholds, summary, records)
    opened = [r.start_s for r in records if planned_at_s[r.flow_id] is not None]
    assert summary["rates"]["achieved_per_s"] == round(
        (len(opened) - 1) / (max(opened) - min(opened)), 3
    )
    assert summary["complete"] is True


def _not_read(_path: object) -> object:
    raise AssertionError("journal read back: the run's Journal kept its batches")


def test_a_failed_write_of_the_log_fails_the_finish_and_keeps_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flows.parquet is written in a thread while the summary is made: its error still ends
    the finish (with the journal named), and no summary.json claims a log that is not there."""
    from lvsprobe.errors import LvsprobeError
    from lvsprobe.replay.rundir import open_run_dir, write_run
    from lvsprobe.replay.runparts import RunResult
    from lvsprobe.replay.scenario import parse_scenario

    scenario = parse_scenario(
        "name: s\ntarget: {address: 127.0.0.1, port: 80}\nclients: {cidr: 127.0.0.2/32}\n"
        "flows: [{kind: http}]\narrival: {model: closed, concurrency: 1}\n"
        "bounds: {max_flows: 5, max_duration: 10s}\n",
        "s.yaml",
    )
    records = _records(5)

    def full_disk(_run_dir: Path, _table: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(flowlog, "write_flows_table", full_disk)
    run = open_run_dir(tmp_path / "run", scenario, None, 5, False)
    try:
        for rec in records:
            run.journal.add(rec)
        with pytest.raises(LvsprobeError, match=r"No space left.*flows\.journal\.arrows"):
            write_run(run, scenario, RunResult(records, {}, False), None, 5)
    finally:
        run.close()
    assert not (tmp_path / "run" / flowlog.SUMMARY_FILE).exists()
    assert flowlog.read_flow_log(tmp_path / "run").table.num_rows == 5


def test_a_journal_sorted_and_summarised_loads_no_pandas(tmp_path: Path) -> None:
    """Sorting a large journal out of flow order: its row order handed to pyarrow as numpy
    would be converted by pa.array, which imports pandas (0.3 s)."""
    code = f"""
import sys
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_run_finish import _records
from lvsprobe.replay import flowlog
from lvsprobe.replay.flowcolumns import FlowColumns
from lvsprobe.replay.flowsummary import summarize_columns
flowlog.JOURNAL_SORT_MIN_ROWS = 10
run, records = Path({str(tmp_path)!r}), _records(30)
journal = flowlog.open_journal(run, 30, "s")
for i in [*range(15, 30), *range(15)]:
    journal.add(records[i])
journal.close()
table = flowlog.flows_table(run, records, (), journal.written())
summarize_columns(FlowColumns(table))
print("pyarrow.compute" in sys.modules, "pandas" in sys.modules, table.num_rows)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "False", "30"]


@pytest.mark.parametrize("column", ["end_s", "outcome", "kind", "out_bytes"])
def test_a_flow_log_with_nulls_where_none_can_be_is_refused_in_one_line(
    tmp_path: Path, column: str
) -> None:
    """Another writer's flows.parquet, its fields all nullable, a null in a column the
    summary reads: `replay summary` said so in a traceback (TypeError) before, and reading
    the columns' buffers would take the null's undefined slot as a value."""
    import pyarrow as pa
    from click.testing import CliRunner

    from lvsprobe.cli import cli

    table = flowlog.records_to_table(_records(3))
    loose = pa.table({name: table.column(name) for name in table.column_names})
    index = loose.schema.get_field_index(column)
    values = table.column(column).to_pylist()
    loose = loose.set_column(index, column, pa.array([values[0], None, values[2]]))
    pq.write_table(loose, tmp_path / flowlog.FLOWS_FILE)
    result = CliRunner().invoke(cli, ["replay", "summary", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (
        f"lvsprobe: {tmp_path / flowlog.FLOWS_FILE}: not a readable flow log: column "
        f"{column!r} is null in 1 of 3 rows (a flow log's never is)"
    )
    assert not (tmp_path / flowlog.SUMMARY_FILE).exists()
