"""The Prometheus text exposition formats (0.0.4 and OpenMetrics), written for 10^6 series.

prometheus-client's generic path builds one Sample object and one label dict per series; for a
kube-proxy node (300k series) that dominates the scrape. Here a collector renders the label
block of a service or real server once (`{protocol="tcp",…}`) and reuses it in every family,
and a family is two parallel lists, label blocks and values (no object per sample). Families
with a row per real server (`Builder.add_rows`) copy nothing: they share the rows' label
blocks, each a head (its service's labels) and a tail (its own), and read their values from
the model's columns themselves, so a scrape holds no second copy of a table. The tests prove
the output equal to what prometheus-client's own parsers read, in both formats.

Why not prometheus-client's `generate_latest`: one gauge family of 300k real servers (a
kube-proxy node) took it about 5x as long as `render` here (7x with its OpenMetrics writer),
both counting the building of their objects from the same label tuples; `python -m bench
export` measures the whole scrape.

OpenMetrics differs in three places only: a counter's family (HELP and TYPE lines) is named
without `_total` while its samples keep it, HELP escapes double quotes too, and the text ends
with `# EOF`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import AnyStr, TypeVar, cast

from lvsprobe.exporter.metrics import MetricSpec, MetricType


class ExpositionFormat(enum.Enum):
    """A text format /metrics speaks; the value is its Content-Type."""

    CLASSIC = "text/plain; version=0.0.4; charset=utf-8"
    OPENMETRICS_1_0_0 = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    OPENMETRICS_0_0_1 = "application/openmetrics-text; version=0.0.1; charset=utf-8"

    @property
    def openmetrics(self) -> bool:
        return self is not ExpositionFormat.CLASSIC


CONTENT_TYPE = ExpositionFormat.CLASSIC.value
# Lines rendered per chunk: ~300 KB of text (and as much again encoded), so a scrape never
# holds a family's text whole. Chunks four times bigger held four times the memory and were
# no faster (render and gzip of 10^5 real servers' families).
CHUNK_SAMPLES = 2048

Value = int | float
T = TypeVar("T")


def escape_label_value(value: str) -> str:
    """Backslash, double quote and line feed are the three escapes a label value has."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str, openmetrics: bool = False) -> str:
    """HELP text escapes backslash and line feed, and in OpenMetrics double quotes too."""
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics else text


def _header(spec: MetricSpec, openmetrics: bool) -> tuple[str, bytes]:
    """(the name of the samples, the HELP and TYPE lines) of a family."""
    name = spec.name
    family = name
    if openmetrics and spec.type is MetricType.COUNTER:
        family = name.removesuffix("_total")
        name = family + "_total"
    help_text = escape_help(spec.help, openmetrics)
    return name, f"# HELP {family} {help_text}\n# TYPE {family} {spec.type.value}\n".encode()


def label_pairs(names: Sequence[str], values: Sequence[str]) -> str:
    """`a="x",b="y"`: the inside of a label block, for building bigger blocks from smaller."""
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))


def format_value(value: Value) -> str:
    """Integers exactly (u64 counters keep every digit); floats in Go's spelling of specials."""
    if type(value) is int:
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


@dataclass(frozen=True, slots=True)
class Rows:
    """Samples of a family, one per row: row i's label block is `heads[i] + tails[i]` (a
    tail ends in the space before the value) and its value `values[i]`. The lists are
    shared (with other families, the model's table, the label cache): never changed.

    Heads and tails are UTF-8 already (tails are kept from one scrape to the next), so the
    rows' text is joined as bytes: encoding it was a second copy of most of the body (in the
    lab, 0.42 s to encode the 31 MB of a ~1.8 s scrape at 20k real servers: copies are slow
    under emulation)."""

    heads: list[bytes]
    tails: list[bytes]
    values: list[Value]


class Family:
    """One metric family: its spec and samples in insertion order, as parallel lists of
    label blocks and values (no object per sample), or as `Rows` (a sample per real server,
    one `Rows` per namespace) that share their lists with other families.
    """

    __slots__ = ("blocks", "rows", "spec", "values")

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self.blocks: list[str] = []
        self.values: list[Value] = []
        self.rows: list[Rows] = []

    @property
    def samples(self) -> list[tuple[str, Value]]:
        """(label block, value) pairs (tests; rendering walks the lists)."""
        pairs = list(zip(self.blocks, self.values, strict=True))
        for rows in self.rows:
            heads_and_tails = zip(rows.heads, rows.tails, strict=True)
            blocks = [(head + tail[:-1]).decode() for head, tail in heads_and_tails]
            pairs += zip(blocks, rows.values, strict=True)
        return pairs


class Builder:
    """Families of one scrape, in a fixed order, across one or more namespaces.

    `prefix` is the label pairs every series of the namespace being collected gets (the
    `netns` label when several are read), put first in each block.
    """

    def __init__(self, specs: Iterable[MetricSpec]) -> None:
        self.families: dict[str, Family] = {spec.name: Family(spec) for spec in specs}
        self.prefix = ""

    def add_specs(self, specs: Iterable[MetricSpec]) -> None:
        for spec in specs:
            self.families.setdefault(spec.name, Family(spec))

    def block(self, pairs: str) -> str:
        """The `{…}` label block for inner pairs, with the namespace prefix."""
        if self.prefix and pairs:
            return "{" + self.prefix + "," + pairs + "}"
        if self.prefix or pairs:
            return "{" + (self.prefix or pairs) + "}"
        return ""

    def add(self, name: str, block: str, value: Value) -> None:
        """Add a sample whose block came from `block()` (the common, fast path)."""
        fam = self._own(name)
        fam.blocks.append(block)
        fam.values.append(value)

    def extend(self, name: str, blocks: Iterable[str], values: Iterable[Value]) -> None:
        """Add samples whose blocks came from `block()`, in bulk."""
        fam = self._own(name)
        fam.blocks.extend(blocks)
        fam.values.extend(values)

    def _own(self, name: str) -> Family:
        fam = self.families[name]
        if fam.rows:
            raise ValueError(f"{name} has rows: its samples come from add_rows only")
        return fam

    def add_labeled(self, name: str, values: Sequence[str], value: Value) -> None:
        """Add a sample given its label values in the order the spec lists them."""
        fam = self.families[name]
        self.add(name, self.block(label_pairs(fam.spec.labels, values)), value)

    def add_rows(
        self,
        names: Sequence[str],
        heads: list[bytes],
        tails: list[bytes],
        columns: Sequence[Sequence[Value]],
    ) -> None:
        """A sample per row in each family of `names`, its values the column of the same
        place in `columns`; row i's block is `heads[i] + tails[i]` (UTF-8), a tail ending in
        the space before the value (`{a="x",` and `b="y"} `). Nothing is copied: the lists
        are kept as they are, and must never change."""
        if len(heads) != len(tails):
            raise ValueError(f"{len(heads)} label heads, {len(tails)} tails")
        for name, column in zip(names, columns, strict=True):
            fam = self.families[name]
            if fam.blocks:
                raise ValueError(f"{name} has samples of its own")
            if len(column) != len(tails):
                raise ValueError(f"{name}: {len(tails)} label blocks, {len(column)} values")
            fam.rows.append(Rows(heads, tails, cast(list[Value], column)))


def render_chunks(
    families: Iterable[Family], fmt: ExpositionFormat = ExpositionFormat.CLASSIC
) -> Iterator[bytes]:
    """The exposition text one family at a time; each family's samples are freed once sent.

    HELP and TYPE come once per family; families without samples are left out. Text is encoded
    in chunks of CHUNK_SAMPLES lines, so one non-ASCII label value widens one chunk's string,
    not the body, and a scrape holds a chunk of text at a time rather than the whole body.
    """
    for fam in families:
        blocks, values, all_rows = fam.blocks, fam.values, fam.rows
        fam.blocks, fam.values, fam.rows = [], [], []
        if not values and not any(rows.values for rows in all_rows):
            continue
        name, header = _header(fam.spec, fmt.openmetrics)
        yield header
        for start in range(0, len(values), CHUNK_SAMPLES):
            stop = start + CHUNK_SAMPLES
            chunk = values[start:stop]
            blocks_and_spaces = (blocks[start:stop], [" "] * len(chunk))
            yield _lines(name, blocks_and_spaces, value_texts(chunk), "\n").encode()
        name_utf8 = name.encode()
        while all_rows:  # each Rows let go once written (its columns may be its own)
            rows = all_rows.pop(0)
            for start in range(0, len(rows.values), CHUNK_SAMPLES):
                stop = start + CHUNK_SAMPLES
                pieces = (rows.heads[start:stop], rows.tails[start:stop])
                texts = value_bytes(rows.values[start:stop])
                yield _lines(name_utf8, pieces, texts, b"\n")
    if fmt.openmetrics:
        yield b"# EOF\n"


def _lines(
    name: AnyStr, blocks: tuple[list[AnyStr], ...], texts: list[AnyStr], newline: AnyStr
) -> AnyStr:
    """The lines of samples of the family `name`, joined from a list of their pieces that is
    filled column by column (slice assignment, in C): no Python code runs per line.

    The pieces are the name, then per sample the pieces of its label block and the space
    before the value (each a list with a piece per sample: block and space, or head and
    tail), its value's text, and a newline and the name of the next (the last has a newline
    only). All are text, or all UTF-8 bytes.
    """
    count = len(texts)
    for block in blocks:
        if len(block) != count:
            raise ValueError(f"{name!r}: {len(block)} label blocks, {count} values")
    width = len(blocks) + 2
    pieces = [newline + name] * (1 + width * count)
    pieces[0] = name
    for place, block in enumerate(blocks, start=1):
        pieces[place::width] = block
    pieces[width - 1 :: width] = texts
    pieces[-1] = newline
    return newline[:0].join(pieces)


def value_texts(values: list[Value]) -> list[str]:
    """Sample values as text: integers (u64 counters) exactly, floats as `format_value`.

    Small counts (most of a kube-proxy node's: weights, connections, thresholds) are looked up
    in a table of decimal texts, the rest made by `int.__repr__` over the list in C. Both
    refuse a float (TypeError), which sends the list value by value to `format_value`. An int
    subclass (bool) is written as an integer.
    """
    return _from_table(values, _DECIMALS) or _texts(values)


def value_bytes(values: list[Value]) -> list[bytes]:
    """`value_texts` as ASCII bytes: small counts from a table of their bytes, the rest
    written as text, encoded in one go and split (C-level passes over the values' text)."""
    if not values:
        return []
    return _from_table(values, _DECIMAL_BYTES) or " ".join(_texts(values)).encode().split(b" ")


def _from_table(values: list[Value], table: tuple[T, ...]) -> list[T] | None:
    """Each value's entry in a table of the small counts; None when one is past it (or
    negative: an index would read the table from its end) or a float."""
    if not values or min(values) < 0:
        return None
    try:
        return [table[value] for value in cast(list[int], values)]
    except (IndexError, TypeError):
        return None


def _texts(values: list[Value]) -> list[str]:
    """Values as text one by one: `int.__repr__` over the list in C, or `format_value` for
    each value once a float is among them."""
    try:
        return list(map(int.__repr__, values))
    except TypeError:
        return [
            int.__repr__(value) if isinstance(value, int) else format_value(value)
            for value in values
        ]


# The decimal texts of the small values most samples have (a constant, ~200 KB).
_DECIMALS = tuple(map(str, range(4096)))
_DECIMAL_BYTES = tuple(text.encode() for text in _DECIMALS)


def render(families: Iterable[Family], fmt: ExpositionFormat = ExpositionFormat.CLASSIC) -> bytes:
    """The whole exposition text (tests, --once)."""
    return b"".join(render_chunks(families, fmt))
