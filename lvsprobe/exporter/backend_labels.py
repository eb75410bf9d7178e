"""The label blocks of real servers, kept from one scrape to the next.

A kube-proxy node's scrape writes eight lines per real server by default (10^5 of them),
each with the real server's label block: its service's labels (the head, shared by the
service's rows), then its own address, port and forward (the tail).
Making the tails (address text included) cost a scrape about as much as writing the values,
yet they change only when a real server is added, removed or edited. So the `Scraper` owns one
`BackendLabels` per namespace and hands it to each scrape: a service's tails are reused when
its label columns (address family and number, port, forward) equal those the tails were made
from, and the rest are made in one batch. `--compat node-exporter` keeps its blocks the same
way: a tail there is a service's own format (its labels after the real server's address), and
addresses are written as Go writes them.

What is kept is sized to what it saves: the tails only (a head is one string per service,
joined to its rows' tails as lines are written), and the label columns packed as bytes, 12
a real server for IPv4 (not lists of int objects, ~90). An unchanged table, the usual
scrape, is recognised by one comparison of the packed columns, with no work per service.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, islice, repeat
from typing import TypeVar

from lvsprobe.model import Family, Forward, RealServerTable, address_texts

T = TypeVar("T")
AddressTexts = Callable[[Sequence[Family], Sequence[int]], list[str]]

# The tail of a native backend family's row: a str.format of the real server's address text,
# port and forward label (the `formats` of `BackendLabels.tails`).
BACKEND_TAIL = '{0}",backend_port="{1}",forward="{2}"}} '

# Labels by the Forward value (a list index: hashing an enum member runs Python code).
_FORWARD_LABELS = tuple(Forward(value).label for value in range(len(Forward)))
# Real servers whose address texts are made in one go (all held at once).
_PART = 8192


@dataclass(frozen=True, slots=True, eq=False)
class _Packed:
    """The label columns of a table's rows, packed: rows `bounds[i]..bounds[i+1]` are
    service i's. Address numbers are 8 bytes each when every one fits (IPv4, most IPv6
    nodes do not), else the list itself."""

    families: bytes
    forwards: bytes
    ports: bytes  # u16 each
    numbers: bytes | Sequence[int]
    wide: bool  # numbers is the table's column

    @classmethod
    def of(cls, table: RealServerTable) -> _Packed:
        try:
            numbers: bytes | Sequence[int] = array("Q", table.address_numbers).tobytes()
            wide = False
        except OverflowError:  # an IPv6 address beyond 2^64
            numbers, wide = table.address_numbers, True
        return cls(
            bytes(table.address_families),
            bytes(table.forwards),
            array("H", table.ports).tobytes(),
            numbers,
            wide,
        )

    def same_rows(self, start: int, other: _Packed, other_start: int, count: int) -> bool:
        """Whether rows start.. here and other_start.. in `other` have equal labels."""
        if self.wide != other.wide:
            return False
        width = 1 if self.wide else 8
        return (
            self.families[start : start + count]
            == other.families[other_start : other_start + count]
            and self.forwards[start : start + count]
            == other.forwards[other_start : other_start + count]
            and self.ports[2 * start : 2 * (start + count)]
            == other.ports[2 * other_start : 2 * (other_start + count)]
            and self.numbers[width * start : width * (start + count)]
            == other.numbers[width * other_start : width * (other_start + count)]
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Packed)
            and self.wide == other.wide
            and self.families == other.families
            and self.forwards == other.forwards
            and self.ports == other.ports
            and self.numbers == other.numbers
        )

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True, eq=False)
class _Made:
    """One scrape's tails: service i (its head `heads[i]`, its tail format `formats[i]`) has
    rows bounds[i]..bounds[i+1]."""

    heads: list[bytes]
    formats: list[str]
    bounds: list[int]
    packed: _Packed
    tails: list[bytes]


class BackendLabels:
    """Label tails of the real servers of each service, by the service's head (the
    namespace prefix and the service's labels, up to `backend_address="`).

    Thread-safe: a scrape reads the previous scrape's tails and replaces them with its own
    in one assignment; concurrent scrapes at worst make the same tails twice. Tails of a
    service that a scrape did not see are dropped by it.
    """

    def __init__(self, texts: AddressTexts = address_texts) -> None:
        self._texts = texts  # addresses to text, in bulk
        self._made: _Made | None = None

    def tails(
        self,
        heads: list[bytes],
        counts: list[int],
        table: RealServerTable,
        formats: list[str] | None = None,
    ) -> list[bytes]:
        """The label tail of every row of `table` (service i: `heads[i]`, `counts[i]` rows,
        in order), each ending in the space before a value, in UTF-8 as the render joins
        them. Service i's tails are `formats[i]` (BACKEND_TAIL for each if None) formatted
        with a row's address text, port and forward label: a service is known again by its
        head and format. The list is shared with the next scrape: never change it."""
        if formats is None:
            formats = [BACKEND_TAIL] * len(heads)
        bounds = list(accumulate(counts, initial=0))
        packed = _Packed.of(table)
        previous = self._made
        if (
            previous is not None
            and previous.heads == heads
            and previous.formats == formats
            and previous.bounds == bounds
            and previous.packed == packed
        ):
            return previous.tails
        tails = self._remade(heads, formats, bounds, packed, table, previous)
        self._made = _Made(heads, formats, bounds, packed, tails)
        return tails

    def _remade(
        self,
        heads: list[bytes],
        formats: list[str],
        bounds: list[int],
        packed: _Packed,
        table: RealServerTable,
        previous: _Made | None,
    ) -> list[bytes]:
        """Tails reused for each service whose rows are as before, the others made."""
        known = (
            {}
            if previous is None
            else {
                key: i for i, key in enumerate(zip(previous.heads, previous.formats, strict=True))
            }
        )
        parts: list[list[bytes]] = []
        missing: list[tuple[int, int, int]] = []  # (service = index in parts, start, stop row)
        for i, key in enumerate(zip(heads, formats, strict=True)):
            start, stop = bounds[i], bounds[i + 1]
            j = known.get(key)
            if previous is not None and j is not None:
                old_start, old_stop = previous.bounds[j], previous.bounds[j + 1]
                if old_stop - old_start == stop - start and packed.same_rows(
                    start, previous.packed, old_start, stop - start
                ):
                    parts.append(previous.tails[old_start:old_stop])
                    continue
            missing.append((len(parts), start, stop))
            parts.append([])
        made = _make(table, formats, missing, self._texts)
        for (index, _, _), tails in zip(missing, made, strict=True):
            parts[index] = tails
        return list(chain.from_iterable(parts))


def _make(
    table: RealServerTable,
    formats: list[str],
    missing: list[tuple[int, int, int]],
    texts_of: AddressTexts,
) -> Iterator[list[bytes]]:
    """The tails of each (service, start, stop) row range in `missing`, made in one batch
    (addresses to text by numpy for big batches)."""

    def rows(column: Sequence[T]) -> list[T]:
        return list(chain.from_iterable(column[start:stop] for _, start, stop in missing))

    families, numbers = rows(table.address_families), rows(table.address_numbers)
    ports = iter(rows(table.ports))
    forwards = map(_FORWARD_LABELS.__getitem__, rows(table.forwards))
    row_formats = repeated(
        (formats[service] for service, _, _ in missing),
        (stop - start for _, start, stop in missing),
    )
    tails: list[bytes] = []
    # In parts: the address texts of a part are all held at once.
    for start in range(0, len(numbers), _PART):
        texts = texts_of(families[start : start + _PART], numbers[start : start + _PART])
        made = map(str.format, islice(row_formats, len(texts)), texts, ports, forwards)
        tails += map(str.encode, made)
    each = iter(tails)
    return (list(islice(each, stop - start)) for _, start, stop in missing)


def repeated(values: Iterable[T], counts: Iterable[int]) -> Iterator[T]:
    """Each value as many times as its count: a service's labels for each of its real
    servers (C-level, no loop per real server)."""
    return chain.from_iterable(map(repeat, values, counts))
