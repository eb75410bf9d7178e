"""Dump records of one layout as columns: what `dest_table` and `service_table` share.

Records of one message length sit at their aligned stride in one buffer, so a byte at
offset `o` of every record is `buf[o::stride]`: one C-level slice. The attribute headers
of the first record (walked as `attrs.walk_attrs` walks, with its checks) are kept as byte
offsets; every record's header bytes are compared with them a byte offset at a time
(counted; the rows that differ are found only when some do), and a value is cut out of
every record byte by byte into an `array` of machine integers. Two records whose headers
are all equal walk the same way, so each value sits at the same offset in both. No numpy:
a sidecar that imported it for this carried ~12 MB more RSS for its whole life.

Rows are flagged in an int whose byte r is nonzero for row r (`flags`), so that checks
over all records combine with `|` in C.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from itertools import compress

from lvsprobe.kernel.genl.attrs import GENL_HDR, NLA_HDR, NLA_TYPE_MASK, NLMSG_HDR, Codec, nla_align
from lvsprobe.kernel.genl.runs import Run
from lvsprobe.model import Family

RECORD_START = NLMSG_HDR.size + GENL_HDR.size  # a record message's first attribute
_LITTLE = sys.byteorder == "little"


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


def header_flags(buf: bytes, stride: int, learned: bytes, headers: Sequence[int]) -> int:
    """Flags of the records whose attribute headers (at `headers`) are not the `learned`
    record's, hence may walk another way."""
    flags = 0
    for header in headers:
        for at in range(header, header + NLA_HDR.size):
            flags |= differing(buf[at::stride], learned[at])
    return flags


def differing(values: bytes, expected: int) -> int:
    """Flags of the rows whose byte (one a row) is not `expected`."""
    if values.count(expected) == len(values):  # the usual case: one pass, no flags made
        return 0
    other = b"\1" * expected + b"\0" + b"\1" * (255 - expected)
    return int.from_bytes(values.translate(other), "little")


def byte_flags(values: bytes, flagged_values: bytes) -> int:
    """Flags of the rows whose byte is flagged by the 256-byte table `flagged_values`."""
    return int.from_bytes(values.translate(flagged_values), "little")


def flagged(flags: int, rows: int) -> list[int]:
    """The rows flagged, in order."""
    if not flags:
        return []
    return list(compress(range(rows), flags.to_bytes(rows, "little")))


def without(buf: bytes, stride: int, rows: Sequence[int]) -> bytes:
    """The records of `buf` but those at the (sorted) `rows`, in one buffer."""
    kept = []
    start = 0
    for row in rows:
        kept.append(buf[start * stride : row * stride])
        start = row + 1
    kept.append(buf[start * stride :])
    return b"".join(kept)


def column(buf: bytes, stride: int, offset: int, codec: Codec[int], typecode: str) -> array[int]:
    """The integer at `offset` of every record, by its codec's size and byte order, as an
    array of `typecode` (as wide or wider): each byte of the value cut out of all records
    at once and put in its place in the machine integers."""
    packer = codec.packer
    assert packer is not None  # an integer codec
    return field(buf, stride, offset, packer.size, packer.format[0] == "!", typecode)


def field(
    buf: bytes, stride: int, offset: int, size: int, network: bool, typecode: str
) -> array[int]:
    """The `size`-byte unsigned integer at `offset` of every record (host byte order, or
    network order when `network`) as an array of `typecode`."""
    out = array(typecode)
    width = out.itemsize
    assert width >= size, (typecode, size)
    rows = len(buf) // stride
    wide = bytearray(width * rows)
    for index in range(size):
        significance = size - 1 - index if network or not _LITTLE else index
        place = significance if _LITTLE else width - 1 - significance
        wide[place::width] = buf[offset + index :: stride]
    out.frombytes(wide)
    return out


def low_byte(offset: int, size: int) -> int:
    """Where the least significant byte of a host-order integer at `offset` is."""
    return offset if _LITTLE else offset + size - 1


def typecode_of(codec: Codec[int]) -> str:
    """The smallest `array` type code holding the codec's integers."""
    assert codec.size is not None  # an integer codec
    for typecode in "BHIQ":
        if array(typecode).itemsize >= codec.size:
            return typecode
    raise ValueError(f"no array type for {codec.size}-byte integers")


def address_numbers(buf: bytes, stride: int, offset: int, families: bytes) -> Sequence[int]:
    """The 16-byte address at `offset` of every record as an int of its family
    (`families`: a byte a record, AF_INET or AF_INET6): IPv4 its first 4 bytes. An array
    when every one is IPv4, else a list (IPv6 needs 128 bits)."""
    numbers = field(buf, stride, offset, 4, True, "Q")
    if Family.INET6 not in families:
        return numbers
    out: list[int] = numbers.tolist()
    for row in flagged(byte_flags(families, _IS_INET6), len(families)):
        at = row * stride + offset
        out[row] = int.from_bytes(buf[at : at + 16], "big")
    return out


_IS_INET6 = bytes(int(value == Family.INET6) for value in range(256))
