"""One struct for every record of a dump: the fast way through 10^5 DEST nests.

The kernel fills every DEST (or SERVICE) record of one kernel version with the same
attributes in the same order and sizes (ip_vs_genl_fill_dest); only the values differ.
Walking each record's ~30 attributes one by one in Python costs ~40 µs a real server, so a
kube-proxy node's dump would take seconds. Here the first record of a size is walked (as
`walk_attrs` does, with the same checks) and its layout kept as one `struct` format:
every header and every payload. A later record of that size is unpacked in one call and
taken only when all its headers equal the learned ones; then each attribute holds the same
bytes a walk would give, and `Attrs` decodes them with the same codecs and errors. Any
other record is walked as before.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from lvsprobe.kernel.genl.attrs import NLA_HDR, NLA_TYPE_MASK, Split, nla_align

# Layouts kept per kind of record: one per distinct record size (tunnel dests have three
# attributes more, say); a dump that keeps changing shape is walked.
MAX_LAYOUTS = 8


def _picker(indices: Sequence[int]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """A C-level getter of these positions that always gives a tuple."""
    if len(indices) > 1:
        return itemgetter(*indices)
    if indices:
        index = indices[0]
        return lambda values: (values[index],)
    return lambda values: ()


@dataclass(frozen=True)
class _Run:
    """The attributes of one run (the record, or one nest in it): types and value positions."""

    types: tuple[int, ...]
    values: Callable[[tuple[Any, ...]], tuple[Any, ...]]


class AttrLayout:
    """The layout of one record: a struct of all its headers and payloads, and where each
    attribute (and each attribute of a nest in `nests`) is in it."""

    def __init__(
        self,
        size: int,
        fmt: str,
        headers: list[int],
        expected: tuple[int, ...],
        top: _Run,
        nests: dict[int, tuple[_Run, int, int]],
    ) -> None:
        self.size = size
        self._struct = struct.Struct(fmt)
        self._headers = _picker(headers)
        self._expected = expected
        self._top = top
        self._nests = nests  # type -> (its run, first and last byte of its payload)

    @classmethod
    def learn(cls, buf: bytes, nests: Collection[int]) -> AttrLayout | None:
        """The layout of `buf`, whose nests of the types `nests` are laid out too; None when
        `buf` is not a well-formed run of attributes (it is then walked, and fails there)."""
        fmt = ["="]
        headers: list[int] = []
        expected: list[int] = []
        position = 0
        found: dict[int, tuple[_Run, int, int]] = {}

        def run(start: int, end: int, outer: bool) -> _Run | None:
            nonlocal position
            types: list[int] = []
            places: list[int] = []
            off = start
            while off < end:
                if end - off < NLA_HDR.size:
                    return None
                nla_len, nla_type = NLA_HDR.unpack_from(buf, off)
                if nla_len < NLA_HDR.size or nla_len > end - off:
                    return None
                fmt.append("HH")
                headers.extend((position, position + 1))
                expected.extend((nla_len, nla_type))
                position += 2
                attr_type = nla_type & NLA_TYPE_MASK
                if outer and attr_type in nests:
                    inner = run(off + NLA_HDR.size, off + nla_len, False)
                    if inner is None:
                        return None
                    found[attr_type] = (inner, off + NLA_HDR.size, off + nla_len)
                else:
                    fmt.append(f"{nla_len - NLA_HDR.size}s")
                    types.append(attr_type)
                    places.append(position)
                    position += 1
                padding = min(nla_align(nla_len), end - off) - nla_len
                if padding:
                    fmt.append(f"{padding}x")
                off += nla_align(nla_len)
            return _Run(tuple(types), _picker(places))

        top = run(0, len(buf), True)
        if top is None:
            return None
        return cls(len(buf), "".join(fmt), headers, tuple(expected), top, found)

    def split(self, buf: bytes) -> Split | None:
        """{type: payload} of the record (nests included, as bytes) and of each laid-out
        nest, as walking would give them; None unless `buf` has exactly this layout."""
        if len(buf) != self.size:
            return None
        values = self._struct.unpack(buf)
        if self._headers(values) != self._expected:
            return None
        top = dict(zip(self._top.types, self._top.values(values), strict=True))
        nests = {}
        for attr_type, (run, start, end) in self._nests.items():
            top[attr_type] = buf[start:end]
            nests[attr_type] = dict(zip(run.types, run.values(values), strict=True))
        return top, nests


class Layouts:
    """The layouts learned from the records of one kind (DEST, say), by record size."""

    def __init__(self, nests: Collection[int] = ()) -> None:
        self.nests = frozenset(nests)
        self._by_size: dict[int, AttrLayout | None] = {}

    def split(self, buf: bytes) -> Split | None:
        """`buf` split by its size's layout (learned from it when it is the first of its
        size); None when it has to be walked."""
        layout = self._by_size.get(len(buf))
        if layout is None:
            if len(buf) in self._by_size or len(self._by_size) >= MAX_LAYOUTS:
                return None
            layout = self._by_size[len(buf)] = AttrLayout.learn(buf, self.nests)
            if layout is None:
                return None
        return layout.split(buf)
