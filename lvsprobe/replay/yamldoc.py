"""Typed reading of a YAML document that remembers the line of every key, so that a
scenario error can say `FILE line N: key.path: what is wrong` (ScenarioError)."""

from __future__ import annotations

import re
from typing import Any

import yaml

from lvsprobe.errors import ScenarioError

MAX_DURATION_LIMIT_S = 7 * 24 * 3600.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


class Doc:
    """Plain values from a composed YAML tree, remembering the line of every key path."""

    def __init__(self, source: str, text: str):
        self.source = source
        self.lines: dict[tuple[str | int, ...], int] = {}
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            reason = getattr(exc, "problem", None) or str(exc)
            raise ScenarioError(f"{self._where(line)}: not valid YAML: {reason}") from exc
        if node is None:
            raise ScenarioError(f"{source}: empty scenario file")
        self.root = self._value(node, ())

    def _where(self, line: int | None) -> str:
        return self.source if line is None else f"{self.source} line {line}"

    def _value(self, node: yaml.Node, path: tuple[str | int, ...]) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in out:
                    line = key_node.start_mark.line + 1
                    raise ScenarioError(f"{self._where(line)}: duplicate key {key!r}")
                out[key] = self._value(value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._value(v, (*path, i)) for i, v in enumerate(node.value)]
        try:
            return _scalar(node)
        except (ValueError, yaml.YAMLError) as exc:
            raise ScenarioError(f"{self._where(self.lines[path])}: {exc}") from exc

    def error(self, path: tuple[str | int, ...], reason: str) -> ScenarioError:
        probe = path
        while probe not in self.lines and probe:
            probe = probe[:-1]
        dotted = ".".join(str(p) for p in path) or "(top)"
        return ScenarioError(f"{self._where(self.lines.get(probe))}: {dotted}: {reason}")


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


class Reader:
    """Typed access to one mapping of the document, with errors naming the line."""

    def __init__(self, doc: Doc, path: tuple[str | int, ...], allowed: tuple[str, ...]):
        self.doc = doc
        self.path = path
        value: Any = doc.root
        for part in path:
            value = value[part]
        if not isinstance(value, dict):
            raise doc.error(path, f"expected a mapping, got {type_name(value)}")
        self.data: dict[str, Any] = value
        for key in value:
            if key not in allowed:
                raise doc.error((*path, key), f"unknown key (expected one of {', '.join(allowed)})")

    def err(self, key: str, reason: str) -> ScenarioError:
        return self.doc.error((*self.path, key), reason)

    def has(self, key: str) -> bool:
        return key in self.data

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise self.err(key, "required")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.err(key, f"expected text, got {type_name(value)}")
        return str(value)

    def integer(self, key: str, default: int | None = None, lo: int = 0, hi: int = 2**31) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise self.err(key, "required")
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.err(key, f"expected an integer, got {type_name(value)} {value!r}")
        if not lo <= value <= hi:
            raise self.err(key, f"{value} is out of range {lo}..{hi}")
        return value

    def number(self, key: str, default: float, lo: float = 0.0, hi: float = 1e12) -> float:
        value = self.data.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            raise self.err(key, f"expected a number, got {type_name(value)} {value!r}")
        if not lo <= value <= hi:
            raise self.err(key, f"{value} is out of range {lo}..{hi}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise self.err(key, f"expected true or false, got {value!r}")
        return value

    def duration(self, key: str, default: float | None, hi: float = MAX_DURATION_LIMIT_S) -> float:
        value = self.data.get(key, default)
        if value is None:
            raise self.err(key, "required (a duration: 30s, 500ms, 2m or seconds)")
        seconds: float
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and (m := _DURATION.match(value)):
            seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
        else:
            raise self.err(key, f"expected a duration like 30s, 500ms, 2m, got {value!r}")
        if not 0 <= seconds <= hi or seconds != seconds:
            raise self.err(key, f"duration {value!r} is out of range 0..{hi:g}s")
        return seconds

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise self.err(key, f"{value!r} is not one of {', '.join(choices)}")
        return value


def type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )
