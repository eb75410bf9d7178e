"""A service's real servers: a row range of the snapshot's `RealServerTable`.

The table is the columns both readers fill; a service holds only where its rows are. This is
that range as consumers meet it: column slices for the exporter and the text views, and a
Sequence of `RealServer` objects (made once, on demand) for the analyzers and tests, equal
to and pickled as the tuple of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, chain, repeat
from typing import overload

from lvsprobe.model.realservers import RealServerTable
from lvsprobe.model.values import Family, RealServer


class RealServerRows(Sequence[RealServer]):
    """A service's real servers: rows start..stop of a `RealServerTable`.

    Consumers read the columns (`table` with `start` and `stop`, or the column properties
    here) or the explicit `objects()` view, made once on demand. As a Sequence it is that
    view (tests compare it with tuples); equal to, and hashed as, the tuple of objects.
    """

    __slots__ = ("_objects", "_start", "_stop", "_table")

    def __init__(self, table: RealServerTable, start: int, stop: int) -> None:
        if not 0 <= start <= stop <= len(table):
            raise ValueError(f"rows {start}..{stop} are not in a table of {len(table)}")
        self._table = table
        self._start = start
        self._stop = stop
        self._objects: tuple[RealServer, ...] | None = None

    @classmethod
    def of(cls, objects: Iterable[RealServer]) -> RealServerRows:
        """Rows of a table of their own for these objects (tests, JSON)."""
        table = RealServerTable.of(objects)
        return cls(table, 0, len(table))

    @classmethod
    def split(cls, table: RealServerTable, counts: Sequence[int]) -> list[RealServerRows]:
        """The table's rows in consecutive parts of `counts[i]` rows (a read's services, in
        its order), made in bulk: each slot set for every part in one C-level map, as
        `frozen_records` does (10^3-10^4 services a scrape)."""
        stops = list(accumulate(counts))
        if (counts and min(counts) < 0) or (stops[-1] if stops else 0) > len(table):
            raise ValueError(f"parts of {list(counts)} rows are not in a table of {len(table)}")
        out = list(map(object.__new__, repeat(cls, len(stops))))
        for slot, values in (
            ("_table", repeat(table)),
            ("_start", chain((0,), stops)),
            ("_stop", stops),
            ("_objects", repeat(None)),
        ):
            deque(map(getattr(cls, slot).__set__, out, values), maxlen=0)
        return out

    @property
    def table(self) -> RealServerTable:
        return self._table

    @property
    def start(self) -> int:
        return self._start

    @property
    def stop(self) -> int:
        return self._stop

    @property
    def address_families(self) -> Sequence[Family]:
        return self._table.address_families[self._start : self._stop]

    @property
    def weights(self) -> Sequence[int]:
        return self._table.weights[self._start : self._stop]

    def head(self, count: int) -> RealServerRows:
        """The first `count` rows."""
        return RealServerRows(self._table, self._start, self._start + max(0, min(count, len(self))))

    def objects(self) -> tuple[RealServer, ...]:
        """The rows as `RealServer` objects (made once)."""
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

    def __reduce__(self) -> tuple[object, tuple[tuple[RealServer, ...]]]:
        """Pickled (and deep-copied) as rows of a table of their own."""
        return RealServerRows.of, (self.objects(),)
