"""The flow log's columns as numpy (flowcolumns.py, arrowarrays.numpy_of) against the records
read one by one: numbers and nulls off the Arrow buffers (chunked, sliced mid-byte), text
coded both ways, each flow's backend as `backend_of` names it, and the summary and the
thresholds read off the columns as a record-by-record reference computes them."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.replay import flowcolumns, flowlog, flowsummary
from lvsprobe.replay.arrowarrays import arrow_array, numpy_of
from lvsprobe.replay.flowcolumns import FlowColumns, labels_of
from lvsprobe.replay.flowrecord import FlowRecord, backend_of
from lvsprobe.replay.thresholds import evaluate, parse_threshold

NUMBERS = {
    "int64": st.integers(-(2**63), 2**63 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "float64": st.floats(allow_nan=False),
    "bool_": st.booleans(),
}


def _chunked(values: list[Any], type_name: str, cuts: list[int], skip: int) -> pa.ChunkedArray:
    """`values` in chunks cut at `cuts`, each a slice `skip` rows into a longer array (its
    bitmaps then start mid-byte)."""
    bounds = [0, *sorted({c % (len(values) + 1) for c in cuts}), len(values)]
    chunks = []
    for start, end in itertools.pairwise(bounds):
        padded = [values[start]] * skip + values[start:end] if end > start else []
        chunks.append(arrow_array(padded, type_name).slice(skip if padded else 0))
    return pa.chunked_array(chunks, type=getattr(pa, type_name)())


@pytest.mark.parametrize("type_name", sorted(NUMBERS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_numbers_read_off_the_buffers_are_the_values(type_name: str, data: st.DataObject) -> None:
    values = data.draw(st.lists(st.none() | NUMBERS[type_name], max_size=70))
    cuts = data.draw(st.lists(st.integers(0, 70), max_size=4))
    column = _chunked(values, type_name, cuts, data.draw(st.integers(0, 11)))
    assert column.to_pylist() == values
    numbers = numpy_of(column, type_name)
    present = [v is not None for v in values]
    assert (numbers.present is None) == all(present)
    if numbers.present is not None:
        assert numbers.present.tolist() == present
    assert [v for v, p in zip(numbers.values.tolist(), present, strict=True) if p] == [
        v for v in values if v is not None
    ]


@pytest.mark.parametrize("min_rows", [0, 10**9], ids=["pyarrow.compute", "python"])
@given(st.lists(st.none() | st.sampled_from(["ok", "", "é", "rs1", "reset"]), max_size=50))
def test_text_is_coded_alike_both_ways(min_rows: int, values: list[str | None]) -> None:
    saved = flowcolumns.COMPUTE_MIN_ROWS
    flowcolumns.COMPUTE_MIN_ROWS = min_rows
    try:
        labels = labels_of(_chunked(values, "string", [len(values) // 2], 3))
    finally:
        flowcolumns.COMPUTE_MIN_ROWS = saved
    assert [None if c < 0 else labels.names[c] for c in labels.codes.tolist()] == values
    assert labels.counts() == Counter(v for v in values if v is not None)
    groups = labels.groups()
    assert list(groups) == sorted({v for v in values if v is not None})
    for name, rows in groups.items():
        assert rows.tolist() == [i for i, v in enumerate(values) if v == name]


def _record(draw: st.DrawFn, flow_id: int) -> FlowRecord:
    rec = FlowRecord(flow_id, draw(st.sampled_from(["http", "tcp", "tls"])), "127.0.0.2", 1,
                     "127.0.0.1", 80, "tcp", 0.0, draw(st.floats(0, 1)), 0.0)  # fmt: skip
    rec.connect_s = draw(st.none() | st.floats(0, 2))
    rec.ttfb_s = draw(st.none() | st.floats(0, 2))
    rec.end_s = rec.start_s + draw(st.floats(0, 3))
    rec.outcome = draw(st.sampled_from(["ok", "ok", "reset", "timeout", "error:http-503"]))
    rec.backend = draw(st.sampled_from([None, "", "rs1", "rs2", "unknown"]))
    rec.conn_backend = draw(st.sampled_from([None, "", "rs2", "rs3"]))
    rec.conn_backend_address = draw(st.sampled_from([None, "198.18.1.12:80"]))
    rec.attribution_agrees = draw(st.sampled_from([None, True, False]))
    rec.tls_session_reused = draw(st.sampled_from([None, True, False]))
    rec.out_bytes, rec.in_bytes = draw(st.integers(0, 2**40)), draw(st.integers(0, 2**40))
    rec.stage = draw(st.sampled_from([None, 0, 1, 10]))
    rec.settle()
    return rec


@st.composite
def _flows(draw: st.DrawFn) -> list[FlowRecord]:
    return [_record(draw, i) for i in range(draw(st.integers(0, 40)))]


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(sorted(values)[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))], 6)


def _reference(rows: list[FlowRecord]) -> dict[str, Any]:
    """The summary's counts and figures computed record by record (the latency block apart:
    test_latency.py holds it to HdrHistogram's)."""
    ok = sum(r.outcome == "ok" for r in rows)
    agrees = [r.attribution_agrees for r in rows]
    compared = len(rows) - agrees.count(None)
    connect = [r.connect_s for r in rows if r.connect_s is not None]
    ttfb = [r.ttfb_s for r in rows if r.ttfb_s is not None]
    span = max((r.end_s for r in rows), default=0.0)
    return {
        "flows": len(rows),
        "ok": ok,
        "errors": len(rows) - ok,
        "outcomes": dict(sorted(Counter(r.outcome for r in rows).items())),
        "kinds": dict(sorted(Counter(r.kind for r in rows).items())),
        "backends": dict(sorted(Counter(map(backend_of, rows)).items())),
        "attribution": {
            "compared": compared,
            "agree": agrees.count(True),
            "disagree": compared - agrees.count(True),
            "self_named": sum(r.backend is not None for r in rows),
            "conn_table": sum(r.conn_backend_address is not None for r in rows),
        },
        "connect_s": {"p50": _quantile(connect, 0.5), "p99": _quantile(connect, 0.99)},
        "ttfb_s": {"p50": _quantile(ttfb, 0.5), "p99": _quantile(ttfb, 0.99)},
        "duration_s": round(span, 6),
        "flows_per_s": round(len(rows) / span, 3) if span > 0 else None,
        "out_bytes": sum(r.out_bytes for r in rows),
        "in_bytes": sum(r.in_bytes for r in rows),
        "tls_session_reused": sum(bool(r.tls_session_reused) for r in rows),
    }


@settings(max_examples=80, deadline=None)
@given(_flows())
def test_the_summary_read_off_the_columns_is_the_records_own(rows: list[FlowRecord]) -> None:
    summary = flowsummary.summarize(rows)
    assert {k: summary[k] for k in _reference(rows)} == _reference(rows)
    backends = FlowColumns(flowlog.records_to_table(rows)).backend()
    assert [backends.names[c] for c in backends.codes.tolist()] == list(map(backend_of, rows))


THRESHOLDS = [
    "errors < 10%", "errors{kind=tcp} < 10%", "errors{backend=rs2} < 10%",
    "errors{stage=10} < 10%", "errors{backend=rs9} < 10%", "share > 20%", "share < 60%",
    "share{backend=unknown} < 30%", "share{backend=rs9} > 1%",
]  # fmt: skip


def _observed(t: str, rows: list[FlowRecord], backends: list[str]) -> str:
    """What a threshold on errors or shares observes, record by record."""
    threshold = parse_threshold(t)
    key = {"kind": lambda r: r.kind, "backend": backend_of, "stage": lambda r: str(r.stage)}
    picked = [r for r in rows if threshold.key is None or key[threshold.key](r) == threshold.name]
    if threshold.subject == "errors":
        if not picked:
            return "no flows"
        return f"{sum(r.outcome != 'ok' for r in picked) / len(picked):.3%} of {len(picked)}"
    if not rows:
        return "no flows"
    names = [threshold.name] if threshold.name else sorted({*backends, *map(backend_of, rows)})
    shares = {n: sum(backend_of(r) == n for r in rows) / len(rows) for n in names}
    name = (min if threshold.op.startswith(">") else max)(shares, key=lambda n: shares[n])
    return f"{name} {shares[name]:.2%}"


@settings(max_examples=60, deadline=None)
@given(_flows())
def test_thresholds_read_off_the_columns_observe_what_the_records_show(
    rows: list[FlowRecord],
) -> None:
    backends = ["rs1", "rs9"]
    judged = evaluate([parse_threshold(t) for t in THRESHOLDS], flowsummary.summarize(rows), rows,
                      backends)  # fmt: skip
    observed = [r["observed"] for r in judged["results"]]
    assert observed == [_observed(t, rows, backends) for t in THRESHOLDS]


def test_an_empty_log_has_empty_columns() -> None:
    columns = FlowColumns(flowlog.records_to_table([]))
    assert columns.rows == 0
    assert columns.backend().groups() == {} and columns.labels("stage").groups() == {}
    assert columns.seconds("connect_s").dtype == np.float64
    assert flowsummary.summarize([])["latency"]["total"]["corrected"]["count"] == 0


def test_a_null_counts_as_no_value_whatever_its_slot_holds() -> None:
    """Arrow leaves a null's slot undefined: a bool column's null may hold a 1 bit (another
    writer's file)."""
    rows = [FlowRecord(i, "http", "127.0.0.2", 1, "127.0.0.1", 80, "tcp", 0.0, 0.0, 0.0)
            for i in range(3)]  # fmt: skip
    table = flowlog.records_to_table(rows)
    validity, data = pa.py_buffer(bytes([0b101])), pa.py_buffer(bytes([0b111]))
    reused = pa.Array.from_buffers(pa.bool_(), 3, [validity, data], null_count=1)
    assert reused.to_pylist() == [True, None, True]
    index = table.schema.get_field_index("tls_session_reused")
    table = table.set_column(index, table.schema.field(index), reused)
    assert FlowColumns(table).count_true("tls_session_reused") == 2
