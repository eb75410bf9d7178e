"""Read the PromQL in generated dashboards: every query, the metrics and labels it names, and
Grafana's variable interpolation (so tests can send the exact query Grafana would).

The tokenizer knows enough PromQL to tell metric names from functions, keywords and label
names; the Prometheus server itself is the parser of record (see the proof tests).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from lvsprobe.exporter.metrics import NETNS_LABEL, SERVICE_LABELS, SPECS
from lvsprobe.replay.metricspecs import catalog as replay_catalog

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
    |(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<var>\$\{[^}]*\}|\$\w+|\[\[\w+(?::\w+)?\]\])
    |(?P<range>\[[^\]]*\])
    |(?P<duration>(?:[0-9]+(?:ms|s|m|h|d|w|y))+(?![a-zA-Z0-9_:]))
    |(?P<number>0x[0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
    |(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
    |(?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>(){},])
    """,
    re.VERBOSE,
)

GROUPING = frozenset(("by", "without", "on", "ignoring", "group_left", "group_right"))
KEYWORDS = GROUPING | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile"}
)


class PromQLSyntaxError(ValueError):
    """The expression is not something this tokenizer can read."""


@dataclass(frozen=True, slots=True)
class Selector:
    """`metric{label=…, …}`: the metric name and the label names its matchers use."""

    metric: str
    labels: tuple[str, ...]
    placeholders: tuple[str, ...] = ()  # variables spliced into the matcher list


@dataclass(slots=True)
class Names:
    """Metric selectors and grouping labels (by/without/on/ignoring/group_*) of one expression."""

    selectors: list[Selector] = field(default_factory=list)
    grouping_labels: set[str] = field(default_factory=set)

    @property
    def metrics(self) -> set[str]:
        return {s.metric for s in self.selectors}


def tokenize(expr: str) -> list[tuple[str, str]]:
    """(kind, text) tokens without whitespace; PromQLSyntaxError on anything unrecognised."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise PromQLSyntaxError(f"cannot read {expr[pos : pos + 20]!r} at offset {pos}")
        kind = m.lastgroup or ""
        if kind != "ws":
            tokens.append((kind, m.group()))
        pos = m.end()
    return tokens


def _matchers(tokens: list[tuple[str, str]], i: int) -> tuple[list[str], list[str], int]:
    """Label names and variables inside `{…}` starting at tokens[i] == '{'; index after '}'."""
    labels: list[str] = []
    placeholders: list[str] = []
    i += 1
    while i < len(tokens) and tokens[i] != ("op", "}"):
        kind, text = tokens[i]
        if kind == "ident" and i + 1 < len(tokens) and tokens[i + 1][1] in ("=", "!=", "=~", "!~"):
            labels.append(text)
        elif kind == "var":
            placeholders.append(text)
        i += 1
    if i >= len(tokens):
        raise PromQLSyntaxError("unclosed '{'")
    return labels, placeholders, i + 1


def names(expr: str) -> Names:
    """The metrics, matcher labels and grouping labels `expr` uses."""
    tokens = tokenize(expr)
    out = Names()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ("", "")
        if kind == "ident" and text in GROUPING:
            i += 1
            if i < len(tokens) and tokens[i] == ("op", "("):
                i += 1
                while i < len(tokens) and tokens[i] != ("op", ")"):
                    if tokens[i][0] == "ident":
                        out.grouping_labels.add(tokens[i][1])
                    i += 1
                i += 1
            continue
        if (
            kind == "ident"
            and text not in KEYWORDS
            and nxt != ("op", "(")
            and not (text in AGGREGATIONS and nxt[1] in ("by", "without"))
        ):
            if nxt == ("op", "{"):
                labels, placeholders, i = _matchers(tokens, i + 1)
                out.selectors.append(Selector(text, tuple(labels), tuple(placeholders)))
            else:
                out.selectors.append(Selector(text, ()))
                i += 1
            continue
        if (kind, text) == ("op", "{"):
            raise PromQLSyntaxError("a selector without a metric name")
        i += 1
    return out


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """One target of one panel of one dashboard."""

    dashboard: str
    panel_id: int
    panel_title: str
    ref_id: str
    expr: str
    instant: bool

    @property
    def where(self) -> str:
        return f"{self.dashboard} #{self.panel_id} {self.panel_title!r} {self.ref_id}"


def panel_queries(dashboard: Mapping[str, Any]) -> Iterator[PanelQuery]:
    """Every Prometheus target of every panel (rows' nested panels included), then every
    annotation query (panel id 0, titled by the annotation's name)."""
    uid = str(dashboard.get("uid", "?"))
    for annotation in (dashboard.get("annotations") or {}).get("list") or []:
        if "expr" in annotation:
            name = f"annotation {annotation.get('name', '')}"
            yield PanelQuery(uid, 0, name, "", str(annotation["expr"]), False)
    stack = list(dashboard.get("panels") or [])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels") or [])
        for target in panel.get("targets") or []:
            if "expr" in target:
                yield PanelQuery(
                    uid,
                    int(panel["id"]),
                    str(panel.get("title", "")),
                    str(target.get("refId", "")),
                    str(target["expr"]),
                    bool(target.get("instant")),
                )


_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<sel>.+),\s*)?(?P<label>\w+)\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^query_result\((?P<expr>.+)\)\s*$", re.S)


def variable_expr(query: str) -> tuple[str, str | None]:
    """(PromQL, label) that a Grafana Prometheus variable query evaluates.

    `label_values(sel, label)` -> (sel, label); `query_result(expr)` -> (expr, None).
    """
    m = _LABEL_VALUES.match(query)
    if m:
        return m.group("sel") or "", m.group("label")
    m = _QUERY_RESULT.match(query)
    if m:
        return m.group("expr"), None
    raise PromQLSyntaxError(f"not a label_values() or query_result() variable query: {query!r}")


def query_result_text(series: Mapping[str, Any]) -> str:
    """How Grafana renders one instant-query series for a query_result() variable."""
    metric = dict(series["metric"])
    name = metric.pop("__name__", "")
    labels = ",".join(f'{k}="{v}"' for k, v in metric.items())
    value = series["value"]
    return f"{name}{{{labels}}} {value[1]} {int(float(value[0]) * 1000)}"


def grafana_regex(pattern: str) -> re.Pattern[str]:
    """A variable's `/…/flags` regex in Python's dialect (named groups `(?P<…>`)."""
    body, _, flags = pattern[1:].rpartition("/")
    py_flags = re.I if "i" in flags else 0
    return re.compile(re.sub(r"\(\?<(\w+)>", r"(?P<\1>", body), py_flags)


_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)|\[\[(\w+)(?::(\w+))?\]\]")
_REGEX_SPECIALS = re.compile(r"[$^*{}\[\]'+?.()|]")


def regex_escape(value: str) -> str:
    """Grafana's escaping of a multi-value/include-all variable inside a PromQL regex string."""
    return _REGEX_SPECIALS.sub(lambda m: "\\\\" + m.group(), value.replace("\\", "\\\\\\\\"))


def interpolate(expr: str, values: Mapping[str, str], *, regex: Collection[str] = ()) -> str:
    """Substitute variables as Grafana does; names in `regex` are regex-escaped unless `:raw`.

    Unknown names (`$1` of label_replace) are left alone, as Grafana leaves them.
    """

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3) or m.group(4)
        fmt = m.group(2) or m.group(5)
        if name not in values:
            return m.group()
        value = values[name]
        if name in regex and fmt != "raw":
            return regex_escape(value)
        return value

    return _VARIABLE.sub(sub, expr)


# Series Prometheus adds to every target itself, and the labels it attaches to each series.
SCRAPE_METRICS: dict[str, tuple[str, ...]] = {"up": (), "scrape_duration_seconds": ()}
TARGET_LABELS = ("instance", "job")


@dataclass(frozen=True, slots=True)
class Catalog:
    """What a query may name: metrics with their labels, labels on every series, and the labels
    a variable spliced into a matcher list stands for."""

    labels_of: Mapping[str, Collection[str]]
    always: Collection[str]
    placeholders: Mapping[str, Collection[str]]


def exporter_catalog() -> Catalog:
    """The exporter's metric table (`lvsprobe.exporter.metrics.SPECS`) plus scrape metrics and
    the live metrics of `replay run --metrics-listen` (the Replay run dashboard's)."""
    labels_of: dict[str, Collection[str]] = {s.name: s.labels for s in SPECS}
    labels_of.update(SCRAPE_METRICS)
    labels_of.update(replay_catalog())
    return Catalog(labels_of, (*TARGET_LABELS, NETNS_LABEL), {"service": SERVICE_LABELS})


_PLACEHOLDER_NAME = re.compile(r"\$\{?(\w+)|\[\[(\w+)")


def problems(expr: str, catalog: Catalog) -> list[str]:
    """What in `expr` the exporter does not export: unknown metrics or labels, one line each."""
    out: list[str] = []
    found = names(expr)
    known_labels: set[str] = set(catalog.always)
    for selector in found.selectors:
        if selector.metric not in catalog.labels_of:
            out.append(f"unknown metric {selector.metric!r}")
            continue
        allowed = set(catalog.labels_of[selector.metric]) | set(catalog.always)
        known_labels |= allowed
        for label in selector.labels:
            if label not in allowed:
                out.append(f"{selector.metric} has no label {label!r}")
        for placeholder in selector.placeholders:
            m = _PLACEHOLDER_NAME.match(placeholder)
            name = (m.group(1) or m.group(2)) if m else ""
            if name not in catalog.placeholders:
                out.append(
                    f"{placeholder} in {selector.metric}{{}} is not a known matcher variable"
                )
                continue
            missing = set(catalog.placeholders[name]) - allowed
            if missing:
                out.append(f"{selector.metric} lacks {sorted(missing)} of {placeholder}")
    for label in sorted(found.grouping_labels - known_labels):
        out.append(f"grouping label {label!r} is on none of the metrics")
    return out
