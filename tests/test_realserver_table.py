"""The columnar real servers: a `RealServerRows` is the tuple it stands for."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from ipaddress import IPv4Address

import pytest

from lvsprobe.model import (
    Family,
    Forward,
    RealServer,
    Service,
    ServiceFlag,
    ServiceKey,
)
from lvsprobe.realserver_table import RealServerRows, RealServerTable


def _table() -> RealServerTable:
    return RealServerTable(
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


def test_rows_are_the_objects_init_makes() -> None:
    table = _table()
    rows = RealServerRows(table, 1, 4)
    want = tuple(_made(table, row) for row in range(1, 4))
    assert len(rows) == 3
    assert tuple(rows) == want
    assert [type(rs) for rs in rows] == [RealServer] * 3
    assert rows == want and want == rows
    assert hash(rows) == hash(want)
    assert repr(rows) == f"RealServerRows({want!r})"
    assert rows[0] == want[0] and rows[-1] == want[-1]
    with pytest.raises(IndexError):
        rows[3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rows[0].weight = 9  # type: ignore[misc]


def test_rows_slice_to_rows_of_the_same_table() -> None:
    table = _table()
    rows = RealServerRows(table, 1, 4)
    head = rows[:2]
    assert isinstance(head, RealServerRows)
    assert (head.table, head.start, head.stop) == (table, 1, 3)
    assert rows[5:] == () and rows[:0] == () and rows[2:1] == ()
    assert rows[::2] == (rows[0], rows[2])
    assert rows[-1:] == (rows[2],)


def test_rows_add_as_tuples() -> None:
    table = _table()
    rows = RealServerRows(table, 0, 2)
    last = (_made(table, 3),)
    assert rows + last == (*rows, *last) and type(rows + last) is tuple
    assert last + rows == (*last, *rows) and type(last + rows) is tuple
    assert rows + rows[1:] == (*rows, rows[1])
    assert rows.__add__([last[0]]) is NotImplemented  # a list, as with a tuple


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


def test_services_with_rows_or_tuples_are_equal() -> None:
    table = _table()
    key = ServiceKey(Family.INET, None, None, 0, fwmark=7)
    columnar = Service(key, "rr", ServiceFlag.HASHED, None, RealServerRows(table, 0, 4))
    objects = dataclasses.replace(columnar, real_servers=tuple(columnar.real_servers))
    assert columnar == objects and objects == columnar
    assert hash(columnar) == hash(objects)
    assert {columnar, objects} == {objects}


def test_rows_pickle_and_copy_as_the_tuple() -> None:
    rows = RealServerRows(_table(), 0, 3)
    for copied in (pickle.loads(pickle.dumps(rows)), copy.deepcopy(rows), copy.copy(rows)):
        assert copied == rows
    assert type(pickle.loads(pickle.dumps(rows))) is tuple


def test_a_backend_of_several_rows_is_one_address_object() -> None:
    objects = RealServerRows(_table(), 0, 4).objects()
    assert objects[0].address is objects[2].address
    assert str(objects[3].address) == "0.0.0.0"
