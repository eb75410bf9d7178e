"""The YAML files the exporter is given (--names, --web.config.file), read one way.

`read_yaml` turns every failure into a ParseError naming the file; `Section` is a typed view
of a mapping in such a file whose errors name the file and the dotted key.
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvsprobe.errors import ParseError

# Far more than any names or web config file needs; a bound so that /dev/zero or a log file
# given by mistake is refused instead of read into memory.
MAX_YAML_BYTES = 16 << 20

# What PyYAML's safe constructors raise besides YAMLError on hostile scalars (found by
# fuzzing): `2024-13-45` (ValueError), `!!timestamp x` (AttributeError), `!!int x`, deep
# nesting (RecursionError: its composer recurses).
_CONSTRUCTOR_BUGS = (ValueError, TypeError, AttributeError, LookupError, ArithmeticError)


def read_yaml(path: Path) -> object:
    """The file's data; a ParseError naming the file when it cannot be read or is not YAML.

    A key given twice in one mapping is refused: PyYAML would keep the last one silently.
    yaml is imported here: a sidecar given neither file does not carry it (~2 MB).
    """
    import yaml

    src = str(path)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ParseError(src, None, None, f"cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_YAML_BYTES:
        raise ParseError(src, None, None, f"larger than {MAX_YAML_BYTES >> 20} MiB")
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ParseError(src, None, None, f"not UTF-8 text: {exc.reason}") from exc
    try:
        return yaml.load(text, Loader=_unique_key_loader(yaml))
    except yaml.YAMLError as exc:
        raise ParseError(src, None, None, f"not YAML: {exc}") from exc
    except RecursionError as exc:
        raise ParseError(src, None, None, "not YAML: nested too deeply") from exc
    except _CONSTRUCTOR_BUGS as exc:
        raise ParseError(src, None, None, f"not YAML: {exc}") from exc


def _unique_key_loader(yaml: Any) -> type:
    """yaml.SafeLoader that refuses duplicate keys (a class per call: yaml is imported late)."""

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *base` may be overridden by design
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # unhashable: the base class names it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key!r}",
                        key_node.start_mark,
                    )
                seen.add(key)
            mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
            return mapping

    return UniqueKeyLoader


def describe(value: object) -> str:
    """A value as an error message shows it: its YAML kind and a bounded repr."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    kind = kinds.get(type(value), type(value).__name__)
    return f"{kind} {reprlib.repr(value)}"


@dataclass(frozen=True)
class Section:
    """A mapping at `key` (dotted, "" for the top) of the YAML file `source`."""

    source: str
    key: str
    data: Mapping[Any, Any]

    def where(self, key: object = None) -> str:
        """The dotted key of `key` in this section (the section itself for None)."""
        if key is None:
            return self.key or "(top level)"
        # repr for anything else: a key with a line break must not break the one-line error
        name = key if isinstance(key, str) and key.isprintable() else reprlib.repr(key)
        return f"{self.key}.{name}" if self.key else name

    def error(self, key: object, reason: str) -> ParseError:
        """A ParseError naming the file and the key."""
        return ParseError(self.source, None, None, f"{self.where(key)}: {reason}")

    def check_keys(self, known: Iterable[str], unsupported: Mapping[str, str]) -> None:
        """Refuse keys this section does not have; `unsupported` says why for each it knows."""
        known = tuple(known)
        for key in self.data:
            if key in known:
                continue
            if key in unsupported:
                raise self.error(key, unsupported[key])
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
            raise self.error(key, f"unknown key; {hint}")

    def section(self, key: str) -> Section | None:
        """The mapping at `key`; None when absent, an empty section when given empty."""
        if key not in self.data:
            return None
        value = self.data[key]
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {describe(value)}")
        return Section(self.source, self.where(key), value)

    def text(self, key: str) -> str | None:
        """A non-empty string at `key`; None when absent or null."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {describe(value)}")
        if not value:
            raise self.error(key, "is empty")
        return value

    def texts(self, key: str) -> tuple[str, ...] | None:
        """A list of non-empty strings at `key`; None when absent or null."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of strings, got {describe(value)}")
        for item in value:
            if not isinstance(item, str) or not item:
                raise self.error(key, f"expected a list of strings, one is {describe(item)}")
        return tuple(value)

    def flag(self, key: str, default: bool) -> bool:
        """true or false at `key`; `default` when absent or null."""
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {describe(value)}")
        return value

    def path(self, key: str, base: Path) -> Path | None:
        """A file named at `key`, relative to `base` (the YAML file's directory) unless absolute."""
        value = self.text(key)
        if value is None:
            return None
        if "\0" in value:
            raise self.error(key, "contains a NUL character")
        return base / value
