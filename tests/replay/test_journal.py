"""The flow journal: rows readable while written and after the writer's death at any byte,
the flow log read from it when flows.parquet never came, and the summary rebuilt from it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lvsprobe.errors import LvsprobeError
from lvsprobe.replay import flowlog, flowsummary
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.journal import Journal, read_journal
from tests.flowrecords import flow_record


def _record(flow_id: int, outcome: str = "ok") -> FlowRecord:
    return flow_record(flow_id, outcome=outcome, backend=f"rs{flow_id % 3}")


class _Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def _journal(path: Path, clock: _Clock, flush_rows: int = 3) -> Journal[FlowRecord]:
    return Journal(path, flowlog.flow_schema(), flowlog.records_to_table, flush_rows, 1.0, clock)


def test_rows_are_readable_once_flushed_without_closing(tmp_path: Path) -> None:
    clock = _Clock()
    journal = _journal(tmp_path / "j.arrows", clock)
    journal.add(_record(0))
    journal.add(_record(1))
    journal.tick()  # not waited long enough: still in memory
    assert read_journal(journal.path).table.num_rows == 0
    clock.now_s = 1.0
    journal.tick()  # the oldest row has waited its second
    assert read_journal(journal.path).table.num_rows == 2
    for i in range(2, 5):
        journal.add(_record(i))  # the third pending row flushes
    read = read_journal(journal.path)
    assert read.table.column("flow_id").to_pylist() == [0, 1, 2, 3, 4]
    assert not read.torn
    journal.add(_record(5))
    journal.close()
    assert read_journal(journal.path).table.num_rows == 6


def test_a_writer_killed_at_any_byte_leaves_every_whole_batch(tmp_path: Path) -> None:
    """SIGKILL can cut the file anywhere: every prefix reads as the batches it holds whole."""
    path = tmp_path / "j.arrows"
    journal = _journal(path, _Clock(), flush_rows=2)
    ends = [path.stat().st_size]  # after the schema message
    for i in range(6):
        journal.add(_record(i))
        if i % 2:
            ends.append(path.stat().st_size)  # after each batch
    data = path.read_bytes()
    cut = tmp_path / "cut.arrows"
    sizes = {*range(0, len(data), 17), *(e + d for e in ends for d in (-1, 0, 1))}
    for size in sorted(s for s in sizes if 0 <= s <= len(data)):
        cut.write_bytes(data[:size])
        read = read_journal(cut)
        whole = sum(1 for end in ends[1:] if end <= size)
        assert read.table.num_rows == 2 * whole, size
        assert read.torn == (size not in ends), size


def test_flow_log_falls_back_to_the_journal_sorted(tmp_path: Path) -> None:
    journal = flowlog.open_journal(tmp_path, planned=10, scenario="soak")
    for flow_id in (3, 1, 2, 0):  # the order flows finish in
        journal.add(_record(flow_id, "ok" if flow_id else "reset"))
    journal.flush()
    log = flowlog.read_flow_log(tmp_path)  # the writer is alive: no close, no footer
    assert log.from_journal and not log.torn
    assert log.table.column("flow_id").to_pylist() == [0, 1, 2, 3]
    assert log.table.schema.equals(flowlog.flow_schema(), check_metadata=True)
    assert (log.planned, log.scenario) == (10, "soak")
    assert flowlog.read_flows(tmp_path).num_rows == 4
    summary = flowsummary.read_summary(tmp_path)
    assert summary["flows"] == 4 and summary["ok"] == 3 and summary["planned"] == 10
    assert summary["complete"] is False and summary["stopped"] == "unfinished"
    assert summary["rebuilt"] is True and summary["scenario"] == "soak"


def test_final_log_wins_and_replaces_the_journal(tmp_path: Path) -> None:
    journal = flowlog.open_journal(tmp_path, planned=2, scenario="s")
    journal.add(_record(0))
    journal.flush()
    records = [_record(1), _record(0)]
    assert flowlog.write_flows(tmp_path, records) == 2
    assert not (tmp_path / flowlog.JOURNAL_FILE).exists()
    assert flowlog.read_flows(tmp_path).column("flow_id").to_pylist() == [0, 1]
    assert not flowlog.read_flow_log(tmp_path).from_journal


def test_a_journal_cut_before_its_schema_reads_as_no_flows(tmp_path: Path) -> None:
    (tmp_path / flowlog.JOURNAL_FILE).write_bytes(b"\xff\xff")
    log = flowlog.read_flow_log(tmp_path)
    assert log.table.num_rows == 0 and log.torn
    assert log.table.schema.equals(flowlog.flow_schema())
    assert flowsummary.read_summary(tmp_path)["flows"] == 0


def test_no_log_or_a_foreign_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LvsprobeError, match="no flow log"):
        flowlog.read_flows(tmp_path)
    schema = flowlog.flow_schema().remove(0)
    other: Journal[dict[str, object]] = Journal(
        tmp_path / flowlog.JOURNAL_FILE,
        schema,
        lambda rows: pa.Table.from_pylist(rows, schema=schema),
    )
    other.close()
    with pytest.raises(LvsprobeError, match="not a flow journal"):
        flowlog.read_flows(tmp_path)
    (tmp_path / flowlog.FLOWS_FILE).write_bytes(b"PAR1 garbage")
    with pytest.raises(LvsprobeError, match=r"flows\.parquet: not a readable flow log"):
        flowlog.read_flows(tmp_path)


def test_parquet_rewrite_keeps_the_old_log_until_the_new_one_is_whole(tmp_path: Path) -> None:
    flowlog.write_flows(tmp_path, [_record(0)])
    writer = flowlog.FlowLogWriter(tmp_path / flowlog.FLOWS_FILE, batch=1)
    writer.add(_record(0))
    writer.add(_record(1))
    assert pq.read_table(tmp_path / flowlog.FLOWS_FILE).num_rows == 1  # the old log, whole
    writer.close()
    assert pq.read_table(tmp_path / flowlog.FLOWS_FILE).num_rows == 2
    assert not list(tmp_path.glob("*.tmp"))


def test_a_kept_journal_gives_back_what_its_file_holds(tmp_path: Path) -> None:
    """A run's finish takes the batches the journal kept instead of reading its file back."""
    journal = Journal(tmp_path / "j.arrows", flowlog.flow_schema(), flowlog.records_to_table,
                      flush_rows=3, keep=True)  # fmt: skip
    assert journal.written() is not None and journal.written().num_rows == 0  # type: ignore[union-attr]
    for i in range(7):
        journal.add(_record(i, "ok" if i % 2 else "reset"))
    journal.flush()
    kept = journal.written()
    journal.close()
    assert kept is not None
    assert kept.equals(read_journal(tmp_path / "j.arrows").table)
    assert _journal(tmp_path / "other.arrows", _Clock()).written() is None  # not kept


def test_a_batch_whose_write_failed_is_not_kept(tmp_path: Path) -> None:
    def to_table(rows: list[FlowRecord]) -> pa.Table:
        if rows[0].flow_id:  # a batch the writer refuses (here: not the stream's schema)
            return pa.table({"flow_id": [rows[0].flow_id]})
        return flowlog.records_to_table(rows)

    journal = Journal(tmp_path / "j.arrows", flowlog.flow_schema(), to_table, flush_rows=100,
                      keep=True)  # fmt: skip
    journal.add(_record(0))
    journal.flush()
    journal.add(_record(1))
    with pytest.raises(ValueError):
        journal.flush()
    kept = journal.written()
    assert kept is not None and kept.column("flow_id").to_pylist() == [0]
