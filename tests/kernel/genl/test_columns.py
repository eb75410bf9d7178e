"""The column cutters (`columns`) give what reading each record one by one gives: integers
of either byte order, the records whose headers differ, addresses of both families; and the
kernel's own captured records, mixed with other layouts and mutated, decode column-wise as
the exact decoder decodes them."""

from __future__ import annotations

import dataclasses
import ipaddress
import sys
from array import array

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.kernel.genl import ipvs, replies
from lvsprobe.kernel.genl.capture import Exchange
from lvsprobe.kernel.genl.columns import address_numbers, field, flagged, header_flags
from lvsprobe.model import Family, RealServer

from . import test_dest_table, test_service_table
from .test_ipvs_codec import DEST, _captured, dests
from .test_layout import mutated

STRIDES = st.integers(2, 24).map(lambda words: 4 * words)


@st.composite
def records(draw: st.DrawFn) -> tuple[bytes, int]:
    """(buffer, stride) of 0-40 records of random bytes."""
    stride = draw(STRIDES)
    rows = draw(st.integers(0, 40))
    return draw(st.binary(min_size=rows * stride, max_size=rows * stride)), stride


@settings(max_examples=300, deadline=None)
@given(
    data=records(),
    size=st.sampled_from([1, 2, 4, 8]),
    network=st.booleans(),
    wider=st.booleans(),
    draw=st.data(),
)
def test_a_field_is_each_records_integer(
    data: tuple[bytes, int], size: int, network: bool, wider: bool, draw: st.DataObject
) -> None:
    buf, stride = data
    offset = draw.draw(st.integers(0, stride - size))
    typecode = "Q" if wider else {1: "B", 2: "H", 4: "I", 8: "Q"}[size]
    order = "big" if network else sys.byteorder
    expected = [
        int.from_bytes(buf[at + offset : at + offset + size], order)
        for at in range(0, len(buf), stride)
    ]
    got = field(buf, stride, offset, size, network, typecode)
    assert isinstance(got, array) and got.typecode == typecode
    assert got.tolist() == expected


@settings(max_examples=300, deadline=None)
@given(
    stride=STRIDES,
    rows=st.integers(1, 30),
    changes=st.lists(st.tuples(st.integers(0, 29), st.integers(0, 95), st.integers(0, 255))),
    draw=st.data(),
)
def test_the_records_whose_headers_differ_are_flagged(
    stride: int,
    rows: int,
    changes: list[tuple[int, int, int]],
    draw: st.DataObject,
) -> None:
    learned = draw.draw(st.binary(min_size=stride, max_size=stride))
    headers = sorted(draw.draw(st.sets(st.integers(0, stride // 4 - 1), max_size=8)))
    headers = [4 * word for word in headers]
    buf = bytearray(learned * rows)
    for row, at, value in changes:
        if row < rows and at < stride:
            buf[row * stride + at] = value
    expected = [
        row
        for row in range(rows)
        if any(buf[row * stride + h : row * stride + h + 4] != learned[h : h + 4] for h in headers)
    ]
    assert flagged(header_flags(bytes(buf), stride, learned, headers), rows) == expected


@settings(max_examples=200, deadline=None)
@given(
    addresses=st.lists(
        st.one_of(
            st.tuples(st.just(Family.INET), st.integers(0, 2**32 - 1)),
            st.tuples(st.just(Family.INET6), st.integers(0, 2**128 - 1)),
        ),
        max_size=20,
    ),
    padding=st.integers(0, 3),
)
def test_addresses_of_both_families(addresses: list[tuple[Family, int]], padding: int) -> None:
    """A 16-byte address field (IPv4 in its first 4 bytes, the rest left as the kernel
    leaves it) after `padding` words of something else."""
    stride = 4 * padding + 16
    buf = b"".join(
        bytes(4 * padding)
        + (
            number.to_bytes(4, "big") + b"\xee" * 12
            if family is Family.INET
            else number.to_bytes(16)
        )
        for family, number in addresses
    )
    families = bytes(int(family) for family, _ in addresses)
    got = address_numbers(buf, stride, 4 * padding, families)
    assert list(got) == [number for _, number in addresses]


@settings(max_examples=100, deadline=None)
@given(
    others=st.lists(st.tuples(dests(), st.booleans()), max_size=6),
    per_datagram=st.integers(1, 6),
    family=st.sampled_from(Family),
    data=st.data(),
)
def test_captured_dest_records_with_others_decode_as_the_exact_decoder_does(
    conversation: tuple[Exchange, ...],
    others: list[tuple[RealServer, bool]],
    per_datagram: int,
    family: Family,
    data: st.DataObject,
) -> None:
    """The 6.1 capture's DEST records (its layout), repeated, among records of other
    layouts (IPv6, no tunnel, no stats), some mutated byte-wise."""
    captured = _captured(conversation, ipvs.IPVSCmd.NEW_DEST)
    assert captured
    messages = captured * 3
    for dest, mutate in others:
        message = test_dest_table._message(replies.encode_dest(dest))
        messages.insert(data.draw(st.integers(0, len(messages))), message)
        if mutate:
            place = data.draw(st.integers(0, len(messages) - 1))
            messages[place] = data.draw(mutated(messages[place]))
    dumps = [(family, messages[:5]), (family, messages[5:])]
    got = test_dest_table._columnar(dumps, per_datagram)
    assert got == test_dest_table._exact(dumps)


def test_captured_service_records_decode_as_the_exact_decoder_does(
    conversation: tuple[Exchange, ...],
) -> None:
    captured = _captured(conversation, ipvs.IPVSCmd.NEW_SERVICE)
    assert captured
    messages = captured * 20
    got = test_service_table._columnar(messages, 7)
    assert got == test_service_table._exact(messages)
    assert isinstance(got, list) and len(got) == len(messages)


def test_an_ipv6_dump_is_read_in_columns() -> None:
    """IPv6 real servers (addresses beyond 64 bits) of one layout, many at once."""
    address = ipaddress.IPv6Address("2001:db8::ffff:1")
    dest = dataclasses.replace(DEST, address=address, family=Family.INET6)
    messages = [test_dest_table._message(replies.encode_dest(dest))] * 100
    dumps = [(Family.INET6, messages)]
    assert test_dest_table._columnar(dumps, 10) == test_dest_table._exact(dumps)
