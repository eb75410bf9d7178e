"""Each fixture directory's NOTE.md names what is there, and only that."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
NOTES = sorted(FIXTURES.glob("*/NOTE.md"))
# a backticked relative path: `nat/proc/`, `modules.txt` (not `/proc/modules` or `--flag`)
PATH = re.compile(r"`([A-Za-z0-9][\w.-]*(?:/[\w.-]+)*/?)`")


@pytest.mark.parametrize("note", NOTES, ids=lambda p: p.parent.name)
def test_note_lists_what_exists(note: Path) -> None:
    root = note.parent
    named = {m for m in PATH.findall(note.read_text()) if "/" in m or "." in m}
    missing = sorted(m for m in named if not (root / m).exists())
    assert not missing, f"{note} names what is not there: {missing}"
    top = {p.name for p in root.iterdir()} - {"NOTE.md"}
    listed = {m.split("/")[0] for m in named}
    assert top <= listed, f"{note} does not mention {sorted(top - listed)}"


def test_there_are_notes() -> None:
    assert NOTES
