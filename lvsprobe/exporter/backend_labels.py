"""The label blocks of real servers, kept from one scrape to the next.

A kube-proxy node's scrape writes eight lines per real server by default (10^5 of them),
each with the real server's label block: its service's labels, then its own address, port
and forward.
Making those blocks (address text included) cost a scrape about as much as writing the values,
yet they change only when a real server is added, removed or edited. So the `Scraper` owns one
`BackendLabels` per namespace and hands it to each scrape: a service's blocks are reused when
its label columns (address family and number, port, forward) equal those the blocks were made
from, compared as lists in C, and the rest are made in one batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice, repeat
from typing import TypeVar

from lvsprobe.model import Family, Forward, RealServerRows, address_texts

T = TypeVar("T")

# Labels by the Forward value (a list index: hashing an enum member runs Python code).
_FORWARD_LABELS = tuple(Forward(value).label for value in range(len(Forward)))
# Real servers whose address texts are made in one go (all held at once).
_PART = 8192
# What a real server's label block is made from besides its service's labels.
_Columns = tuple[list[Family], list[int], list[int], list[Forward]]


@dataclass(frozen=True, slots=True, eq=False)
class _Made:
    """A service's label blocks and the columns they were made from."""

    columns: _Columns
    blocks: list[str]


class BackendLabels:
    """Label blocks of the real servers of each service, by the text they start with (the
    namespace prefix and the service's labels).

    Thread-safe: a scrape reads the previous scrape's blocks and replaces them with its own
    in one assignment; concurrent scrapes at worst make the same blocks twice. Blocks of a
    service that a scrape did not see are dropped by it.
    """

    def __init__(self) -> None:
        self._made: dict[str, _Made] = {}

    def blocks(self, services: Iterable[tuple[str, RealServerRows]]) -> list[str]:
        """The label block of every row of these services, in order, each ending in the
        space before a value (`Builder.rows`). A service is its head (the block up to
        `backend_address="`) and its rows."""
        previous = self._made
        made: dict[str, _Made] = {}
        parts: list[list[str]] = []
        missing: list[tuple[int, str, _Columns]] = []
        for head, rows in services:
            columns = _label_columns(rows)
            known = previous.get(head)
            if known is not None and known.columns == columns:
                made[head] = known
                parts.append(known.blocks)
            else:
                missing.append((len(parts), head, columns))
                parts.append([])
        for (index, head, columns), blocks in zip(missing, _make(missing), strict=True):
            made[head] = _Made(columns, blocks)
            parts[index] = blocks
        self._made = made
        return list(chain.from_iterable(parts))


def _label_columns(rows: RealServerRows) -> _Columns:
    table, start, stop = rows.table, rows.start, rows.stop
    return (
        table.address_families[start:stop],
        table.address_numbers[start:stop],
        table.ports[start:stop],
        table.forwards[start:stop],
    )


def _make(missing: list[tuple[int, str, _Columns]]) -> Iterator[list[str]]:
    """The blocks of each service in `missing`, made in one batch (addresses to text by numpy
    for big batches)."""
    counts = [len(columns[1]) for _, _, columns in missing]
    heads = repeated([head for _, head, _ in missing], counts)
    families = list(chain.from_iterable(columns[0] for _, _, columns in missing))
    numbers = list(chain.from_iterable(columns[1] for _, _, columns in missing))
    ports = chain.from_iterable(columns[2] for _, _, columns in missing)
    forwards = map(
        _FORWARD_LABELS.__getitem__, chain.from_iterable(columns[3] for _, _, columns in missing)
    )
    blocks: list[str] = []
    # In parts: the address texts of a part are all held at once.
    for start in range(0, len(numbers), _PART):
        stop = start + _PART
        texts = address_texts(families[start:stop], numbers[start:stop])
        # Ports and forwards run on over the parts: the part's heads end each zip first.
        rows = zip(islice(heads, len(texts)), texts, ports, forwards, strict=False)
        blocks += [
            f'{head}{text}",backend_port="{port}",forward="{fwd}"}} '
            for head, text, port, fwd in rows
        ]
    made = iter(blocks)
    return (list(islice(made, count)) for count in counts)


def repeated(values: Iterable[T], counts: Iterable[int]) -> Iterator[T]:
    """Each value as many times as its count: a service's labels for each of its real
    servers (C-level, no loop per real server)."""
    return chain.from_iterable(map(repeat, values, counts))
