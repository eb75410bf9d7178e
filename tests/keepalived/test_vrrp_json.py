"""keepalived.json (keepalived 2.2.7's real dumps) and hostile variants of it."""

from __future__ import annotations

import contextlib
import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import ParseError
from lvsprobe.keepalived.model import Vip, VrrpState
from lvsprobe.keepalived.vrrp_json import parse_keepalived_json

VRRP = Path(__file__).parents[1] / "fixtures" / "keepalived-2.2.7" / "vrrp"


def test_master_and_backup() -> None:
    web, db = parse_keepalived_json((VRRP / "a-master.json").read_bytes())
    assert (web.name, web.vrid, web.interface, web.state) == (
        "VI_web",
        51,
        "kaA-v0",
        VrrpState.MASTER,
    )
    assert (web.base_priority, web.effective_priority) == (150, 150)
    assert web.vips == (
        Vip(ipaddress.IPv4Address("198.18.0.100"), True),
        Vip(ipaddress.IPv4Address("198.18.0.101"), True),
    )
    assert (web.become_master, web.release_master) == (1, 0)
    assert web.last_transition_s == pytest.approx(1796558568.623726)
    assert (db.name, db.state, db.vips[0].is_set) == ("VI_db", VrrpState.BACKUP, False)


def test_transitions_are_counted() -> None:
    web, _ = parse_keepalived_json((VRRP / "b-after-a-returned.json").read_bytes())
    assert (web.state, web.become_master, web.release_master) == (VrrpState.BACKUP, 1, 1)
    stopped = parse_keepalived_json((VRRP / "b-after-a-stopped.json").read_bytes())
    assert [i.state for i in stopped] == [VrrpState.MASTER, VrrpState.MASTER]


def test_fault() -> None:
    instances = parse_keepalived_json((VRRP / "b-fault.json").read_bytes())
    assert {(i.state, any(v.is_set for v in i.vips)) for i in instances} == {
        (VrrpState.FAULT, False)
    }


def _edited(**data: object) -> bytes:
    doc = json.loads((VRRP / "a-master.json").read_bytes())
    doc[0]["data"].update(data)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        ((VRRP / "a-master.json").read_bytes()[:-20], "not JSON"),  # a dump still being written
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b"[1" + b"0" * 5000 + b"]", "not JSON"),  # longer than int() converts
        (b"{}", "expected an array"),
        (b"[[]]", "instance #0: expected an object"),
        (b'[{"data": {}}]', "'iname' is not a string"),
        (_edited(state=7), "unknown state 7"),
        (_edited(state=True), "'state' is not an integer"),
        (_edited(vrid=256), "'vrid' is not an integer 0..255"),
        (_edited(base_priority=-1), "'base_priority' is not an integer"),
        (_edited(vips="198.18.0.100"), "'vips' is not an array of strings"),
        (_edited(vips=["not-an-address dev x set"]), "not an address"),
        (_edited(vips=[""]), "empty virtual address"),
        (_edited(last_transition="yesterday"), "'last_transition' is not a time"),
        (_edited(iname="VI_db"), "instance named twice"),
    ],
)
def test_hostile(data: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_keepalived_json(data)


def test_vip_flags_after_words_with_values() -> None:
    """`label set` is a label named set, not the flag; `set` before `nftable_set` is."""
    vips = [
        "198.18.0.100 dev eth0 scope global label set",
        "fd00::100/64 dev eth0 scope global preferred_lft forever set nftable_set",
    ]
    (web, _) = parse_keepalived_json(_edited(vips=vips))
    assert [v.is_set for v in web.vips] == [False, True]
    assert str(web.vips[1].address) == "fd00::100"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_only_parse_errors_escape_bytes(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_keepalived_json(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["state", "vrid", "iname", "vips", "base_priority", "last_transition"]),
    json_values,
)
def test_only_parse_errors_escape_fields(key: str, value: object) -> None:
    with contextlib.suppress(ParseError):
        parse_keepalived_json(_edited(**{key: value}))
