"""Arrow arrays built from buffers (arrowarrays.py) equal pyarrow's own conversion, and the
flow log is written without importing pandas (pyarrow's conversion would import it)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.replay.arrowarrays import arrow_array

ROOT = Path(__file__).resolve().parents[2]

VALUES = {
    "int64": st.integers(-(2**63), 2**63 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "float64": st.one_of(st.floats(), st.integers(-(2**53), 2**53)),
    "bool_": st.booleans(),
    "string": st.text(),  # non-ASCII, empty and long ones among them
}


def _comparable(array: pa.Array) -> list[Any]:
    return ["nan" if isinstance(v, float) and math.isnan(v) else v for v in array.to_pylist()]


@pytest.mark.parametrize("type_name", sorted(VALUES))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_built_from_buffers_equals_pyarrows_conversion(type_name: str, data: st.DataObject) -> None:
    nulls = data.draw(st.sampled_from(["none", "some", "all"]))
    value = VALUES[type_name]
    values = data.draw(
        st.lists({"none": value, "some": st.none() | value, "all": st.none()}[nulls], max_size=80)
    )
    ours = arrow_array(values, type_name)
    theirs = pa.array(values, type=getattr(pa, type_name)())
    ours.validate(full=True)
    assert ours.type == theirs.type
    assert ours.null_count == theirs.null_count
    assert _comparable(ours) == _comparable(theirs)


@pytest.mark.parametrize(
    ("values", "type_name"),
    [
        ([1, "x"], "int64"),
        ([1.5, "x"], "float64"),
        (["a", 1], "string"),
        (["a", b"b"], "string"),
        ([None, "a", 3], "string"),
        ([None, 1, object()], "int32"),
    ],
)
def test_a_value_of_another_type_raises(values: list[Any], type_name: str) -> None:
    with pytest.raises((TypeError, ValueError)):
        arrow_array(values, type_name)


def test_an_int32_out_of_range_raises() -> None:
    with pytest.raises(OverflowError):
        arrow_array([2**31], "int32")


def test_a_run_directory_is_written_and_summarised_without_pandas(tmp_path: Path) -> None:
    """pyarrow's own conversion (pa.array) imports pandas on first use: that was most of an
    engine process's start-up outside its loop."""
    code = f"""
import sys
from pathlib import Path
from lvsprobe.replay import flowlog
from lvsprobe.replay import flowsummary
from lvsprobe.replay.flowrecord import FlowRecord
rec = FlowRecord(0, "http", "127.0.0.2", 1, "127.0.0.1", 80, "tcp", 0.0, 0.1, 0.0, end_s=0.2)
rec.outcome, rec.backend, rec.connect_s = "ok", "rs1", 0.01
rec.settle()
journal = flowlog.open_journal(Path({str(tmp_path)!r}), 1, "s")
journal.add(rec)
journal.close()
flowlog.write_flows(Path({str(tmp_path)!r}), [rec])
flowsummary.summarize([rec])
print(sorted(m for m in sys.modules if m.split(".")[0] == "pandas"))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert (tmp_path / "flows.parquet").is_file()
