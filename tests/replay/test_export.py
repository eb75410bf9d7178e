"""`lvsprobe replay export`: CSV and JSON lines of every flow, also from a journal-only run."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.replay import flowlog
from lvsprobe.replay.export import BATCH_ROWS
from lvsprobe.replay.flowlog import COLUMNS, FlowRecord


def _records(count: int) -> list[FlowRecord]:
    out = []
    for i in range(count):
        rec = FlowRecord(i, "http", "127.0.0.2", 40000 + i % 1000, "127.0.0.1", 80, "tcp",
                         i * 0.01, i * 0.01 + 0.001, 1.7e9 + i)  # fmt: skip
        rec.end_s, rec.outcome, rec.backend = i * 0.01 + 0.005, "ok" if i % 7 else "reset", "rs1"
        rec.detail = None if i % 7 else 'said "no", then, closed'
        rec.settle()
        out.append(rec)
    return out


@pytest.fixture
def journal_only(tmp_path: Path) -> Path:
    """A run killed before its end: flows in the journal, no flows.parquet, no summary."""
    journal = flowlog.open_journal(tmp_path, 20_000, "killed")
    for rec in _records(BATCH_ROWS + 5):  # more than one export batch
        journal.add(rec)
    journal.flush()  # what a SIGKILL leaves: flushed batches, the stream never closed
    return tmp_path


def test_csv_export_of_a_journal_only_run(journal_only: Path) -> None:
    result = CliRunner().invoke(cli, ["replay", "export", str(journal_only)])
    assert result.exit_code == ExitCode.OK, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert list(rows[0]) == [name for name, _, _ in COLUMNS]
    assert len(rows) == BATCH_ROWS + 5
    assert rows[7]["detail"] == 'said "no", then, closed' and rows[1]["detail"] == ""
    assert float(rows[3]["total_corrected_s"]) == pytest.approx(0.005)


def test_jsonl_export_to_a_file(journal_only: Path, tmp_path: Path) -> None:
    out = tmp_path / "flows.jsonl"
    result = CliRunner().invoke(
        cli, ["replay", "export", str(journal_only), "--format", "jsonl", "-o", str(out)]
    )
    assert result.exit_code == ExitCode.OK, result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == BATCH_ROWS + 5
    first = json.loads(lines[0])
    assert first["outcome"] == "reset" and first["client_port"] == 40000
    assert first["conn_backend"] is None and first["stage"] is None


def test_export_of_a_directory_without_a_run_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["replay", "export", str(tmp_path), "--format", "csv"])
    assert result.exit_code == ExitCode.ERROR
    assert "no flow log" in result.stderr and "Traceback" not in result.output
    bad = CliRunner().invoke(cli, ["replay", "export", str(tmp_path), "--format", "xml"])
    assert bad.exit_code == ExitCode.USAGE and "--format" in bad.stderr
