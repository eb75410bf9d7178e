"""Real servers as columns: the /proc/net/ip_vs reader's form of `Service.real_servers`.

A kube-proxy node lists 10^5 real servers. As frozen `RealServer` objects (13 slots and an
IPv4Address each) they cost ~0.1 s and ~20 MB a scrape to make, and as much again for the
exporter to read back, which needs them column by column. So the reader keeps the six
columns a /proc line gives (`RealServerTable`) and each service holds a range of them
(`RealServerRows`), a sequence equal to the tuple of objects it stands for; the objects are
made only when something iterates it (the analyzers, JSON, `status`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import overload

from lvsprobe.model import Family, Forward, RealServer


@dataclass(frozen=True, slots=True, eq=False)
class RealServerTable:
    """IPv4 real servers as six columns, one row each, in file order. The lists are never
    changed once the table is made."""

    address_numbers: list[int]  # the int of each IPv4 address
    ports: list[int]
    forwards: list[Forward]
    weights: list[int]
    active_conns: list[int]
    inactive_conns: list[int]

    def __len__(self) -> int:
        return len(self.address_numbers)

    def real_servers(self, start: int, stop: int) -> tuple[RealServer, ...]:
        """`RealServer(*row, family=INET)` for rows start..stop.

        The frozen dataclass's __init__ sets its 13 slots one Python-level call each
        (~2.5 µs a real server); here each slot is set for every row by its descriptor in
        one C-level map, as __init__ does through object.__setattr__. RealServer has no
        __post_init__ to skip; the tests compare with __init__'s objects.
        """
        n = max(0, stop - start)
        out = tuple(map(object.__new__, repeat(RealServer, n)))
        if n:
            numbers = self.address_numbers[start:stop]
            distinct = list(dict.fromkeys(numbers))  # a backend of several services repeats
            known = dict(zip(distinct, ipv4_addresses(distinct), strict=True))
            columns: list[Iterable[object]] = [
                map(known.__getitem__, numbers),
                *(
                    column[start:stop]
                    for column in (
                        self.ports,
                        self.forwards,
                        self.weights,
                        self.active_conns,
                        self.inactive_conns,
                    )
                ),
            ]
            columns += [repeat(_RS_DEFAULTS[name], n) for name in _RS_FIELDS[len(columns) :]]
            for setter, column in zip(_RS_SETTERS, columns, strict=True):
                deque(map(setter, out, column), maxlen=0)
        return out


class RealServerRows(Sequence[RealServer]):
    """A service's real servers as rows start..stop of a `RealServerTable`.

    Equal to, and hashed as, the tuple of `RealServer` other readers give; `+` gives a
    tuple. The objects are made on first use and kept: two threads sharing one view may
    both make them, equal either way. Readers of many real servers take the columns
    instead (`table`, `start`, `stop`).
    """

    __slots__ = ("_objects", "_start", "_stop", "_table")

    def __init__(self, table: RealServerTable, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= len(table):
            raise ValueError(f"rows {start}..{stop} are not in a table of {len(table)}")
        self._table = table
        self._start = start
        self._stop = stop
        self._objects: tuple[RealServer, ...] | None = None

    @property
    def table(self) -> RealServerTable:
        return self._table

    @property
    def start(self) -> int:
        return self._start

    @property
    def stop(self) -> int:
        return self._stop

    def objects(self) -> tuple[RealServer, ...]:
        """The tuple these rows stand for (made once)."""
        if self._objects is None:
            self._objects = self._table.real_servers(self._start, self._stop)
        return self._objects

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> RealServer: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[RealServer]: ...

    def __getitem__(self, index: int | slice) -> RealServer | Sequence[RealServer]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self.objects()[index]
            return RealServerRows(self._table, self._start + start, self._start + max(start, stop))
        return self.objects()[index]

    def __iter__(self) -> Iterator[RealServer]:
        return iter(self.objects())

    def __add__(self, other: object) -> tuple[RealServer, ...]:
        if isinstance(other, RealServerRows | tuple):
            return self.objects() + tuple(other)
        return NotImplemented

    def __radd__(self, other: object) -> tuple[RealServer, ...]:
        if isinstance(other, tuple):
            return other + self.objects()
        return NotImplemented

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RealServerRows):
            if (other.table, other.start, other.stop) == (self._table, self._start, self._stop):
                return True
            return self.objects() == other.objects()
        if isinstance(other, tuple):
            return self.objects() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.objects())

    def __repr__(self) -> str:
        return f"RealServerRows({self.objects()!r})"

    def __reduce__(self) -> tuple[type[tuple[RealServer, ...]], tuple[tuple[RealServer, ...]]]:
        """Pickled (and deep-copied) as the tuple it stands for."""
        return tuple, (self.objects(),)


# RealServer's fields in order, and the slot setters `RealServerTable` fills them by.
_RS_FIELDS = tuple(f.name for f in dataclasses.fields(RealServer))
_RS_SETTERS = tuple(getattr(RealServer, name).__set__ for name in _RS_FIELDS)
# The fields after the six a row gives: their defaults, but the family is known (IPv4).
_RS_DEFAULTS: dict[str, object] = {
    f.name: f.default
    for f in dataclasses.fields(RealServer)
    if f.default is not dataclasses.MISSING
}
_RS_DEFAULTS["family"] = Family.INET
assert _RS_FIELDS[:6] == ("address", "port", "forward", "weight", "active_conns", "inactive_conns")

# The one slot an IPv4Address holds its int in (CPython's ipaddress); None elsewhere.
_IPV4_SET = getattr(getattr(ipaddress.IPv4Address, "_ip", None), "__set__", None)


def ipv4_addresses(numbers: Sequence[int]) -> list[ipaddress.IPv4Address]:
    """`IPv4Address(n)` for each int the caller has checked to be in [0, 2^32).

    __init__'s type and range checks cost more than the object (~0.6 µs each); here each
    object's one slot is set by its descriptor in a C-level map, as __init__ does. The
    tests compare with __init__'s objects.
    """
    if _IPV4_SET is None:
        return list(map(ipaddress.IPv4Address, numbers))
    out = list(map(object.__new__, repeat(ipaddress.IPv4Address, len(numbers))))
    deque(map(_IPV4_SET, out, numbers), maxlen=0)
    return out
