"""Dump records of one layout as columns: what `dest_table` and `service_table` share.

Records of one message length are joined at their aligned stride into one buffer; the
attribute headers of the first (walked as `attrs.walk_attrs` walks, with its checks) are
kept as byte offsets, every record's headers are compared with them at once, and a value
is read for every record as one strided numpy column. Two records whose headers are all
equal walk the same way, so each value sits at the same offset in both.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lvsprobe.kernel.genl.attrs import GENL_HDR, NLA_HDR, NLA_TYPE_MASK, NLMSG_HDR, Codec, nla_align
from lvsprobe.kernel.genl.runs import Run
from lvsprobe.model import Family

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

RECORD_START = NLMSG_HDR.size + GENL_HDR.size  # a record message's first attribute
# Records compared with a layout at a time (bounds the temporary header arrays).
CHUNK_ROWS = 1 << 14


def joined(runs: Sequence[Run]) -> tuple[bytes, int, int]:
    """The runs' records (all of one length) at their stride in one buffer: it, the
    stride and the number of records. The last record of a datagram may lack its padding
    (nothing follows it): it is added."""
    stride = nla_align(runs[0].length)
    parts = []
    for run in runs:
        end = run.start + run.records * stride
        chunk = run.datagram[run.start : end]
        parts.append(chunk + bytes(end - run.start - len(chunk)))
    buf = b"".join(parts)
    return buf, stride, len(buf) // stride


def walk_offsets(
    message: bytes, start: int, end: int, headers: list[int]
) -> dict[int, tuple[int, int]] | None:
    """{type: (value offset, size)} of the attributes in message[start:end] (the last of
    duplicates counts, as in a walk), each header's offset added to `headers`; None when
    they are not a clean run of attributes."""
    found = {}
    off = start
    while off < end:
        if end - off < NLA_HDR.size:
            return None
        nla_len, nla_type = NLA_HDR.unpack_from(message, off)
        if nla_len < NLA_HDR.size or nla_len > end - off:
            return None
        headers.append(off)
        found[nla_type & NLA_TYPE_MASK] = (off + NLA_HDR.size, nla_len - NLA_HDR.size)
        off += nla_align(nla_len)
    return found


def record_values(
    message: bytes, nest: int, headers: list[int]
) -> dict[int, tuple[int, int]] | None:
    """`walk_offsets` of the attributes inside a record message's top-level `nest` (SERVICE
    or DEST), the top level's headers added too; None when either is not a clean run."""
    top = walk_offsets(message, RECORD_START, len(message), headers)
    if top is None or nest not in top:
        return None
    start, size = top[nest]
    return walk_offsets(message, start, start + size, headers)


def matching(
    buf: bytes, stride: int, rows: int, learned: bytes, headers: Sequence[int]
) -> npt.NDArray[np.bool_]:
    """Which records have every attribute header the `learned` one has at `headers`
    (4-byte aligned offsets: attributes are), hence the same walk."""
    import numpy as np

    words = np.frombuffer(buf, "=u4").reshape(rows, stride // 4)
    places = np.array(headers) // 4
    expected = np.array([struct.unpack_from("=I", learned, at)[0] for at in headers], np.uint32)
    good = np.empty(rows, bool)
    for start in range(0, rows, CHUNK_ROWS):
        part = words[start : start + CHUNK_ROWS][:, places]
        good[start : start + CHUNK_ROWS] = (part == expected).all(axis=1)
    return good


def column(
    buf: bytes, stride: int, offset: int, codec: Codec[int] | None
) -> npt.NDArray[np.uint64]:
    """The integer at `offset` of every record, by its codec (None: a host-order u64), as
    one strided read of the buffer."""
    import numpy as np

    rows = len(buf) // stride
    dtype = "=u8" if codec is None else dtype_of(codec)
    return np.ndarray((rows,), dtype, buf, offset, (stride,)).astype(np.uint64)


def compact(values: npt.NDArray[np.integer]) -> array[int]:
    """A column as it goes into a table: machine integers (an `array` of u64) copied
    straight from numpy, not a list of int objects. A consumer makes an int object only
    for a value it reads: a scrape prints 8 of a real server's ~20 netlink columns."""
    import numpy as np

    out = array("Q")
    out.frombytes(np.ascontiguousarray(values, np.uint64).data.cast("B"))
    return out


def dtype_of(codec: Codec[int]) -> str:
    """The numpy dtype of an integer codec's struct: host ("=") or network ("!") order."""
    assert codec.packer is not None  # an integer codec
    return codec.packer.format.replace("!", ">")


def address_numbers(
    buf: bytes,
    stride: int,
    offset: int,
    families: npt.NDArray[np.integer],
    select: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | None,
) -> Sequence[int]:
    """The 16-byte address at `offset` of the `select`ed records (a mask or row numbers;
    None: all) as an int of its family (`families`, of those records): IPv4 its first 4
    bytes. A `compact` column when every one is IPv4, else a list (IPv6 needs 128 bits)."""
    import numpy as np

    rows = len(buf) // stride
    high = np.ndarray((rows,), ">u8", buf, offset, (stride,))
    if select is not None:
        high = high[select]
    v6 = np.flatnonzero(families == Family.INET6)
    if not len(v6):
        return compact(high >> np.uint64(32))
    numbers: list[int] = (high >> np.uint64(32)).tolist()
    low = np.ndarray((rows,), ">u8", buf, offset + 8, (stride,))
    if select is not None:
        low = low[select]
    for index, hi, lo in zip(v6.tolist(), high[v6].tolist(), low[v6].tolist(), strict=True):
        numbers[index] = hi << 64 | lo
    return numbers
