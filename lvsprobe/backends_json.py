"""A service's `backends` in `lvsprobe status --json`, from the real-server table's columns:
as dicts (`backends_to_json`) or straight as JSON text (`backends_texts`), both from one
description of the fields (`backend_fields`).

The text is what json's encoder writes for the dicts, byte for byte, made without them: a
kube-proxy node's 10^5 real servers were four dicts each (the row, its tunnel, stats and
rates) walked again by the encoder. Here a row is one `%`-format of a template made once
per table (its keys written in it), each integer column formatted by `%d` in C.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import repeat
from json.encoder import ESCAPE_ASCII
from typing import Any, TypeAlias

from lvsprobe.model import (
    RATE_FIELDS,
    STAT_FIELDS,
    Family,
    Forward,
    RealServerRows,
    RealServerTable,
    Tunnel,
    address_texts,
)

# How `status --json` writes a service, on one line (`indent` would take json's pure-Python
# encoder, ~5x the C one's time).
ONE_LINE = json.JSONEncoder(separators=(", ", ": "))


@dataclass(frozen=True)
class Values:
    """A column of JSON scalars: ints (None: null), or strings. `column` None: null in every
    row (no row has the field)."""

    column: Sequence[Any] | None


@dataclass(frozen=True)
class Named:
    """A column of enum members, each written as its name: `texts` holds its JSON text."""

    column: Sequence[Any]
    names: Mapping[Any, str | None]
    texts: Mapping[Any, str]


@dataclass(frozen=True)
class Records:
    """Columns written as one object per row, keyed by `keys`; null in a row whose first
    column is None, and in every row when `columns` is None."""

    keys: tuple[str, ...]
    columns: Sequence[Sequence[int | None]] | None


Field: TypeAlias = Values | Named | Records

TUNNEL_KEYS = tuple(f.name for f in fields(Tunnel))
_FAMILY_NAMES: dict[Family | None, str | None] = {f: f.name.lower() for f in Family}
_FAMILY_NAMES[None] = None
_FORWARD_NAMES: dict[Forward, str | None] = {f: f.label for f in Forward}
_FAMILY_TEXTS = {f: ONE_LINE.encode(name) for f, name in _FAMILY_NAMES.items()}
_FORWARD_TEXTS = {f: ONE_LINE.encode(name) for f, name in _FORWARD_NAMES.items()}


def backend_fields(rows: RealServerRows) -> tuple[tuple[str, Field], ...]:
    """The schema's backend fields, in order, each a column of these rows."""
    table, span = rows.table, slice(rows.start, rows.stop)
    families = table.address_families[span]
    reported = families if table.families is None else table.families[span]
    stats = table.stats

    def optional(column: Sequence[int | None] | None) -> Sequence[int | None] | None:
        return None if column is None else column[span]

    def group(columns: Sequence[Sequence[int | None]] | None) -> list[Sequence[int | None]] | None:
        return None if columns is None else [column[span] for column in columns]

    return (
        ("address", Values(address_texts(families, table.address_numbers[span]))),
        ("port", Values(table.ports[span])),
        ("forward", Named(table.forwards[span], _FORWARD_NAMES, _FORWARD_TEXTS)),
        ("weight", Values(table.weights[span])),
        ("active_conns", Values(table.active_conns[span])),
        ("inactive_conns", Values(table.inactive_conns[span])),
        ("persistent_conns", Values(optional(table.persistent_conns))),
        ("upper_threshold", Values(optional(table.upper_thresholds))),
        ("lower_threshold", Values(optional(table.lower_thresholds))),
        ("family", Named(reported, _FAMILY_NAMES, _FAMILY_TEXTS)),
        ("tunnel", Records(TUNNEL_KEYS, group(table.tunnels))),
        ("stats", Records(STAT_FIELDS, group(None if stats is None else stats[:5]))),
        ("rates", Records(RATE_FIELDS, group(None if stats is None else stats[5:]))),
    )


def backends_to_json(rows: RealServerRows) -> list[dict[str, Any]]:
    """The `backends` of a service as dicts, read column by column (no `RealServer`s)."""
    n = len(rows)
    described = backend_fields(rows)
    keys = [key for key, _ in described]
    columns = [_values(field, n) for _, field in described]
    return [dict(zip(keys, row, strict=True)) for row in zip(*columns, strict=True)]


def _values(field: Field, n: int) -> Iterable[Any]:
    if isinstance(field, Named):
        return map(field.names.__getitem__, field.column)
    if isinstance(field, Values):
        return repeat(None, n) if field.column is None else field.column
    if field.columns is None:
        return repeat(None, n)
    return (
        None if values[0] is None else dict(zip(field.keys, values, strict=True))
        for values in zip(*field.columns, strict=True)
    )


# A field's part of a row's template: "%d" (an int column), "%s" (JSON text), '"%s"' (strings
# needing no escapes), "null" (a column no row has), or an object's (key, part) pairs. A
# row's parts are the key its template is kept under.
_Part: TypeAlias = "str | tuple[tuple[str, _Part], ...]"
_Parts: TypeAlias = tuple[tuple[str, _Part], ...]
_INT, _TEXT, _QUOTED, _NULL = "%d", "%s", '"%s"', "null"


# Rows formatted at a time (more only for a service that has more); the text of a batch is
# held until its services are written (about 0.5 KB a row).
BATCH_ROWS = 4096


def backends_texts(parts: Iterable[RealServerRows], batch_rows: int = BATCH_ROWS) -> Iterator[str]:
    """`ONE_LINE.encode(backends_to_json(rows))` for each of `parts`, in turn.

    A snapshot's services are rows that follow on in one table: those are formatted in
    batches of about `batch_rows` rows, not a service at a time (a kube-proxy node's
    services have 10 real servers each: the work per service would be most of it).
    """
    templates: dict[_Parts, str] = {}
    batch: list[RealServerRows] = []
    table: RealServerTable | None = None  # of the batch's rows, start..stop
    start = stop = 0
    for part in parts:
        if len(part):
            if table is not None and not (
                part.table is table and part.start == stop and part.stop - start <= batch_rows
            ):
                yield from _batch_texts(batch, templates)
                batch, table = [], None
            if table is None:
                table, start = part.table, part.start
            stop = part.stop
        batch.append(part)
    yield from _batch_texts(batch, templates)


def _batch_texts(batch: list[RealServerRows], templates: dict[_Parts, str]) -> Iterator[str]:
    """Each part's backends as text, the rows of them all formatted at once."""
    filled = [part for part in batch if len(part)]
    if not filled:
        yield from repeat("[]", len(batch))
        return
    start = filled[0].start
    args: list[Iterable[Any]] = []
    fields = backend_fields(RealServerRows(filled[0].table, start, filled[-1].stop))
    parts = tuple((key, _add(field, args)) for key, field in fields)
    template = templates.get(parts)
    if template is None:
        template = templates[parts] = _object_template(parts)
    texts = list(map(template.__mod__, zip(*args, strict=True)))
    for part in batch:
        yield (
            "[" + ", ".join(texts[part.start - start : part.stop - start]) + "]"
            if len(part)
            else "[]"
        )


def _add(field: Field, args: list[Iterable[Any]]) -> _Part:
    """Append the argument columns of `field` to `args`; its part of the template."""
    if isinstance(field, Named):
        args.append(map(field.texts.__getitem__, field.column))
        return _TEXT
    if isinstance(field, Values):
        column = field.column
        if column is None:
            return _NULL
        # `%d` writes an int as json does, but a bool or a float otherwise.
        if {int} == {*map(type, column)}:
            args.append(column)
            return _INT
        if {str} == {*map(type, column)} and not ESCAPE_ASCII.search("".join(column)):
            args.append(column)
            return _QUOTED
        args.append(map(_scalar_text, column))
        return _TEXT
    if field.columns is None:
        return _NULL
    if None in field.columns[0]:
        args.append(_record_texts(field))
        return _TEXT
    return tuple(
        (key, _add(Values(column), args))
        for key, column in zip(field.keys, field.columns, strict=True)
    )


def _record_texts(field: Records) -> list[str]:
    """Each row's object as text, null in the rows that have none."""
    assert field.columns is not None
    first = field.columns[0]
    present = [index for index, value in enumerate(first) if value is not None]
    args: list[Iterable[Any]] = []
    template = _object_template(
        tuple(
            (key, _add(Values([column[index] for index in present]), args))
            for key, column in zip(field.keys, field.columns, strict=True)
        )
    )
    made = map(template.__mod__, zip(*args, strict=True))
    return ["null" if value is None else next(made) for value in first]


def _object_template(parts: _Parts) -> str:
    """The `%`-template of an object with these keys (written as ONE_LINE writes them)."""
    members = (
        ONE_LINE.encode(key).replace("%", "%%")
        + ": "
        + (part if isinstance(part, str) else _object_template(part))
        for key, part in parts
    )
    return "{" + ", ".join(members) + "}"


def _scalar_text(value: object) -> str:
    """A value as json writes it (an int, None, the rare other kind)."""
    if type(value) is int:
        return repr(value)
    return "null" if value is None else ONE_LINE.encode(value)
