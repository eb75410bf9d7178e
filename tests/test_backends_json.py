"""`status --json` writes each service's backends from the table's columns by templates: the
text must be json's own encoding of the dicts, byte for byte, for any table a reader makes
(lists or compact arrays, nulls anywhere, IPv4/IPv6, rows shared by many services or one
table each) and any batch boundary, and the services around them with odd names. The
document read from columns is the one objects give, and reads back to the same snapshot."""

from __future__ import annotations

import dataclasses
import json
from array import array
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.backends_json import BATCH_ROWS, backends_texts, backends_to_json
from lvsprobe.kernel.genl.simulated import SimulatedKernel, generated_services
from lvsprobe.kernel.genl.socket import IPVSNetlink
from lvsprobe.model import (
    Family,
    Forward,
    Persistence,
    Protocol,
    Rates,
    RealServer,
    RealServerRows,
    RealServerTable,
    Service,
    ServiceFlag,
    ServiceKey,
    Snapshot,
    Stats,
)
from lvsprobe.snapshot_json import (
    service_to_json,
    services_text,
    snapshot_from_json,
    snapshot_json_text,
    snapshot_to_json,
)
from tests.strategies import maybe, real_servers, u32, u64


def dumps(value: object) -> str:
    """How `status --json` writes a service: json's C encoder, on one line."""
    return json.dumps(value, separators=(", ", ": "))


# Strings a kernel or a JSON document could hand us: quotes, backslashes, controls, non-ASCII.
odd_text = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ['wlc"', "a\\b", "\n\t\x00", "é☃\U0001f600", "%d %s", "</script>", "\x7f\u2028"]
)


def _compact(table: RealServerTable) -> RealServerTable:
    """The table with its None-free integer columns as arrays of u64 (netlink's decode)."""
    changes: dict[str, Any] = {
        name: array("Q", column)
        for name in ("ports", "weights", "inactive_conns")
        if None not in (column := getattr(table, name))
    }
    if table.stats is not None:
        changes["stats"] = tuple(
            array("Q", column) if None not in column else column for column in table.stats
        )
    return dataclasses.replace(table, **changes)


@st.composite
def row_parts(draw: st.DrawFn) -> list[RealServerRows]:
    """Services' real servers: rows of one table split among them (as a read makes them),
    some with a table of their own instead (as objects make them); lists or arrays."""
    groups = draw(st.lists(st.lists(real_servers(), max_size=6), max_size=6))
    compact = draw(st.booleans())
    shared = RealServerTable.of(rs for group in groups for rs in group)
    parts = RealServerRows.split(_compact(shared) if compact else shared, list(map(len, groups)))
    for index, group in enumerate(groups):
        if draw(st.booleans()):
            own = RealServerTable.of(group)
            parts[index] = RealServerRows(_compact(own) if compact else own, 0, len(group))
    return parts


def _backend_of_object(rs: RealServer) -> dict[str, Any]:
    """The schema's backend, from one object."""

    def plain(obj: object) -> object:
        return None if obj is None else dataclasses.asdict(obj)  # type: ignore[call-overload]

    return {
        "address": str(rs.address),
        "port": rs.port,
        "forward": rs.forward.label,
        "weight": rs.weight,
        "active_conns": rs.active_conns,
        "inactive_conns": rs.inactive_conns,
        "persistent_conns": rs.persistent_conns,
        "upper_threshold": rs.upper_threshold,
        "lower_threshold": rs.lower_threshold,
        "family": rs.family.name.lower() if rs.family is not None else None,
        "tunnel": plain(rs.tunnel),
        "stats": plain(rs.stats),
        "rates": plain(rs.rates),
    }


@settings(max_examples=150)
@given(row_parts(), st.integers(1, 9))
def test_backends_text_is_json_of_the_dicts(parts: list[RealServerRows], batch_rows: int) -> None:
    want = [dumps(backends_to_json(part)) for part in parts]
    assert list(backends_texts(parts, batch_rows)) == want
    assert list(backends_texts(parts)) == want
    for part in parts:
        assert backends_to_json(part) == [_backend_of_object(rs) for rs in part.objects()]


@st.composite
def services(draw: st.DrawFn) -> list[Service]:
    parts = draw(row_parts())
    out = []
    for index, rows in enumerate(parts):
        kind = draw(st.sampled_from(["v4", "v6", "fwmark"]))
        if kind == "fwmark":
            key = ServiceKey(draw(st.sampled_from([None, *Family])), None, None, 0, index + 1)
        else:
            v6 = kind == "v6"
            address = IPv6Address(draw(u64) << 64) if v6 else IPv4Address(draw(u32))
            family = Family.INET6 if v6 else Family.INET
            key = ServiceKey(family, draw(st.sampled_from(Protocol)), address, draw(u32))
        persistence = draw(st.none() | st.builds(Persistence, maybe, maybe, st.integers(0, 128)))
        out.append(
            Service(
                key,
                draw(odd_text),
                ServiceFlag(draw(st.integers(0, 0x3F))),
                persistence,
                rows,
                draw(st.none() | st.builds(Stats, u64, u64, u64, u64, u64)),
                draw(st.none() | st.builds(Rates, u64, u64, u64, u64, u64)),
                draw(st.none() | odd_text),
            )
        )
    return out


@settings(max_examples=100)
@given(services())
def test_services_text_is_json_of_the_dicts(made: list[Service]) -> None:
    assert list(services_text(made)) == [dumps(service_to_json(svc)) for svc in made]
    snap = Snapshot(loaded=True, via="netlink", services=tuple(made))
    text = "".join(snapshot_json_text(snap))
    assert json.loads(text) == json.loads(json.dumps(snapshot_to_json(snap)))


@pytest.mark.parametrize("seed", [None, 2])
def test_a_read_of_thousands_of_real_servers_across_batches(seed: int | None) -> None:
    """Netlink's compact columns, one table for all the services, in batches of rows."""
    read = IPVSNetlink.connect(SimulatedKernel(generated_services(500, seed=seed))).services()
    assert sum(len(svc.real_servers) for svc in read) > BATCH_ROWS or seed is not None
    assert list(services_text(read)) == [dumps(service_to_json(svc)) for svc in read]


def test_a_batch_never_joins_rows_of_two_tables() -> None:
    """A part of its own table, then an empty part and a part of a shared one: the empty
    part follows nothing (its rows are none), so the third starts a batch of its own."""
    rs = RealServer(IPv4Address("198.18.0.1"), 80, Forward.MASQ, 1, 0, 0)
    shared = RealServerTable.of([rs, dataclasses.replace(rs, port=81)])
    parts = [
        RealServerRows.of([dataclasses.replace(rs, port=8080)]),
        RealServerRows(shared, 1, 1),
        RealServerRows(shared, 1, 2),
    ]
    want = [dumps(backends_to_json(part)) for part in parts]
    assert list(backends_texts(parts)) == want
    assert want[2] == dumps([_backend_of_object(dataclasses.replace(rs, port=81))])


def test_values_percent_d_would_misprint_are_written_as_json_writes_them() -> None:
    """A table of objects holds what it was given: a bool is `true` and a float `1.5` to
    json, `1` to `%d`."""
    odd: list[Any] = [True, 1.5, 2**70]
    table = RealServerTable(
        address_families=[Family.INET] * 3,
        address_numbers=[1, 2, 3],
        ports=odd,
        forwards=[Forward.MASQ] * 3,
        weights=[1, 2, 3],
        active_conns=odd[::-1],
        inactive_conns=[None, 0, False],
        persistent_conns=[None, 2.0, 3],
    )
    rows = RealServerRows(table, 0, 3)
    text = dumps(backends_to_json(rows))
    assert list(backends_texts([rows])) == [text]
    assert '"port": true' in text and '"weight": 1,' in text


def test_backends_from_columns_are_those_of_the_objects() -> None:
    services = IPVSNetlink.connect(SimulatedKernel(generated_services(200, seed=2))).services()
    snap = Snapshot(loaded=True, via="netlink", services=services)
    doc = snapshot_to_json(snap)
    for svc, svc_doc in zip(services, doc["services"], strict=True):
        assert svc_doc["backends"] == [_backend_of_object(rs) for rs in svc.real_servers.objects()]
    assert any(b["tunnel"] for s in doc["services"] for b in s["backends"])
    assert any(b["family"] is None for s in doc["services"] for b in s["backends"])
    back = snapshot_from_json(json.loads(json.dumps(doc)))
    assert back.services == services
