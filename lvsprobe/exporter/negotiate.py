"""HTTP content negotiation for /metrics: `Accept` picks the text format, `Accept-Encoding` gzip.

As Prometheus's client libraries do: the media ranges are tried by descending q (ties in the
order sent), and the first one this exporter can serve wins; OpenMetrics when the client asks
for version 1.0.0 or 0.0.1 (or names no version), the classic text format for `text/plain`
(version 0.0.4 or none) and wildcards. Anything else (protobuf, other versions) is passed over,
and with nothing servable the classic format is the answer, never a 406: a scraper that sends
an odd header still gets metrics. Garbage in a header is skipped, never an error.
"""

from __future__ import annotations

from lvsprobe.exporter.render import ExpositionFormat

_OPENMETRICS_VERSIONS = {
    None: ExpositionFormat.OPENMETRICS_1_0_0,
    "1.0.0": ExpositionFormat.OPENMETRICS_1_0_0,
    "0.0.1": ExpositionFormat.OPENMETRICS_0_0_1,
}


def _q(text: str) -> float:
    """A q value (0 to 1); anything unreadable counts as 0 (not acceptable)."""
    try:
        q = float(text)
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0


def _ranges(header: str) -> list[tuple[float, str, dict[str, str]]]:
    """(q, lower-cased range, parameters other than q) of each item, best first, ties in order."""
    ranked: list[tuple[float, int, str, dict[str, str]]] = []
    for index, item in enumerate(header.split(",")):
        name, *param_texts = (part.strip() for part in item.split(";"))
        if not name:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for text in param_texts:
            key, _, value = text.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "q":
                q = _q(value)
            elif key:
                params[key] = value
        ranked.append((-q, index, name.lower(), params))
    ranked.sort(key=lambda entry: (entry[0], entry[1]))
    return [(-neg_q, name, params) for neg_q, _, name, params in ranked]


def parse_accept(header: str) -> list[tuple[str, dict[str, str]]]:
    """Media ranges of an `Accept` header that the client accepts (q above 0), best first:
    each is the lower-cased range (`text/plain`) and its parameters other than q."""
    return [(name, params) for q, name, params in _ranges(header) if q > 0]


def negotiate_format(accept: str | None) -> ExpositionFormat:
    """The exposition format to answer an `Accept` header with."""
    for media, params in parse_accept(accept or ""):
        version = params.get("version")
        if media == "application/openmetrics-text" and version in _OPENMETRICS_VERSIONS:
            return _OPENMETRICS_VERSIONS[version]
        if media == "text/plain" and version in (None, "0.0.4"):
            return ExpositionFormat.CLASSIC
        if media in ("*/*", "text/*"):
            return ExpositionFormat.CLASSIC
    return ExpositionFormat.CLASSIC


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when `Accept-Encoding` allows gzip: by name with q above 0, else by `*`."""
    ranges = _ranges(accept_encoding or "")
    named = [q for q, coding, _ in ranges if coding in ("gzip", "x-gzip")]
    if named:
        return max(named) > 0
    return any(q > 0 for q, coding, _ in ranges if coding == "*")
