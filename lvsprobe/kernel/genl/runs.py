"""A dump's reply datagrams as the kernel usually sends them, recognised by their headers.

A GET_DEST dump of one service is, on every kernel seen, one datagram of records (NLM_F_MULTI,
the request's sequence number, one length) and then NLMSG_DONE alone
(docs/kernel/netlink.md#reading-at-scale). A reader doing one dump per service checks 10^3-10^4 of
each a scrape, so these checks are one struct call each; anything else goes message by
message (`socket.IPVSNetlink._general`). The records found are kept as `Run`s of bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple, Protocol

from lvsprobe.kernel.genl.attrs import GENL_HDR, NLMSG_HDR, NlFlag, NlMsgType, nla_align

MIN_RECORD = NLMSG_HDR.size + GENL_HDR.size  # a record message holds genlmsghdr
_DONE = struct.Struct("=IHHIIi")  # nlmsghdr + the dump's error: NLMSG_DONE as 3.x+ send it
DONE_SIZE = _DONE.size
_LENGTH = struct.Struct("=I")  # nlmsg_len
_HEAD = struct.Struct("=IHHI")  # nlmsg_len, type, flags, seq: the same in every record
# Plain ints for the per-datagram checks (an IntFlag operation is a Python-level call).
_NLM_F_MULTI = int(NlFlag.MULTI)
_NLM_F_DUMP_INTR = int(NlFlag.DUMP_INTR)
_NLMSG_DONE = int(NlMsgType.DONE)


class Run(NamedTuple):
    """Records of a dump that follow on in one datagram, all of one message length."""

    datagram: bytes
    start: int
    records: int  # how many
    length: int

    def offsets(self) -> Iterator[int]:
        """Where each record's message starts in the datagram."""
        stride = nla_align(self.length)
        return iter(range(self.start, self.start + self.records * stride, stride))


class Runs:
    """The record runs of one dump, as a reader finds them."""

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.records = 0

    def add_run(self, datagram: bytes, start: int, count: int, length: int) -> None:
        self.runs.append(Run(datagram, start, count, length))
        self.records += count

    def dump_records(self) -> int:
        return self.records


class Records(Protocol):
    """Where a dump's records go: `DestTableBuilder` or `Runs`."""

    def add_run(self, datagram: bytes, start: int, count: int, length: int) -> None: ...

    def dump_records(self) -> int: ...


# A reader's header checks, learned per (first message length, datagram length): the struct
# reading every message's first 12 header bytes and how many messages there are; no struct
# when the datagram cannot be a run of messages of that length.
HeaderChecks = dict[tuple[int, int], "tuple[struct.Struct | None, int]"]
# Shapes a reader learns at most (the kernel's dumps have a few; anything else is walked).
MAX_HEADER_CHECKS = 256


def records_run(
    datagram: bytes, msg_type: int, seq: int, checks: HeaderChecks | None = None
) -> tuple[int, int, int] | None:
    """(start, count, length) when the datagram is only records of the dump `seq`, all of
    one length and each long enough for genlmsghdr (what `_ends_dump` and `split_genl`
    would take without a word); None for anything else, which goes the general way.

    `checks` (owned by the reader): per shape of datagram, a struct reading the first 12
    bytes of every header in one call; the kernel's records of a dump all have the same
    ones (NLM_F_MULTI), so one comparison checks them. Other flags are checked one by one.
    """
    end = len(datagram)
    if end < MIN_RECORD:
        return None
    length = _LENGTH.unpack_from(datagram)[0]
    if checks is not None:
        check = checks.get((length, end))
        if check is None:
            check = _header_check(length, end)
            if len(checks) < MAX_HEADER_CHECKS:
                checks[length, end] = check
        headers, count = check
        if headers is None:
            return None
        if (
            headers.unpack_from(datagram)
            == (_HEAD.pack(length, msg_type, _NLM_F_MULTI, seq),) * count
        ):
            return 0, count, length
    shape = _shape(length, end)
    if shape is None:
        return None
    stride, count = shape
    unpack = NLMSG_HDR.unpack_from
    for offset in range(0, count * stride, stride):
        m_len, m_type, m_flags, m_seq, _pid = unpack(datagram, offset)
        if m_len != length or m_type != msg_type or m_seq != seq or m_flags & _NLM_F_DUMP_INTR:
            return None
    return 0, count, length


def _shape(length: int, end: int) -> tuple[int, int] | None:
    """(stride, count) of `end` bytes of messages of `length` bytes each; None when that
    cannot be (the last message may lack its padding: nothing follows it)."""
    stride = nla_align(length)
    if length < MIN_RECORD or length > end or end % stride not in (0, length % stride):
        return None
    return stride, (end + stride - 1) // stride


def _header_check(length: int, end: int) -> tuple[struct.Struct | None, int]:
    """A struct reading the first 12 bytes of each message of a datagram of this shape,
    and how many there are (none: no such datagram)."""
    shape = _shape(length, end)
    if shape is None:
        return None, 0
    stride, count = shape
    head = f"{_HEAD.size}s"
    gap = f"{stride - _HEAD.size}x"
    return struct.Struct("=" + (head + gap) * (count - 1) + head), count


def is_done(datagram: bytes, seq: int) -> bool:
    """True for the usual end of a dump: one NLMSG_DONE of `seq` reporting no error (what
    `_ends_dump` would take; any other datagram goes the general way)."""
    if len(datagram) != _DONE.size:
        return False
    length, msg_type, _flags, m_seq, _pid, error = _DONE.unpack(datagram)
    return length == _DONE.size and msg_type == _NLMSG_DONE and m_seq == seq and error == 0
