"""The flow log: schema round trip through Parquet and pandas, streaming writer, summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from lvsprobe.replay import flowlog, flowsummary
from lvsprobe.replay.flowlog import FlowLogWriter, FlowRecord
from lvsprobe.replay.flowrecord import COLUMNS
from tests.flowrecords import flow_record

_record = flow_record


def test_writer_streams_row_groups_and_pandas_reads(tmp_path: Path) -> None:
    path = tmp_path / flowlog.FLOWS_FILE
    writer = FlowLogWriter(path, batch=2)
    for i in range(5):
        writer.add(_record(i, backend="rs1", tls_session_reused=(i % 2 == 0)))
    writer.close()
    assert pq.ParquetFile(str(path)).metadata.num_row_groups == 3
    frame = pd.read_parquet(path)
    assert list(frame.columns) == [f.name for f in flowlog.FLOW_SCHEMA]
    assert frame["flow_id"].tolist() == [0, 1, 2, 3, 4]
    assert frame["backend"].unique().tolist() == ["rs1"]
    assert flowlog.read_flows(tmp_path).num_rows == 5


def test_empty_log_is_valid(tmp_path: Path) -> None:
    writer = FlowLogWriter(tmp_path / flowlog.FLOWS_FILE)
    writer.close()
    writer.close()
    assert flowlog.read_flows(tmp_path).num_rows == 0


def test_summary_counts_outcomes_backends_and_agreement(tmp_path: Path) -> None:
    records = [
        _record(
            0,
            backend="rs1",
            conn_backend="rs1",
            conn_backend_address="198.18.1.11:80",
            attribution_agrees=True,
            connect_s=0.001,
        ),
        _record(1, outcome="refused"),
        _record(2, outcome="error:no route", conn_backend="rs2", attribution_agrees=None),
    ]
    summary = flowsummary.summarize(records, complete=True)
    assert summary["flows"] == 3
    assert summary["errors"] == 2
    assert summary["outcomes"] == {"error:no route": 1, "ok": 1, "refused": 1}
    assert summary["backends"] == {"rs1": 1, "rs2": 1, "unknown": 1}
    assert summary["attribution"]["agree"] == 1
    assert summary["complete"] is True
    flowsummary.write_summary(tmp_path, summary)
    assert json.loads((tmp_path / flowlog.SUMMARY_FILE).read_text())["flows"] == 3


def test_record_fields_are_the_schema_columns() -> None:
    import dataclasses

    names = [f.name for f in dataclasses.fields(FlowRecord)]
    assert names == [f.name for f in flowlog.FLOW_SCHEMA]


_VALUES = {
    "int64": st.integers(-(2**40), 2**40),
    "int32": st.integers(0, 65535),
    "float64": st.floats(-1e6, 1e6, allow_nan=False),
    "string": st.text(max_size=8),
    "bool_": st.booleans(),
}


@st.composite
def _records(draw: st.DrawFn) -> FlowRecord:
    values = {
        name: draw(st.none() | _VALUES[type_name] if nullable else _VALUES[type_name])
        for name, type_name, nullable in COLUMNS
    }
    return FlowRecord(**values)


@given(st.lists(_records(), max_size=6))
def test_records_to_table_keeps_every_value_in_its_column(records: list[FlowRecord]) -> None:
    """Rows are transposed into columns in one go: each value lands in its own column, nulls
    included, and reads back as the same record."""
    table = flowlog.records_to_table(records)
    assert table.schema.equals(flowlog.FLOW_SCHEMA, check_metadata=True)
    assert flowlog.records_from_table(table) == records


@given(st.lists(st.floats(0, 1e4, allow_nan=False), max_size=60), st.sampled_from([0.5, 0.99]))
def test_summary_quantile_is_the_value_at_its_rank(values: list[float], q: float) -> None:
    """A selection (numpy's partition), the very value a full sort puts at rank ceil(q n)."""
    expected = None
    if values:
        ordered = sorted(values)
        expected = round(ordered[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))], 6)
    assert flowlog._quantile(values, q) == expected


def test_the_log_encodes_only_text_columns_by_dictionary(tmp_path: Path) -> None:
    """Dictionary encoding where values repeat; plain for numbers, nearly all distinct (a
    dictionary tried and dropped in every row group was half the write's time)."""
    writer = FlowLogWriter(tmp_path / flowlog.FLOWS_FILE)
    for i in range(50):
        writer.add(_record(i, backend="rs1"))
    writer.close()
    meta = pq.ParquetFile(tmp_path / flowlog.FLOWS_FILE).metadata.row_group(0)
    for i in range(meta.num_columns):
        column = meta.column(i)
        dictionary = column.dictionary_page_offset is not None
        text = dict((n, t) for n, t, _ in COLUMNS)[column.path_in_schema] == "string"
        assert dictionary == text, column.path_in_schema
