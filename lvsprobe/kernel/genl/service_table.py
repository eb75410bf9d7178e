"""GET_SERVICE dump records decoded column-wise into `Service` objects.

A kube-proxy node has 10^3–10^4 services, and the exact decoder (`ipvs.decode_service`,
the reference) walks each record's ~25 attributes in Python. As for DEST records
(`dest_table`), every SERVICE record one kernel sends has the same attributes in the same
order (ip_vs_genl_fill_service), and those of one message length usually the same sizes:
the first record of a length is decoded exactly (so its layout is a valid one), its
attribute headers are learned as byte offsets, all records' headers are compared with them
at once (`columns`), and each value is read for every matching record as one strided column.
Only the objects are made one by one. A record of another layout, or whose values the exact
decoder would look at more closely (an unknown family or protocol, persistence), is decoded
exactly in its place; any error makes the whole dump go the exact way, so that its first
bad record raises as the exact decoder says it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import NamedTuple, cast

from lvsprobe.errors import ParseError
from lvsprobe.kernel.genl import ipvs
from lvsprobe.kernel.genl.attrs import STRING, U32, U64, Where
from lvsprobe.kernel.genl.columns import (
    RECORD_START,
    address_numbers,
    column,
    header_flags,
    joined,
    record_values,
    walk_offsets,
)
from lvsprobe.kernel.genl.layout import MAX_LAYOUTS, Layouts
from lvsprobe.kernel.genl.runs import Run
from lvsprobe.kernel.genl.tables import (
    ADDR_LEN,
    FLAGS,
    STATS32_CODECS,
    SVC_CODECS,
    CmdAttr,
    StatsAttr,
    SvcAttr,
)
from lvsprobe.model import (
    RATE_FIELDS,
    STAT_FIELDS,
    Family,
    Persistence,
    Protocol,
    Rates,
    RealServerRows,
    Service,
    ServiceFlag,
    ServiceKey,
    Stats,
    frozen_records,
)
from lvsprobe.model.addresses import address_objects

_STATS_ORDER = tuple(StatsAttr)[:10]
_FAMILIES = {int(member): member for member in Family}
_PROTOCOLS = {int(member): member for member in Protocol}
# Fewer records than this are decoded the exact way (as fast at that size).
COLUMNAR_MIN_RECORDS = 64


class ServiceFields(NamedTuple):
    """A service but its real servers, which are read after it (GET_DEST needs the key):
    the `Service` is made once, with them."""

    key: ServiceKey
    scheduler: str
    flags: ServiceFlag
    persistence: Persistence | None
    stats: Stats | None
    rates: Rates | None
    pe_name: str | None

    @classmethod
    def of(cls, service: Service) -> ServiceFields:
        return cls(
            service.key,
            service.scheduler,
            service.flags,
            service.persistence,
            service.stats,
            service.rates,
            service.pe_name,
        )


def services_of(fields: Sequence[ServiceFields], rows: Sequence[RealServerRows]) -> list[Service]:
    """The services, each with its real servers, made at once (`frozen_records`)."""
    if len(fields) != len(rows):
        raise ValueError(f"{len(fields)} services, {len(rows)} sets of real servers")
    columns: dict[str, Sequence[object]] = dict.fromkeys(ServiceFields._fields, ())
    if fields:
        columns = dict(zip(ServiceFields._fields, zip(*fields, strict=True), strict=True))
    columns["real_servers"] = rows
    return list(frozen_records(Service, columns, len(fields)))


def decode_service_runs(runs: Sequence[Run], layouts: Layouts) -> list[ServiceFields]:
    """The services of a GET_SERVICE dump's record runs, in order (no real servers yet).

    The one place the strategy is chosen: columns for many records, else exact."""
    if sum(run.records for run in runs) < COLUMNAR_MIN_RECORDS:
        return _exact(runs, layouts)
    try:
        return _columnar(runs, layouts)
    except ParseError:
        return _exact(runs, layouts)  # raises the first bad record's error, as one by one


def _exact(runs: Sequence[Run], layouts: Layouts) -> list[ServiceFields]:
    out: list[ServiceFields] = []
    for run in runs:
        for offset in run.offsets():
            message = run.datagram[offset : offset + run.length]
            out.append(_decode_one(message, len(out) + 1, layouts))
    return out


def _decode_one(message: bytes, index: int, layouts: Layouts | None) -> ServiceFields:
    nest = ipvs.top_level(message[RECORD_START:], CmdAttr.SERVICE, index=index)
    return ServiceFields.of(ipvs.decode_service(nest, index=index, layouts=layouts))


def _columnar(runs: Sequence[Run], layouts: Layouts) -> list[ServiceFields]:
    """Runs grouped by message length, each group decoded column-wise, the services then
    put back in arrival order."""
    groups: dict[int, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.length, []).append(run)
    decoded = {length: _group(group, layouts) for length, group in groups.items()}
    out: list[ServiceFields] = []
    used = dict.fromkeys(groups, 0)
    for run in runs:
        first = used[run.length]
        used[run.length] += run.records
        out += decoded[run.length][first : first + run.records]
    return out


def _group(runs: list[Run], layouts: Layouts) -> list[ServiceFields]:
    """The services of the records of one message length. The first record not decoded yet
    is decoded exactly (a valid record: it raises if not), its layout learned and the
    records of that layout filled in; again for the next one (schedulers' names of another
    length, say), up to MAX_LAYOUTS times; the rest exactly."""
    buf, stride, rows = joined(runs)
    length = runs[0].length
    out: list[ServiceFields | None] = [None] * rows
    left = list(range(rows))  # the rows not decoded yet, in order
    for _ in range(MAX_LAYOUTS):
        if not left:
            break
        first = left[0]
        message = buf[first * stride : first * stride + length]
        out[first] = _decode_one(message, first + 1, None)
        layout = _learn(message)
        done = {first}
        if layout is not None:  # its rows, the first one too (the same again, in bulk)
            differ = header_flags(buf, stride, message, layout.headers).to_bytes(rows, "little")
            done.update(_fill(out, buf, stride, layout, [row for row in left if not differ[row]]))
        left = [row for row in left if row not in done]
    for place in left:
        offset = place * stride
        out[place] = _decode_one(buf[offset : offset + length], place + 1, layouts)
    return out  # type: ignore[return-value]  # every place filled


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where one record's attribute headers and values are, as byte offsets in its message."""

    headers: list[int]
    values: dict[int, tuple[int, int]]  # SERVICE attribute type -> (offset, size)
    stats: tuple[tuple[int, int], ...] | None  # the ten values of the nest read, in order
    stats_wide: bool


def _learn(message: bytes) -> _Layout | None:
    """The layout of a SERVICE record message: its attribute headers (top level, the
    SERVICE nest, its stats nests) and where the values the exact decoder reads are (the
    last of duplicates counts, as in a walk). None when a value `_fill` reads is missing
    or not of its codec's size (the records are then decoded exactly, which says so)."""
    headers: list[int] = []
    values = record_values(message, CmdAttr.SERVICE, headers)
    if values is None:
        return None
    stats = None
    wide = SvcAttr.STATS64 in values
    nest = values.get(SvcAttr.STATS64 if wide else SvcAttr.STATS)
    if nest is not None:
        inner = walk_offsets(message, nest[0], nest[0] + nest[1], headers)
        if inner is None:
            return None
        sizes = [8 if wide else STATS32_CODECS[attr].size for attr in _STATS_ORDER]
        places = [inner.get(attr) for attr in _STATS_ORDER]
        if any(p is None or p[1] != n for p, n in zip(places, sizes, strict=True)):
            return None
        stats = tuple(p for p in places if p is not None)
    for attr, codec in SVC_CODECS.items():
        if attr in values and values[attr][1] != codec.size:
            return None
    if values.get(SvcAttr.FLAGS, (0, 0))[1] != FLAGS.size or SvcAttr.SCHED_NAME not in values:
        return None
    if SvcAttr.FWMARK not in values and values.get(SvcAttr.ADDR, (0, 0))[1] != ADDR_LEN:
        return None
    return _Layout(headers, values, stats, wide)


def _fill(
    out: list[ServiceFields | None], buf: bytes, stride: int, layout: _Layout, rows: list[int]
) -> list[int]:
    """The services of those `rows` (all of the layout) whose values the exact decoder takes
    as they are; the rows filled."""
    taken = _taken(_records_at(buf, stride, rows), stride, layout, rows)
    if not taken:
        return taken
    buf = _records_at(buf, stride, taken)
    values = layout.values
    count = len(taken)

    def ints(attr: SvcAttr) -> list[int]:
        place = values.get(attr)
        if place is None:
            return [0] * count
        return column(buf, stride, place[0], SVC_CODECS[attr], "Q").tolist()

    families = ints(SvcAttr.AF)
    family_of = list(map(_FAMILIES.__getitem__, families))
    addr_at = values.get(SvcAttr.ADDR, (0, 0))[0]
    addresses = address_objects(family_of, address_numbers(buf, stride, addr_at, bytes(families)))
    texts = _strings(buf, stride, values, SvcAttr.SCHED_NAME, count) or []  # _learn: one
    pe_names = _strings(buf, stride, values, SvcAttr.PE_NAME, count)
    fwmark_of, protocol_of, port_of = map(ints, (SvcAttr.FWMARK, SvcAttr.PROTOCOL, SvcAttr.PORT))
    keys = frozen_records(
        ServiceKey,
        {  # an fwmark service's key has no protocol, address or port (as decode_service)
            "family": family_of,
            "protocol": [
                None if m else _PROTOCOLS[p] for m, p in zip(fwmark_of, protocol_of, strict=True)
            ],
            "address": [None if m else a for m, a in zip(fwmark_of, addresses, strict=True)],
            "port": [0 if m else p for m, p in zip(fwmark_of, port_of, strict=True)],
            "fwmark": fwmark_of,
        },
        count,
    )
    flag_of = column(buf, stride, values[SvcAttr.FLAGS][0], U32, "Q").tolist()
    service_flags = {value: ServiceFlag(value) for value in set(flag_of)}
    persistence = _persistence(buf, stride, layout, flag_of, family_of)
    counts, rates = _stats(buf, stride, layout) or (repeat(None), repeat(None))
    each = zip(
        keys,
        texts,
        map(service_flags.__getitem__, flag_of),
        map(persistence.get, range(count)),
        counts,
        rates,
        pe_names if pe_names is not None else repeat(None),
        strict=False,  # the repeats are endless
    )
    made = map(_fields_of, repeat(ServiceFields), each)
    for row, fields in zip(taken, made, strict=True):
        out[row] = fields
    return taken


def _taken(buf: bytes, stride: int, layout: _Layout, rows: list[int]) -> list[int]:
    """Those of `rows` (their records in `buf`, in order) whose values the exact decoder
    takes as they are: a known family and protocol (or an fwmark), and persistent ones only
    where the layout has TIMEOUT and NETMASK (the others are left to it, to say what is
    wrong)."""
    values = layout.values

    def ints(attr: SvcAttr) -> list[int] | None:
        place = values.get(attr)
        if place is None:
            return None
        return column(buf, stride, place[0], SVC_CODECS[attr], "Q").tolist()

    families = ints(SvcAttr.AF)
    if families is None:
        return []
    flags = column(buf, stride, values[SvcAttr.FLAGS][0], U32, "Q").tolist()
    fwmarks = ints(SvcAttr.FWMARK) or repeat(0)
    protocols = ints(SvcAttr.PROTOCOL)
    keyed = protocols is not None and SvcAttr.PORT in values and SvcAttr.ADDR in values
    persistence_known = SvcAttr.TIMEOUT in values and SvcAttr.NETMASK in values
    persistent = int(ServiceFlag.PERSISTENT)
    return [
        row
        for row, family, flag, fwmark, protocol in zip(
            rows, families, flags, fwmarks, protocols or repeat(None), strict=False
        )
        if family in _FAMILIES
        and (persistence_known or not flag & persistent)
        and (fwmark != 0 or (keyed and protocol in _PROTOCOLS))
    ]


def _records_at(buf: bytes, stride: int, rows: list[int]) -> bytes:
    """The records at `rows` (ascending) in one buffer, rows that follow on cut as one."""
    if len(rows) == len(buf) // stride:  # all of them
        return buf
    parts = []
    start = end = 0
    for row in rows:
        if row != end:
            parts.append(buf[start * stride : end * stride])
            start = row
        end = row + 1
    parts.append(buf[start * stride : end * stride])
    return b"".join(parts)


# ServiceFields from a tuple of all its fields in order, made in C (a NamedTuple's own
# __new__ runs Python code: a tenth of a columnar service's decode).
_fields_of = cast("Callable[[type[ServiceFields], Iterable[object]], ServiceFields]", tuple.__new__)


def _persistence(
    buf: bytes, stride: int, layout: _Layout, flag_of: list[int], family_of: list[Family]
) -> dict[int, Persistence]:
    """The persistence of the persistent records, by their row in `buf` (a few: each read
    as the exact decoder reads it)."""
    persistent = int(ServiceFlag.PERSISTENT)
    places = [row for row, flags in enumerate(flag_of) if flags & persistent]
    if not places:
        return {}
    timeout_at = layout.values[SvcAttr.TIMEOUT][0]
    netmask_at, netmask_size = layout.values[SvcAttr.NETMASK]
    timeout = SVC_CODECS[SvcAttr.TIMEOUT].packer
    assert timeout is not None  # an integer codec
    out = {}
    for place in places:
        at = place * stride
        netmask = buf[at + netmask_at : at + netmask_at + netmask_size]
        where = Where("genl IPVS service", place + 1)
        prefix = ipvs.decode_netmask(netmask, family_of[place], where)
        out[place] = Persistence(timeout.unpack_from(buf, at + timeout_at)[0], None, prefix)
    return out


def _strings(
    buf: bytes, stride: int, values: dict[int, tuple[int, int]], attr: SvcAttr, rows: int
) -> list[str] | None:
    """A string attribute of each of the `rows` records, decoded as the exact decoder does
    (each distinct value once; one without its NUL raises its ParseError)."""
    place = values.get(attr)
    if place is None:
        return None
    offset, size = place
    where = Where(f"genl IPVS service {attr.name}")
    raws = [buf[row * stride + offset : row * stride + offset + size] for row in range(rows)]
    texts = {raw: STRING.decode(raw, where, attr.name) for raw in set(raws)}
    return [texts[raw] for raw in raws]


def _stats(
    buf: bytes, stride: int, layout: _Layout
) -> tuple[tuple[Stats, ...], tuple[Rates, ...]] | None:
    """Stats and Rates of each record from the stats nest the exact decoder reads."""
    if layout.stats is None:
        return None
    columns = [
        column(
            buf, stride, offset, U64 if layout.stats_wide else STATS32_CODECS[attr], "Q"
        ).tolist()
        for attr, (offset, _size) in zip(_STATS_ORDER, layout.stats, strict=True)
    ]
    count = len(buf) // stride
    return (
        frozen_records(Stats, dict(zip(STAT_FIELDS, columns[:5], strict=True)), count),
        frozen_records(Rates, dict(zip(RATE_FIELDS, columns[5:], strict=True)), count),
    )
