"""Records split by a learned layout decode exactly as walked ones: same model, same error."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl import ipvs, replies
from lvsprobe.kernel.genl.attrs import Where, encode_attr, walk_attrs
from lvsprobe.kernel.genl.layout import MAX_LAYOUTS, AttrLayout, Layouts
from lvsprobe.kernel.genl.tables import DestAttr, StatsAttr
from lvsprobe.model import Family, RealServer, Service

from .test_ipvs_codec import DEST, dests, services


def _outcome(decode: Callable[[], object]) -> object:
    try:
        return decode()
    except ParseError as exc:
        return ("ParseError", str(exc))


@st.composite
def mutated(draw: st.DrawFn, buf: bytes) -> bytes:
    """The same length (so that the layout is tried) with a few bytes changed: headers,
    values, padding alike."""
    out = bytearray(buf)
    for _ in range(draw(st.integers(0, 3))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


@settings(max_examples=400, deadline=None)
@given(first=dests(), second=dests(), family=st.sampled_from([None, *Family]), data=st.data())
def test_dests_through_layouts_decode_as_walked(
    first: RealServer, second: RealServer, family: Family | None, data: st.DataObject
) -> None:
    layouts = ipvs.dest_layouts()
    for dest in (first, second, second):
        buf = data.draw(mutated(replies.encode_dest(dest)))
        walked = _outcome(lambda b=buf: ipvs.decode_dest(b, service_family=family))  # type: ignore[misc]
        split = _outcome(
            lambda b=buf: ipvs.decode_dest(b, service_family=family, layouts=layouts)  # type: ignore[misc]
        )
        assert split == walked


@settings(max_examples=200, deadline=None)
@given(first=services(), second=services(), data=st.data())
def test_services_through_layouts_decode_as_walked(
    first: Service, second: Service, data: st.DataObject
) -> None:
    layouts = ipvs.service_layouts()
    for service in (first, second, second):
        buf = data.draw(mutated(replies.encode_service(service)))
        walked = _outcome(lambda b=buf: ipvs.decode_service(b))  # type: ignore[misc]
        split = _outcome(lambda b=buf: ipvs.decode_service(b, layouts=layouts))  # type: ignore[misc]
        assert split == walked


def test_a_record_of_the_learned_layout_is_split_not_walked() -> None:
    """Values differ, headers do not: split, into exactly the attributes a walk finds."""
    other = replies.encode_dest(
        dataclasses.replace(DEST, port=1, weight=7, active_conns=8, inactive_conns=9)
    )
    learned = replies.encode_dest(DEST)
    layout = AttrLayout.learn(learned, {DestAttr.STATS64})
    assert layout is not None and len(other) == len(learned)
    split = layout.split(other)
    assert split is not None
    top, nests = split
    assert top == {a.type: a.payload for a in walk_attrs(other, Where("t"))}
    assert nests[DestAttr.STATS64] == {
        a.type: a.payload for a in walk_attrs(top[DestAttr.STATS64], Where("t"))
    }
    wrong_type = bytearray(other)
    wrong_type[22] ^= 0x01  # the second attribute's type (ADDR takes 20 bytes)
    assert layout.split(bytes(wrong_type)) is None
    assert layout.split(other + b"\0\0\0\0") is None


def test_duplicates_take_the_last_as_a_walk_does() -> None:
    buf = encode_attr(StatsAttr.CONNS, b"\1" * 8) + encode_attr(StatsAttr.CONNS, b"\2" * 8)
    layout = AttrLayout.learn(buf + buf, ())
    assert layout is not None
    split = layout.split(buf + buf)
    assert split is not None and split[0] == {StatsAttr.CONNS: b"\2" * 8}


def test_malformed_records_learn_nothing_and_shapes_are_bounded() -> None:
    assert AttrLayout.learn(b"\x03\x00\x01\x00", ()) is None  # shorter than its header
    assert AttrLayout.learn(b"\x08\x00\x01\x00\x00", ()) is None  # claims more than there is
    nest = encode_attr(DestAttr.STATS64, b"\x09\x00")  # a nest holding garbage
    assert AttrLayout.learn(nest, {DestAttr.STATS64}) is None
    layouts = Layouts()
    for size in range(MAX_LAYOUTS + 2):
        layouts.split(encode_attr(1, b"x" * 4 * size))
    assert len(layouts._by_size) == MAX_LAYOUTS
