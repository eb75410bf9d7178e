"""The columnar real servers: a table's rows are the objects they stand for, whichever way
the table was made, and tables join by their columns."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from array import array
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.model import (
    Family,
    Forward,
    RealServer,
    RealServerRows,
    RealServerTable,
    Service,
    ServiceFlag,
    ServiceKey,
    TableBuilder,
    address_number,
    address_texts,
)
from tests.strategies import real_servers


def _table() -> RealServerTable:
    return RealServerTable(
        address_families=[Family.INET] * 4,
        address_numbers=[0xC6120101, 0xC6120102, 0xC6120101, 0],
        ports=[80, 8080, 443, 0],
        forwards=[Forward.MASQ, Forward.ROUTE, Forward.TUNNEL, Forward.LOCAL],
        weights=[1, 0, 3, 4],
        active_conns=[5, 6, -1, 0],
        inactive_conns=[7, 8, 9, 2**31 - 1],
    )


def _made(table: RealServerTable, row: int) -> RealServer:
    return RealServer(
        IPv4Address(table.address_numbers[row]),
        table.ports[row],
        table.forwards[row],
        table.weights[row],
        table.active_conns[row],
        table.inactive_conns[row],
        family=Family.INET,
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(real_servers(), max_size=5), max_size=5))
def test_tables_of_objects_and_their_joins_give_the_objects_back(
    groups: list[list[RealServer]],
) -> None:
    parts = [RealServerRows.of(group) for group in groups]
    for part, group in zip(parts, groups, strict=True):
        assert part.objects() == tuple(group)
    joined = RealServerTable.concat(parts)
    want = tuple(rs for group in groups for rs in group)
    assert RealServerRows(joined, 0, len(joined)).objects() == want
    builder = TableBuilder()
    for part, group in zip(parts, groups, strict=True):
        builder.add_rows(part.table, part.start, part.stop)
        for rs in group[:1]:
            builder.add(rs)
    mixed = builder.build()
    assert len(mixed) == builder.rows
    assert RealServerRows(mixed, 0, len(mixed)).objects() == tuple(
        rs for group in groups for rs in (*group, *group[:1])
    )


def _compact(table: RealServerTable) -> RealServerTable:
    """The table with its integer columns as arrays of u64, as netlink's decode makes them
    (the test tables' values are all >= 0)."""
    return dataclasses.replace(
        table,
        address_numbers=array("Q", table.address_numbers),
        ports=array("Q", table.ports),
        weights=array("Q", table.weights),
        active_conns=array("Q", table.active_conns),
        inactive_conns=array("Q", table.inactive_conns),
    )


def test_compact_and_list_columns_join_as_the_same_rows() -> None:
    """Arrays joined with arrays stay arrays (no int object per value); joined with lists
    or None-filled rows they become lists; the rows are the same either way."""
    plain = dataclasses.replace(_table(), active_conns=[5, 6, 1, 0])
    compact = _compact(plain)
    with_stats = dataclasses.replace(
        plain, stats=tuple([n, n + 1, 0, 2**64 - 1] for n in range(10))
    )
    want = RealServerRows(plain, 0, 4).objects()
    builder = TableBuilder()
    builder.add_rows(compact, 0, 4)
    builder.add_rows(compact, 1, 3)
    joined = builder.build()
    assert isinstance(joined.ports, array) and isinstance(joined.weights, array)
    assert RealServerRows(joined, 0, len(joined)).objects() == (*want, *want[1:3])
    for parts in ([compact, plain], [plain, compact], [compact, with_stats, compact]):
        joined = RealServerTable.concat(RealServerRows(table, 0, 4) for table in parts)
        assert not isinstance(joined.ports, array)
        got = RealServerRows(joined, 0, len(joined)).objects()
        assert got == tuple(rs for t in parts for rs in RealServerRows(t, 0, 4).objects())


def test_split_makes_the_rows_of_consecutive_parts() -> None:
    table = _table()
    parts = RealServerRows.split(table, [1, 0, 3])
    assert [(rows.start, rows.stop) for rows in parts] == [(0, 1), (1, 1), (1, 4)]
    assert all(rows.table is table for rows in parts)
    assert parts == [
        RealServerRows(table, 0, 1),
        RealServerRows(table, 1, 1),
        RealServerRows(table, 1, 4),
    ]
    assert parts[2].objects() == RealServerRows(table, 1, 4).objects()
    assert RealServerRows.split(table, []) == []
    for counts in ([2, 3], [-1, 2], [5]):
        with pytest.raises(ValueError, match="not in a table of 4"):
            RealServerRows.split(table, counts)


def test_rows_are_the_objects_init_makes() -> None:
    table = _table()
    rows = RealServerRows(table, 1, 4)
    want = tuple(_made(table, row) for row in range(1, 4))
    assert len(rows) == 3
    assert rows.objects() == want
    assert [type(rs) for rs in rows.objects()] == [RealServer] * 3
    assert rows == want and want == rows
    assert hash(rows) == hash(want)
    assert repr(rows) == f"RealServerRows({want!r})"
    with pytest.raises(dataclasses.FrozenInstanceError):
        rows.objects()[0].weight = 9  # type: ignore[misc]


def test_rows_give_their_columns_and_heads() -> None:
    table = _table()
    rows = RealServerRows(table, 1, 4)
    assert rows.weights == [0, 3, 4]
    assert rows.address_families == [Family.INET] * 3
    head = rows.head(2)
    assert (head.table, head.start, head.stop) == (table, 1, 3)
    assert rows.head(9) == rows and len(rows.head(0)) == 0 and len(rows.head(-1)) == 0


def test_rows_compare_by_value() -> None:
    table = _table()
    assert RealServerRows(table, 0, 1) != RealServerRows(table, 2, 3)  # same address
    assert RealServerRows(table, 0, 2) == RealServerRows(_table(), 0, 2)
    assert RealServerRows(table, 0, 0) == ()
    assert RealServerRows(table, 0, 1) != [_made(table, 0)]  # a tuple, as the other readers
    with pytest.raises(ValueError, match="not in a table of 4"):
        RealServerRows(table, 2, 5)
    with pytest.raises(ValueError):
        RealServerRows(table, 3, 2)
    with pytest.raises(ValueError, match="column ports has 3 rows, not 4"):
        dataclasses.replace(table, ports=[1, 2, 3])


def test_a_service_given_objects_holds_rows_of_them() -> None:
    table = _table()
    key = ServiceKey(Family.INET, None, None, 0, fwmark=7)
    columnar = Service(key, "rr", ServiceFlag.HASHED, None, RealServerRows(table, 0, 4))
    objects = Service(key, "rr", ServiceFlag.HASHED, None, columnar.real_servers.objects())
    assert isinstance(objects.real_servers, RealServerRows)
    assert columnar == objects and objects == columnar
    assert hash(columnar) == hash(objects)
    assert {columnar, objects} == {objects}


def test_rows_pickle_and_copy_as_rows() -> None:
    rows = RealServerRows(_table(), 0, 3)
    for copied in (pickle.loads(pickle.dumps(rows)), copy.deepcopy(rows), copy.copy(rows)):
        assert copied == rows and isinstance(copied, RealServerRows)


def test_a_backend_of_several_rows_is_one_address_object() -> None:
    objects = RealServerRows(_table(), 0, 4).objects()
    assert objects[0].address is objects[2].address
    assert str(objects[3].address) == "0.0.0.0"


def test_address_texts_of_both_families() -> None:
    numbers = [octet * 0x01010101 for octet in range(256)] * 20
    families = [Family.INET] * len(numbers)
    assert address_texts(families, numbers) == [str(IPv4Address(n)) for n in numbers]
    mixed = [IPv4Address(7), IPv6Address("2001:db8::1"), IPv6Address("::ffff:1.2.3.4")]
    fams, nums = zip(*map(address_number, mixed), strict=True)
    assert address_texts(fams, nums) == ["0.0.0.7", "2001:db8::1", str(mixed[2])]
