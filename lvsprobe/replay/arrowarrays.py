"""Arrow arrays from columns of Python values (int, float, bool, str, None), built from
numpy buffers with `pa.Array.from_buffers`, and number columns back to numpy from theirs.

Why not `pa.array(values)`: on every conversion pyarrow checks whether the values are
pandas objects, and the first check imports pandas, although a flow log never uses it. In
each engine process that import was most of the start-up outside the loop. `from_buffers`
skips the check and takes the same bytes.
tests/replay/test_arrowarrays.py checks each type against `pa.array`, nulls and all.

A column is first converted as if it held no nulls, which is what most columns of a batch
are: whole or wholly null. A None makes that attempt raise TypeError, and only then are the
nulls found and the present values converted again.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

# Arrow type name (flowrecord.COLUMNS) -> numpy dtype of its values
_DTYPE: dict[str, type] = {
    "int64": np.int64,
    "int32": np.int32,
    "float64": np.float64,
    "bool_": np.bool_,
}
_OFFSET_LIMIT = 2**31 - 1  # `string` arrays hold 32-bit offsets


def arrow_array(values: Sequence[Any], type_name: str) -> pa.Array:
    """The Arrow array of `values` (None is null) of type `pa.<type_name>()`, equal to
    `pa.array(values, type=...)`. A value of another type raises TypeError or ValueError,
    except what numpy converts (a float or a numeric string in a number column)."""
    arrow_type = getattr(pa, type_name)()
    if values and values[0] is None and values.count(None) == len(values):
        return pa.nulls(len(values), arrow_type)  # a column unused by a batch's flows
    try:
        return _build(values, None, type_name, arrow_type)
    except TypeError:
        if None not in values:
            raise
    present = np.fromiter(
        map(operator.is_not, values, itertools.repeat(None)), dtype=bool, count=len(values)
    )
    if not present.any():
        return pa.nulls(len(values), arrow_type)
    given = [v for v in values if v is not None]
    return _build(given, present, type_name, arrow_type)


def _build(
    given: Sequence[Any], present: np.ndarray | None, type_name: str, arrow_type: pa.DataType
) -> pa.Array:
    """The array of the values `given` at the rows `present` marks (None: every row);
    TypeError if `given` holds a None."""
    count = len(given) if present is None else len(present)
    validity = None if present is None else pa.py_buffer(np.packbits(present, bitorder="little"))
    if type_name == "string":
        buffers = [validity, *_text(given, present)]
    else:
        data = _numbers(given, _DTYPE[type_name])
        if present is not None:  # a null takes a zero in the data buffer
            data, dense = np.zeros(count, dtype=data.dtype), data
            data[present] = dense
        if data.dtype == np.bool_:
            data = np.packbits(data, bitorder="little")
        buffers = [validity, pa.py_buffer(data)]
    return pa.Array.from_buffers(arrow_type, count, buffers, count - len(given))


def _numbers(given: Sequence[Any], dtype: type) -> np.ndarray:
    # numpy takes None as NaN in a float array and as False in a bool one: look for it then
    if dtype is np.bool_ and None in given:
        raise TypeError("expected bool values, got NoneType")
    data: np.ndarray = np.array(given, dtype=dtype)  # TypeError on None in an int array
    if dtype is np.float64 and np.isnan(data).any() and None in given:
        raise TypeError("expected float values, got NoneType")
    return data


def _text(given: Sequence[Any], present: np.ndarray | None) -> list[pa.Buffer]:
    """The offsets and UTF-8 data buffers of a string array."""
    joined = "".join(given)  # TypeError on anything but str
    data = joined.encode()
    if len(data) == len(joined):  # every character ASCII: one byte each
        lengths = np.fromiter(map(len, given), dtype=np.int64, count=len(given))
    else:
        lengths = np.fromiter((len(s.encode()) for s in given), np.int64, len(given))
    if len(data) > _OFFSET_LIMIT:
        raise OverflowError(f"{len(data)} bytes of text: more than one string array holds")
    if present is not None:  # a null is an empty string in the offsets
        lengths, dense = np.zeros(len(present), dtype=np.int64), lengths
        lengths[present] = dense
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(lengths)  # fits: checked above
    return [pa.py_buffer(offsets), pa.py_buffer(data)]


def int64_array(values: np.ndarray) -> pa.Array:
    """An int64 numpy array (row indices, say) as Arrow, its buffer shared: handing numpy to
    pyarrow (`Table.take(indices)`) converts it with `pa.array`, which imports pandas."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


@dataclass(frozen=True)
class Numbers:
    """A column's values (a null's slot holds an undefined value) and which rows hold one
    (None: every row)."""

    values: np.ndarray
    present: np.ndarray | None


def numpy_of(column: pa.ChunkedArray | pa.Array, type_name: str) -> Numbers:
    """The values of a number or bool column of type `pa.<type_name>()` as numpy, read off
    its buffers chunk by chunk (the inverse of `arrow_array`): `to_numpy()` of a column
    holding a null imports pandas and pyarrow.compute."""
    dtype = _DTYPE[type_name]
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    values = [_chunk_values(chunk, dtype) for chunk in chunks]
    data = np.concatenate(values) if values else np.zeros(0, dtype=dtype)
    if not column.null_count:
        return Numbers(data, None)
    return Numbers(data, np.concatenate([_chunk_present(chunk) for chunk in chunks]))


def _bits(buffer: pa.Buffer, offset: int, count: int) -> np.ndarray:
    """`count` bits of a bitmap from bit `offset` on (a sliced array's start mid-byte)."""
    start = offset // 8
    packed = np.frombuffer(buffer, dtype=np.uint8)[start : (offset + count + 7) // 8]
    bits = np.unpackbits(packed, bitorder="little")
    return bits[offset - start * 8 : offset - start * 8 + count].astype(np.bool_)


def _chunk_values(chunk: pa.Array, dtype: type) -> np.ndarray:
    if chunk.null_count == len(chunk):  # all null: the data buffer may be absent
        return np.zeros(len(chunk), dtype=dtype)
    data = chunk.buffers()[1]
    if dtype is np.bool_:
        return _bits(data, chunk.offset, len(chunk))
    width = np.dtype(dtype).itemsize
    return np.frombuffer(data, dtype=dtype, count=len(chunk), offset=chunk.offset * width)


def _chunk_present(chunk: pa.Array) -> np.ndarray:
    validity = chunk.buffers()[0]
    if validity is None:  # no bitmap: every row holds a value (or none does, a null array)
        return np.full(len(chunk), chunk.null_count == 0, dtype=np.bool_)
    return _bits(validity, chunk.offset, len(chunk))
