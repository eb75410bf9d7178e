"""Netlink framing: attribute TLV walk, message split, NLMSG_ERROR/DONE, encoders."""

from __future__ import annotations

import enum
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl.attrs import (
    BE16,
    BE32,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    STRING,
    U8,
    U16,
    U32,
    U64,
    Attr,
    Attrs,
    NlMsg,
    NlMsgType,
    Where,
    encode_attr,
    encode_attrs,
    encode_genl,
    encode_message,
    nla_align,
    parse_done,
    parse_error,
    split_genl,
    split_messages,
    walk_attrs,
)

W = Where("test", 3)


class Names(enum.IntEnum):
    ONE = 1
    TWO = 2
    THREE = 3


def test_nla_align() -> None:
    assert [nla_align(n) for n in range(9)] == [0, 4, 4, 4, 4, 8, 8, 8, 8]


def test_encode_attr_pads_to_four_and_walk_reads_it_back() -> None:
    buf = encode_attr(1, b"\x01\x02") + encode_attr(2, b"") + encode_attr(3, b"abcde")
    assert buf.hex() == "060001000102000004000200090003006162636465000000"
    assert walk_attrs(buf, W) == (Attr(1, b"\x01\x02"), Attr(2, b""), Attr(3, b"abcde"))


def test_walk_accepts_missing_padding_after_the_last_attribute() -> None:
    buf = encode_attr(1, b"\x01\x02")[:6]
    assert walk_attrs(buf, W) == (Attr(1, b"\x01\x02"),)


def test_walk_strips_nested_and_byteorder_flags() -> None:
    buf = struct.pack("=HH", 8, 0x8001) + b"\0" * 4 + struct.pack("=HH", 8, 0x4002) + b"\0" * 4
    got = walk_attrs(buf, W)
    assert [(a.type, a.nested_flag) for a in got] == [(1, True), (2, False)]


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"\x00\x00\x01\x00", "shorter than its header"),  # zero-length: would loop forever
        (b"\x03\x00\x01\x00", "shorter than its header"),
        (b"\x09\x00\x01\x00abcd", "claims 9 bytes, 8 left"),
        (b"\xff\xff\x01\x00", "claims 65535 bytes"),
        (encode_attr(1, b"abcd") + b"\x01", "1 stray byte"),
        (encode_attr(1, b"abcd") + b"\x01\x02\x03", "3 stray byte"),
    ],
)
def test_walk_rejects_bad_lengths(buf: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        walk_attrs(buf, W)
    assert info.value.source == "test" and info.value.line_no == 3
    assert isinstance(info.value.line, str)  # hex snippet of the offending bytes


@pytest.mark.parametrize(
    ("codec", "good", "value"),
    [
        (U8, b"\x07", 7),
        (U16, struct.pack("=H", 513), 513),
        (BE16, b"\x00\x50", 80),
        (U32, struct.pack("=I", 900), 900),
        (BE32, b"\xff\xff\xff\x00", 0xFFFFFF00),
        (U64, struct.pack("=Q", 2**40), 2**40),
    ],
)
def test_integer_codecs_check_size(codec, good: bytes, value: int) -> None:  # type: ignore[no-untyped-def]
    assert codec.decode(good, W, "X") == value
    assert codec.encode(value) == good
    for wrong in (good[:-1], good + b"\0", b""):
        with pytest.raises(ParseError, match=f"X: a {codec.name} needs {len(good)} bytes"):
            codec.decode(wrong, W, "X")


def test_string_needs_its_nul() -> None:
    assert STRING.decode(b"rr\0", W, "S") == "rr"
    assert STRING.decode(b"rr\0\0\0", W, "S") == "rr"
    with pytest.raises(ParseError, match="S: string without its NUL"):
        STRING.decode(b"rr", W, "S")


def test_attrs_lookup_missing_duplicate_unknown() -> None:
    buf = encode_attrs([(1, U32.encode(5)), (9, b"new"), (1, U32.encode(6))])
    attrs = Attrs(buf, W, Names)
    assert attrs.get(Names.ONE, U32) == 6  # last wins, as nla_parse
    assert attrs.get(Names.TWO, U32) is None
    assert attrs.unknown() == (Attr(9, b"new"),)
    with pytest.raises(ParseError, match="TWO missing"):
        attrs.need(Names.TWO, U32)
    assert attrs.nest(Names.THREE, Names) is None


def test_attrs_nest_overrun_is_an_error() -> None:
    inner_bad = struct.pack("=HH", 12, 1) + b"\0" * 4  # claims 12, has 8
    outer = encode_attr(3, inner_bad)
    attrs = Attrs(outer, W, Names)
    with pytest.raises(ParseError, match="claims 12 bytes, 8 left") as info:
        attrs.nest(Names.THREE, Names)
    assert info.value.source == "test THREE"


def _msg(msg_type: int, payload: bytes, flags: int = 0, seq: int = 1) -> bytes:
    return encode_message(msg_type, flags, seq, 77, payload)


def test_split_messages_several_and_aligned() -> None:
    a = _msg(0x20, encode_genl(1, 1, encode_attr(1, b"x")))
    b = _msg(NlMsgType.DONE, b"\0\0\0\0", seq=2)
    msgs = split_messages(a + b, W)
    assert [(m.msg_type, m.seq, m.port_id) for m in msgs] == [(0x20, 1, 77), (3, 2, 77)]
    genl = split_genl(msgs[0].payload, W)
    assert (genl.cmd, genl.version, walk_attrs(genl.attrs, W)) == (1, 1, (Attr(1, b"x"),))


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        (b"\x14\x00\x00\x00" + b"\0" * 8, "12 stray byte"),
        (struct.pack("=IHHII", 8, 3, 0, 0, 0), "shorter than nlmsghdr"),
        (struct.pack("=IHHII", 40, 3, 0, 0, 0) + b"\0" * 4, "claims 40 bytes, 20 left"),
    ],
)
def test_split_messages_rejects_bad_lengths(buf: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        split_messages(buf, W)


def test_split_genl_needs_its_header() -> None:
    with pytest.raises(ParseError, match="too short for genlmsghdr"):
        split_genl(b"\x01\x01", W)


def test_parse_error_capped_ack_and_full_echo_with_extack() -> None:
    request = _msg(0x20, encode_genl(4, 1))
    ack = NlMsg(2, NLM_F_CAPPED, 1, 77, struct.pack("=i", 0) + request[:16])
    assert parse_error(ack, W).errno == 0
    tlvs = encode_attr(1, b"Unknown service\0")
    full = NlMsg(2, NLM_F_ACK_TLVS, 1, 77, struct.pack("=i", -1) + request + tlvs)
    assert (parse_error(full, W).errno, parse_error(full, W).message) == (1, "Unknown service")
    capped = NlMsg(
        2, NLM_F_CAPPED | NLM_F_ACK_TLVS, 1, 77, struct.pack("=i", -22) + request[:16] + tlvs
    )
    assert parse_error(capped, W).errno == 22


@pytest.mark.parametrize(
    "msg",
    [
        NlMsg(2, 0, 1, 0, b"\0\0\0"),
        NlMsg(2, 0, 1, 0, struct.pack("=iI", -1, 400) + b"\0" * 12),
        NlMsg(2, 0, 1, 0, struct.pack("=iI", -1, 3) + b"\0" * 12),
    ],
)
def test_parse_error_rejects_short_or_inconsistent(msg: NlMsg) -> None:
    with pytest.raises(ParseError):
        parse_error(msg, W)


def test_parse_done() -> None:
    assert parse_done(NlMsg(3, 2, 1, 0, b""), W) == 0
    assert parse_done(NlMsg(3, 2, 1, 0, struct.pack("=i", -4)), W) == 4
    with pytest.raises(ParseError):
        parse_done(NlMsg(3, 2, 1, 0, b"\0\0"), W)


def test_encode_attr_refuses_oversize() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        encode_attr(1, bytes(0x10000))


@settings(deadline=None)  # no wall-clock limits in tests
@given(st.binary(max_size=300))
def test_walk_any_bytes_gives_attrs_or_parse_error(buf: bytes) -> None:
    try:
        attrs = walk_attrs(buf, W)
    except ParseError:
        return
    assert sum(nla_align(4 + len(a.payload)) for a in attrs) >= len(buf)


@settings(deadline=None)  # no wall-clock limits in tests
@given(st.binary(max_size=300))
def test_split_any_bytes_gives_messages_or_parse_error(buf: bytes) -> None:
    try:
        msgs = split_messages(buf, W)
    except ParseError:
        return
    for msg in msgs:
        try:
            if msg.msg_type == NlMsgType.ERROR:
                parse_error(msg, W)
            elif msg.msg_type == NlMsgType.DONE:
                parse_done(msg, W)
            else:
                walk_attrs(split_genl(msg.payload, W).attrs, W)
        except ParseError:
            pass


@settings(deadline=None)  # no wall-clock limits in tests
@given(st.lists(st.tuples(st.integers(0, 0x3FFF), st.binary(max_size=40)), max_size=8))
def test_encode_then_walk_round_trips(items: list[tuple[int, bytes]]) -> None:
    assert walk_attrs(encode_attrs(items), W) == tuple(Attr(t, p) for t, p in items)
