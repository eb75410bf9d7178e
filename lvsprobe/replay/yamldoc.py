"""Typed reading of a YAML document that remembers the line of every key, so that a
scenario error can say `FILE line N: key.path: what is wrong` (ScenarioError)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from lvsprobe.errors import ScenarioError
from lvsprobe.replay.limits import MAX_NESTING, MAX_RECORDED, MAX_RUN_S, MAX_SCENARIO_BYTES

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")  # no text sent on the wire holds these
KeyPath = tuple[str | int, ...]


# libyaml's event parser when PyYAML was built with it: 4x faster on a recorded scenario
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_ALIASES = (
    "YAML anchors and aliases (&name, *name) are not allowed: a scenario is a plain config "
    "file, write each value out"
)


@dataclass(slots=True)
class _Open:
    """A mapping or list being filled while the events stream by."""

    value: dict[str, Any] | list[Any]
    path: KeyPath
    key: str | None = None  # a mapping's key, read, waiting for its value


class Doc:
    """Plain values from a YAML document, remembering the line of every key path.

    Built from the parser's events in one loop (no recursion, no node tree): an anchor or
    alias is refused (a recursive alias never ends, a few nested ones expand to gigabytes),
    and so is nesting deeper than MAX_NESTING, a list longer than MAX_RECORDED or a text
    longer than MAX_SCENARIO_BYTES: the cost of reading a file is bounded before it is read.
    """

    def __init__(self, source: str, text: str):
        self.source = source
        self.lines: dict[KeyPath, int] = {}
        if len(text) > MAX_SCENARIO_BYTES:
            raise ScenarioError(
                f"{source}: {len(text):,} characters, more than a scenario file may hold "
                f"({MAX_SCENARIO_BYTES:,} bytes)"
            )
        loader: yaml.SafeLoader | None = None
        try:
            loader = _Loader(text)  # may raise: the pure-Python reader checks characters now
            self.root = self._build(loader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            reason = getattr(exc, "problem", None) or str(exc)
            raise ScenarioError(f"{self._where(line)}: not valid YAML: {reason}") from exc
        finally:
            if loader is not None:
                loader.dispose()

    def _where(self, line: int | None) -> str:
        return self.source if line is None else f"{self.source} line {line}"

    def _build(self, loader: yaml.SafeLoader) -> Any:
        stack: list[_Open] = []
        root: list[Any] = []  # the document's value, once read
        documents = 0
        while loader.check_event():
            event = loader.get_event()
            line = event.start_mark.line + 1
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise ScenarioError(f"{self._where(line)}: one YAML document only")
                continue
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                stack.pop()
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue  # stream and document boundaries
            if isinstance(event, yaml.AliasEvent) or event.anchor is not None:
                raise ScenarioError(f"{self._where(line)}: {_ALIASES}")
            parent = stack[-1] if stack else None
            if isinstance(parent, _Open) and isinstance(parent.value, dict) and parent.key is None:
                if not isinstance(event, yaml.ScalarEvent):
                    raise ScenarioError(f"{self._where(line)}: a key must be plain text")
                if event.value in parent.value:
                    raise ScenarioError(f"{self._where(line)}: duplicate key {event.value!r}")
                parent.key = event.value
                continue
            value: Any
            if isinstance(event, yaml.MappingStartEvent):
                value = {}
            elif isinstance(event, yaml.SequenceStartEvent):
                value = []
            elif isinstance(event, yaml.ScalarEvent):
                value = self._scalar(loader, event, line)
            else:
                continue  # no other node events exist
            if parent is None:
                path: KeyPath = ()
                root.append(value)
            elif isinstance(parent.value, dict):
                assert parent.key is not None
                path = (*parent.path, parent.key)
                parent.value[parent.key] = value
                parent.key = None
            else:
                if len(parent.value) >= MAX_RECORDED:  # the longest list a scenario holds
                    where = ".".join(str(p) for p in parent.path)
                    raise ScenarioError(
                        f"{self._where(line)}: {where}: more than {MAX_RECORDED:,} entries"
                    )
                path = (*parent.path, len(parent.value))
                parent.value.append(value)
            self.lines[path] = line
            if isinstance(event, yaml.CollectionStartEvent):
                if len(stack) >= MAX_NESTING:
                    raise ScenarioError(
                        f"{self._where(line)}: nested more than {MAX_NESTING} levels deep"
                    )
                stack.append(_Open(value, path))
        if not root:
            raise ScenarioError(f"{self.source}: empty scenario file")
        return root[0]

    def _scalar(self, loader: yaml.SafeLoader, event: yaml.ScalarEvent, line: int) -> Any:
        """A scalar's value as the safe loader reads it (int, float, bool, text, ...)."""
        tag = event.tag
        if tag is None or tag == "!":
            tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        node = yaml.ScalarNode(tag, event.value, style=event.style)  # marks: we name the line
        try:
            return loader.construct_object(node)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            raise ScenarioError(f"{self._where(line)}: {exc}") from exc

    def error(self, path: KeyPath, reason: str) -> ScenarioError:
        probe = path
        while probe not in self.lines and probe:
            probe = probe[:-1]
        dotted = ".".join(str(p) for p in path) or "(top)"
        return ScenarioError(f"{self._where(self.lines.get(probe))}: {dotted}: {reason}")


class Reader:
    """Typed access to one mapping of the document, with errors naming the line."""

    def __init__(
        self,
        doc: Doc,
        path: KeyPath,
        allowed: tuple[str, ...] | None,
        shape: str = "a mapping",
    ):
        """`allowed`: the keys it may hold (None: any)."""
        self.doc = doc
        self.path = path
        value: Any = doc.root
        for part in path:
            value = value[part]
        if not isinstance(value, dict):
            raise doc.error(path, f"expected {shape}, got {described(value)}")
        self.data: dict[str, Any] = value
        for key in value:
            if allowed is not None and key not in allowed:
                raise doc.error((*path, key), f"unknown key (expected one of {', '.join(allowed)})")

    def err(self, key: str | int, reason: str) -> ScenarioError:
        return self.doc.error((*self.path, key), reason)

    def has(self, key: str) -> bool:
        return key in self.data

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise self.err(key, "required")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.err(key, f"expected text, got {described(value)}")
        return str(value)

    def line(self, key: str, default: str | None = None) -> str:
        """Text sent on the wire (a path, a name): no line breaks or control characters."""
        value = self.text(key, default)
        if CONTROL_CHARS.search(value):
            raise self.err(key, f"{value[:40]!r}: no line breaks or control characters allowed")
        return value

    def integer(self, key: str, default: int | None = None, lo: int = 0, hi: int = 2**31) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise self.err(key, "required")
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.err(key, f"expected an integer, got {described(value)}")
        if not lo <= value <= hi:
            raise self.err(key, f"{value:,} is out of range {lo:,}..{hi:,}")
        return value

    def number(self, key: str, default: float, lo: float = 0.0, hi: float = 1e12) -> float:
        value = self.data.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            raise self.err(key, f"expected a number, got {described(value)}")
        if not lo <= value <= hi:
            raise self.err(key, f"{value} is out of range {lo:,g}..{hi:,g}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.err(key, f"expected true or false, got {described(value)}")
        return value

    def duration(self, key: str, default: float | None, hi: float = MAX_RUN_S) -> float:
        value = self.data.get(key, default)
        if value is None:
            raise self.err(key, "required (a duration: 30s, 500ms, 2m or seconds)")
        seconds: float
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
        else:
            raise self.err(key, f"expected a duration like 30s, 500ms, 2m, got {described(value)}")
        if not 0 <= seconds <= hi:  # also false for NaN
            raise self.err(key, f"duration {value!r} is out of range 0..{hi:g}s")
        return seconds

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise self.err(key, f"{value[:40]!r} is not one of {', '.join(choices)}")
        return value

    def items(self, key: str, what: str, max_len: int) -> list[Any]:
        """The non-empty list under `key`, at most `max_len` long."""
        value = self.data.get(key)
        if not isinstance(value, list) or not value:
            raise self.err(key, f"expected a non-empty list of {what}, got {described(value)}")
        if len(value) > max_len:
            raise self.err(key, f"{len(value):,} entries, more than the limit of {max_len:,}")
        return value


def type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def described(value: Any) -> str:
    """A value's type and a short repr, for an error message: `int 5`, `a list`."""
    if isinstance(value, dict | list) or value is None:
        return type_name(value)
    text = repr(value)
    return f"{type_name(value)} {text if len(text) <= 40 else text[:37] + '...'}"
