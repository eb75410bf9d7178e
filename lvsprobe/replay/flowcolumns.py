"""A flow log's columns as numpy, for the run's summary and its thresholds: read once off the
Arrow table flows.parquet is written from, so that a figure over every flow is a C-level pass
over an array, not a Python step per record (that was most of a run's finish).

A text column is coded (`Labels`): each row's index into its distinct values. From
`COMPUTE_MIN_ROWS` rows on, by pyarrow.compute's dictionary encoding (a tenth of the time);
below, in Python, since loading pyarrow.compute costs as much as coding a few columns of
tens of thousands of rows. A finish from as many rows out of flow order has loaded it anyway,
to sort its journal (flowlog.JOURNAL_SORT_MIN_ROWS, the same number).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lvsprobe.replay.arrowarrays import Numbers, numpy_of
from lvsprobe.replay.flowrecord import COLUMNS, UNKNOWN_BACKEND

if TYPE_CHECKING:
    import pyarrow as pa

COMPUTE_MIN_ROWS = 20_000
_TYPE = {name: type_name for name, type_name, _ in COLUMNS}


@dataclass(frozen=True)
class Labels:
    """A text column coded: each row's index into `names` (distinct), -1 where it is null."""

    codes: np.ndarray
    names: tuple[str, ...]

    def counts(self) -> dict[str, int]:
        """Rows by name (rows that are null apart), names no row holds left out."""
        counts = np.bincount(self.codes[self.codes >= 0], minlength=len(self.names))
        return {name: n for name, n in zip(self.names, counts.tolist(), strict=True) if n}

    def rows_named(self, name: str) -> np.ndarray:
        """Which rows hold `name` (a bool mask)."""
        if name not in self.names:
            return np.zeros(len(self.codes), dtype=np.bool_)
        return self.codes == self.names.index(name)

    def groups(self) -> dict[str, np.ndarray]:
        """Row indices (ascending) by name, in the names' order as text; null rows in none."""
        if len(self.names) == 1 and len(self.codes) and not (self.codes < 0).any():
            return {self.names[0]: np.arange(len(self.codes), dtype=np.intp)}  # most runs
        order = sorted(range(len(self.names)), key=self.names.__getitem__)
        rank = np.empty(len(self.names) + 1, dtype=np.intp)
        rank[order] = np.arange(len(order))
        rank[-1] = len(order)  # a null row's code, -1, reads the last slot: a group dropped
        ranked = rank[self.codes]
        rows = np.argsort(ranked, kind="stable")
        ends = np.cumsum(np.bincount(ranked, minlength=len(order) + 1))
        split = np.split(rows, ends[:-1])[:-1]
        return {self.names[i]: g for i, g in zip(order, split, strict=True) if len(g)}


def labels_of(column: pa.ChunkedArray) -> Labels:
    """A text column's labels (see the module docstring for the two ways)."""
    if len(column) >= COMPUTE_MIN_ROWS:
        encoded = column.combine_chunks().dictionary_encode()
        indices = numpy_of(encoded.indices, "int32")
        codes = indices.values.astype(np.intp)
        if indices.present is not None:
            codes[~indices.present] = -1
        return Labels(codes, tuple(encoded.dictionary.to_pylist()))
    values = column.to_pylist()
    names = tuple(name for name in dict.fromkeys(values) if name is not None)
    code: dict[str | None, int] = {name: i for i, name in enumerate(names)}
    code[None] = -1
    return Labels(np.fromiter(map(code.__getitem__, values), np.intp, len(values)), names)


def number_labels(numbers: Numbers) -> Labels:
    """A number column's labels: its distinct values as text (a flow's stage)."""
    values = numbers.values if numbers.present is None else numbers.values[numbers.present]
    distinct, inverse = np.unique(values, return_inverse=True)
    codes = np.full(len(numbers.values), -1, dtype=np.intp)
    if numbers.present is None:
        codes[:] = inverse
    else:
        codes[numbers.present] = inverse
    return Labels(codes, tuple(map(str, distinct.tolist())))


@dataclass(frozen=True)
class FlowColumns:
    """The columns of a flow-log table (FLOW_SCHEMA), each converted on first use."""

    table: pa.Table
    _converted: dict[tuple[str, str], object] = field(
        default_factory=dict, repr=False, compare=False
    )

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def _once(self, key: tuple[str, str], convert: Callable[[], object]) -> object:
        if key not in self._converted:
            self._converted[key] = convert()
        return self._converted[key]

    def numbers(self, name: str) -> Numbers:
        """A number or bool column."""
        convert = functools.partial(numpy_of, self.table.column(name), _TYPE[name])
        return self._once(("numbers", name), convert)  # type: ignore[return-value]

    def labels(self, name: str) -> Labels:
        """A text column coded, or a number column's distinct values as text."""
        if _TYPE[name] == "string":
            convert = functools.partial(labels_of, self.table.column(name))
        else:
            convert = functools.partial(number_labels, self.numbers(name))
        return self._once(("labels", name), convert)  # type: ignore[return-value]

    def given(self, name: str) -> np.ndarray:
        """A number column's values in the rows that hold one."""
        column = self.numbers(name)
        return column.values if column.present is None else column.values[column.present]

    def nulls(self, name: str) -> int:
        return int(self.table.column(name).null_count)

    def count_true(self, name: str) -> int:
        """Rows of a bool column that are true (a null is not)."""
        column = self.numbers(name)
        true = column.values if column.present is None else column.values & column.present
        return int(np.count_nonzero(true))

    def seconds(self, name: str) -> np.ndarray:
        """A float column with NaN where it is null."""
        column = self.numbers(name)
        if column.present is None:
            return column.values
        return np.where(column.present, column.values, np.nan)

    def ok(self) -> np.ndarray:
        """Which flows ended `ok` (a bool mask)."""
        return self.labels("outcome").rows_named("ok")

    def backend(self) -> Labels:
        """Each flow's backend as `flowrecord.backend_of` names it: self-named, else the
        conn table's, else unknown (an empty name counts as none)."""
        return self._once(("backend_of", ""), self._backend_of)  # type: ignore[return-value]

    def _backend_of(self) -> Labels:
        own, conn = self.labels("backend"), self.labels("conn_backend")
        names = tuple(sorted({*filter(None, own.names), *filter(None, conn.names)}
                             | {UNKNOWN_BACKEND}))  # fmt: skip
        index = {name: i for i, name in enumerate(names)}

        def to_names(labels: Labels) -> np.ndarray:
            # the last slot is a null row's (code -1): no name
            return np.array([index.get(n, -1) if n else -1 for n in labels.names] + [-1])

        codes = to_names(own)[own.codes]
        unnamed = codes < 0
        codes[unnamed] = to_names(conn)[conn.codes[unnamed]]
        codes[codes < 0] = index[UNKNOWN_BACKEND]
        return Labels(codes, names)
