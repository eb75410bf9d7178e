"""The analyzers read only their columns of a flow log (a projected pyarrow dataset): a
column no analyzer names is never decoded, and a log without the newer ones still reads."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lvsprobe.analyze import inputs
from lvsprobe.replay import flowlog
from lvsprobe.replay.flowlog import FlowRecord


def _record(flow_id: int) -> FlowRecord:
    return FlowRecord(flow_id, "tls", "127.0.0.2", 40000 + flow_id, "127.0.0.1", 443, "tcp",
                      0.0, 0.1 * flow_id, 1.7e9, end_s=0.1 * flow_id + 0.05, outcome="ok",
                      tls_version="TLSv1.3", ftp_sha256="ab" * 32, worker="w1")  # fmt: skip


def test_only_the_analyzers_columns_are_read(tmp_path: Path) -> None:
    flowlog.write_flows(tmp_path, [_record(i) for i in range(3)])
    frame = inputs.read_flows(tmp_path / flowlog.FLOWS_FILE)
    assert set(frame.columns) == {*inputs.REQUIRED_COLUMNS, *inputs.OPTIONAL_COLUMNS}
    assert not {"tls_version", "ftp_sha256", "worker", "in_bytes"} & set(frame.columns)
    assert frame["flow_id"].tolist() == [0, 1, 2]


def test_a_log_with_only_the_required_columns_reads(tmp_path: Path) -> None:
    table = flowlog.records_to_table([_record(i) for i in range(2)])
    pq.write_table(table.select(list(inputs.REQUIRED_COLUMNS)), tmp_path / flowlog.FLOWS_FILE)
    frame = inputs.read_flows(tmp_path / flowlog.FLOWS_FILE)
    assert frame["backend"].isna().all() and len(frame) == 2
    assert pa.types.is_integer(pa.Table.from_pandas(frame).schema.field("flow_id").type)
