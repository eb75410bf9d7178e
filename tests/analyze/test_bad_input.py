"""Hostile inputs: a clear one-line error naming what is missing, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvsprobe.analyze import inputs
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import AnalysisError


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, list(args))
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.output


@pytest.mark.parametrize("command", ["fairness", "persistence"])
def test_directory_without_flow_log(tmp_path: Path, command: str) -> None:
    code, out = invoke("analyze", command, str(tmp_path))
    assert code == ExitCode.ERROR
    assert "flows.parquet: no flow log" in out
    assert "Traceback" not in out


def test_truncated_flow_log(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(k, "rs1", 0.1 * k) for k in range(50)])
    data = (run / "flows.parquet").read_bytes()
    (run / "flows.parquet").write_bytes(data[: len(data) // 2])
    code, out = invoke("analyze", "fairness", str(run))
    assert code == ExitCode.ERROR
    assert "not a readable Parquet flow log" in out


def test_foreign_parquet(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), str(tmp_path / "flows.parquet"))
    code, out = invoke("analyze", "fairness", str(tmp_path))
    assert code == ExitCode.ERROR
    assert "missing column(s) flow_id, kind" in out


def test_run_without_flows(fb: SimpleNamespace) -> None:
    code, out = invoke("analyze", "fairness", str(fb.run([])))
    assert code == ExitCode.ERROR
    assert "the run has no flows" in out


def test_service_the_run_never_touched(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(k, fb.names[k % 3], 0.1 * k) for k in range(9)])
    code, out = invoke("analyze", "fairness", str(run), "--service", "10.9.9.9:443")
    assert code == ExitCode.ERROR
    assert "never touched service 10.9.9.9:443" in out


def test_backend_the_model_does_not_know(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(0, "rs9", 0.0)])
    code, out = invoke("analyze", "fairness", str(run))
    assert code == ExitCode.ERROR
    assert "served by rs9" in out


def test_all_flows_failed(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(k, None, 0.1 * k, outcome="refused") for k in range(3)])
    code, out = invoke("analyze", "fairness", str(run))
    assert code == ExitCode.ERROR
    assert "no flow reached a backend (3 failed)" in out


def test_garbage_json_side_files(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(0, "rs1", 0.0)])
    (run / "director.json").write_text("{not json")
    code, out = invoke("analyze", "fairness", str(run))
    assert code == ExitCode.ERROR
    assert "director.json: unreadable JSON" in out


def test_bad_weights_flag(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(0, "rs1", 0.0)])
    code, out = invoke("analyze", "fairness", str(run), "--weights", "rs1:4")
    assert code == ExitCode.ERROR
    assert "--weights: expected NAME=WEIGHT" in out


def test_unknown_scheduler(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(0, "rs1", 0.0)])
    _, out = invoke("analyze", "fairness", str(run), "--scheduler", "xyz")
    assert "unknown scheduler 'xyz'" in out


def test_report_without_analyses(tmp_path: Path) -> None:
    code, out = invoke("report", str(tmp_path))
    assert code == ExitCode.ERROR
    assert "no analysis results" in out


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_bytes_as_flow_log_raise_analysis_error(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "flows.parquet"
    path.write_bytes(blob)
    with pytest.raises(AnalysisError):
        inputs.read_flows(path)


def test_counter_source_needs_snapshots(fb: SimpleNamespace, tmp_path: Path) -> None:
    run = fb.run([fb.flow(0, "rs1", 0.0)], scheduler="rr", weights=(1, 1, 1))
    before = tmp_path / "b.json"
    after = tmp_path / "a.json"
    doc = fb.snapshot("rr", (1, 1, 1))
    before.write_text(json.dumps(doc))
    for i, b in enumerate(doc["services"][0]["backends"]):
        b["stats"]["conns"] = 5 + (i == 0)
    after.write_text(json.dumps(doc))
    code, out = invoke(
        "analyze",
        "fairness",
        str(run),
        "--source",
        "counters",
        "--before",
        str(before),
        "--after",
        str(after),
    )
    assert code == ExitCode.OK, out
    code, out = invoke(
        "analyze",
        "fairness",
        str(run),
        "--source",
        "counters",
        "--before",
        str(after),
        "--after",
        str(before),
    )
    assert code == ExitCode.ERROR
    assert "counter went down" in out


def _retyped(run: Path, column: str, values: pa.Array) -> Path:
    """RUN with one flow-log column replaced by `values`."""
    path = run / "flows.parquet"
    table = pq.read_table(str(path))
    index = table.column_names.index(column)
    pq.write_table(table.set_column(index, column, values), str(path))
    return run


def _wrong_values(kind: pa.DataType, rows: int) -> pa.Array:
    """Values of another type than `kind`: text for numbers and flags, numbers for text."""
    if pa.types.is_string(kind):
        return pa.array([1.5] * rows)
    return pa.array(["x"] * rows)


@pytest.mark.parametrize("column", inputs.REQUIRED_COLUMNS + inputs.OPTIONAL_COLUMNS)
def test_every_column_an_analyzer_reads_is_type_checked(fb: SimpleNamespace, column: str) -> None:
    run = fb.run([fb.flow(k, "rs1", 0.1 * k) for k in range(4)])
    kind = pq.read_schema(str(run / "flows.parquet")).field(column).type
    _retyped(run, column, _wrong_values(kind, 4))
    with pytest.raises(AnalysisError, match=rf"flows\.parquet: column '{column}' holds \w+ values"):
        inputs.read_flows(run / "flows.parquet")


@pytest.mark.parametrize(
    "args",
    [
        ("persistence", "--timeout", "300"),
        ("failover", "--failover-at", "1"),
        ("fairness",),
    ],
    ids=lambda a: a[0],
)
def test_text_start_times_give_one_line_naming_the_column(
    fb: SimpleNamespace, args: tuple[str, ...]
) -> None:
    run = fb.run([fb.flow(k, fb.names[k % 2], 0.1 * k, end_s=5.0) for k in range(4)])
    _retyped(run, "start_s", pa.array(["a", "b", "c", "d"]))
    code, out = invoke("analyze", args[0], str(run), *args[1:])
    assert code == ExitCode.ERROR
    assert "column 'start_s' holds string values, expected numbers" in out
    assert "Traceback" not in out


def test_empty_values_in_a_required_column_are_named(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(k, "rs1", 0.1 * k) for k in range(3)])
    _retyped(run, "end_s", pa.array([1.0, None, 2.0]))
    with pytest.raises(AnalysisError, match=r"column 'end_s' has 1 empty values"):
        inputs.read_flows(run / "flows.parquet")


def test_integer_times_and_all_null_optional_columns_are_accepted(fb: SimpleNamespace) -> None:
    run = fb.run([fb.flow(k, "rs1", float(k)) for k in range(3)])
    _retyped(run, "start_s", pa.array([0, 1, 2], pa.int64()))
    _retyped(run, "backend", pa.array([None] * 3, pa.null()))
    frame = inputs.read_flows(run / "flows.parquet")
    assert list(frame["start_s"]) == [0, 1, 2]


def test_killed_run_is_read_from_its_journal(tmp_path: Path) -> None:
    """A run killed before flows.parquet was written still has every flushed flow to analyse."""
    from lvsprobe.replay import flowlog
    from tests.flowrecords import flow_record

    journal = flowlog.open_journal(tmp_path, planned=4, scenario="killed")
    for flow_id in range(3):
        journal.add(flow_record(flow_id, backend=f"rs{flow_id}"))
    journal.flush()
    assert not (tmp_path / flowlog.FLOWS_FILE).exists()
    frame = inputs.read_flows(tmp_path / flowlog.FLOWS_FILE)
    assert list(frame["flow_id"]) == [0, 1, 2]
