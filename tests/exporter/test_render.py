"""The hand-written text renderer reads back, through prometheus-client's own parser, exactly as
prometheus-client's generic exposition of the same families does."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from lvsprobe.exporter.metrics import SPECS, MetricSpec, MetricType
from lvsprobe.exporter.render import (
    CHUNK_SAMPLES,
    Builder,
    Family,
    escape_help,
    escape_label_value,
    format_value,
    render,
    render_chunks,
    value_bytes,
    value_texts,
)
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.model import IPAddress, Snapshot, address_number, address_texts

BUILD = ("0.1.0", "3.11.0")


def _families(snap: Snapshot, **opts: object) -> dict[str, Family]:
    """Run the collectors and keep the families (render's input)."""
    scraper = Scraper(ExportOptions(**opts), read=lambda t, **kw: snap, build=BUILD)  # type: ignore[arg-type]
    return {fam.spec.name: fam for fam in scraper.collect()}


def _parse_labels(block: str) -> dict[str, str]:
    text = f"x{block} 1\n"
    (fam,) = text_string_to_metric_families(text)
    return dict(fam.samples[0].labels)


class _Static:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def _client_exposition(families: dict[str, Family]) -> bytes:
    """The same families through prometheus-client's generic path."""
    metrics: list[Metric] = []
    for fam in families.values():
        if not fam.samples:
            continue
        spec = fam.spec
        labels = [*(_parse_labels(fam.samples[0][0]).keys())]
        name = spec.name.removesuffix("_total") if spec.type is MetricType.COUNTER else spec.name
        cls = CounterMetricFamily if spec.type is MetricType.COUNTER else GaugeMetricFamily
        metric = cls(name, spec.help, labels=labels)
        for block, value in fam.samples:
            parsed = _parse_labels(block)
            metric.add_metric([parsed[k] for k in labels], value)
        metrics.append(metric)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(metrics))  # type: ignore[arg-type]
    return generate_latest(registry)


def _normalise(
    text: str,
) -> dict[str, tuple[str, str, set[tuple[tuple[tuple[str, str], ...], float]]]]:
    out = {}
    for fam in text_string_to_metric_families(text):
        samples = {
            (tuple(sorted(s.labels.items())), s.value)
            for s in fam.samples
            if not s.name.endswith("_created")
        }
        out[fam.name] = (fam.type, fam.documentation, samples)
    return out


def test_same_as_prometheus_client(make_snapshot: Callable[..., Snapshot]) -> None:
    families = _families(make_snapshot(), compat_node_exporter=True, conns="per-real-server")
    theirs = _client_exposition(families).decode()
    ours = render(families.values()).decode()  # frees the samples it sends
    assert _normalise(ours) == _normalise(theirs)
    assert len(_normalise(ours)) > 40


def test_every_family_matches_its_spec(make_snapshot: Callable[..., Snapshot]) -> None:
    specs = {spec.name: spec for spec in SPECS}
    families = _families(make_snapshot(), conns="per-real-server")
    with_samples = len([f for f in families.values() if f.samples])
    seen = 0
    for fam in text_string_to_metric_families(render(families.values()).decode()):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        spec = specs[name]
        assert fam.type == spec.type.value
        assert fam.documentation == spec.help
        for sample in fam.samples:
            assert tuple(sample.labels) == spec.labels, name
        seen += 1
    assert seen == with_samples


def test_escaping() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_label_value("plain") == "plain"
    assert escape_help("a\\b\nc") == "a\\\\b\\nc"
    assert format_value(3) == "3"
    assert format_value(2**64 - 1) == "18446744073709551615"
    assert format_value(float("inf")) == "+Inf"
    assert format_value(float("-inf")) == "-Inf"
    assert format_value(float("nan")) == "NaN"
    assert format_value(0.25) == "0.25"


@given(
    value=st.text(min_size=0, max_size=40),
    number=st.one_of(st.integers(-(2**63), 2**64), st.floats()),
)
def test_any_label_value_reads_back(value: str, number: int | float) -> None:
    spec = MetricSpec(
        "ipvs_test", 'help with \\ and "quotes"\nand lines', MetricType.GAUGE, ("name",), "x"
    )
    out = Builder([spec])
    out.add_labeled("ipvs_test", (value,), number)
    (fam,) = text_string_to_metric_families(render(out.families.values()).decode())
    assert fam.documentation == spec.help
    assert fam.samples[0].labels == {"name": value}
    got = fam.samples[0].value
    if isinstance(number, float) and number != number:
        assert got != got
    else:
        assert got == pytest.approx(float(number), rel=1e-15)


def test_netns_prefix_comes_first() -> None:
    spec = MetricSpec("ipvs_x", "x", MetricType.GAUGE, ("a",), "x")
    out = Builder([spec])
    out.prefix = 'netns="blue"'
    out.add_labeled("ipvs_x", ("1",), 1)
    out.add("ipvs_x", out.block(""), 2)
    assert render(out.families.values()).decode().splitlines()[2:] == [
        'ipvs_x{netns="blue",a="1"} 1',
        'ipvs_x{netns="blue"} 2',
    ]


def test_large_family_is_chunked_without_changing_the_text() -> None:
    spec = MetricSpec("ipvs_big", "big", MetricType.GAUGE, ("i",), "x")
    out = Builder([spec])
    for i in range(20_000):
        out.add_labeled("ipvs_big", (str(i),), i if i % 2 else i / 4)
    chunks = list(render_chunks(out.families.values()))
    assert len(chunks) == 1 + -(-20_000 // CHUNK_SAMPLES)  # HELP/TYPE, then the chunks
    (fam,) = text_string_to_metric_families(b"".join(chunks).decode())
    assert [s.value for s in fam.samples] == [i if i % 2 else i / 4 for i in range(20_000)]


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=64), st.booleans())
@settings(max_examples=30, deadline=None)
def test_address_texts_are_what_str_gives(numbers: list[int], with_v6: bool) -> None:
    """Big lists of IPv4 addresses go to text by numpy (every octet value 0-255 among them
    here); a list with an IPv6 address one by one."""
    octets = [octet * 0x01010101 for octet in range(256)]
    addresses: list[IPAddress] = [IPv4Address(n) for n in (numbers + octets) * 16]
    assert len(addresses) >= 4096
    if with_v6:
        addresses.append(IPv6Address("2001:db8::1"))
    families, numbers = zip(*map(address_number, addresses), strict=True)
    assert address_texts(families, numbers) == [str(a) for a in addresses]


def test_rows_share_their_lists_and_render_as_whole_lines() -> None:
    """Families of `Builder.add_rows` keep the lists they are given (no copy): a block is a
    head and a tail ending in the space before the value; samples give the block without
    it, and the text has one space."""
    weight, active = (
        spec
        for spec in SPECS
        if spec.name in ("ipvs_backend_weight", "ipvs_backend_active_connections")
    )
    out = Builder([weight, active])
    heads, tails = [b'{a="1",b="', b'{a="1",b="'], [b'x"} ', b'y"} ']
    weights, actives = [1, 2], [3, 4.5]
    out.add_rows([weight.name, active.name], heads, tails, (weights, actives))
    assert out.families[weight.name].rows[0].values is weights
    with pytest.raises(ValueError, match="has rows"):
        out.add(weight.name, "", 1)
    assert out.families[active.name].samples == [('{a="1",b="x"}', 3), ('{a="1",b="y"}', 4.5)]
    text = render(out.families.values()).decode()
    assert 'ipvs_backend_weight{a="1",b="y"} 2\n' in text
    assert 'ipvs_backend_active_connections{a="1",b="y"} 4.5\n' in text
    assert (weights, actives, tails) == ([1, 2], [3, 4.5], [b'x"} ', b'y"} '])  # unchanged
    other = Builder([weight, active])
    other.add(weight.name, "", 1)
    with pytest.raises(ValueError, match="has samples of its own"):
        other.add_rows([weight.name], heads, tails, (weights,))
    with pytest.raises(ValueError, match="2 label blocks, 1 values"):
        Builder([weight]).add_rows([weight.name], heads, tails, ([1],))


@given(
    st.lists(
        st.one_of(
            st.integers(-5, 5),
            st.integers(4090, 4100),
            st.integers(0, 2**64 - 1),
            st.floats(),
        ),
        max_size=30,
    )
)
def test_value_texts_write_each_value_as_format_value_does(values: list[int | float]) -> None:
    """Small counts from the table, the rest in C, a float among them value by value:
    negative numbers and the table's end included; the rows' bytes are the same texts."""
    assert value_texts(values) == list(map(format_value, values))
    assert value_bytes(values) == [format_value(value).encode() for value in values]
