"""The YAML files the exporter is given (--names, --web.config.file), read one way."""

from __future__ import annotations

from pathlib import Path

from lvsprobe.errors import ParseError


def read_yaml(path: Path) -> object:
    """The file's data; a ParseError naming the file when it cannot be read or is not YAML.

    yaml is imported here: a sidecar given neither file does not carry it (~2 MB).
    """
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ParseError(str(path), None, None, f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ParseError(str(path), None, None, f"not UTF-8 text: {exc.reason}") from exc
    except yaml.YAMLError as exc:
        raise ParseError(str(path), None, None, f"not YAML: {exc}") from exc
