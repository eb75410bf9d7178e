"""Each fixture directory's NOTE.md names what is there, and only that."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
NOTES = sorted(FIXTURES.glob("*/NOTE.md"))
ITEM = re.compile(r"^- `([^`]+)`", re.MULTILINE)  # a list item names a path first
QUOTED = re.compile(r"`([^`\s]+)`")


@pytest.mark.parametrize("note", NOTES, ids=lambda p: p.parent.name)
def test_note_lists_what_exists(note: Path) -> None:
    """Each list item's path exists, and so does every quoted path under a listed entry."""
    root = note.parent
    text = note.read_text()
    top = {p.name for p in root.iterdir()} - {"NOTE.md"}
    named = set(ITEM.findall(text))
    named |= {q for q in QUOTED.findall(text) if q.split("/")[0] in top}
    missing = sorted(m for m in named if not (root / m).exists())
    assert not missing, f"{note} names what is not there: {missing}"
    listed = {m.split("/")[0] for m in named}
    assert top <= listed, f"{note} does not mention {sorted(top - listed)}"


def test_there_are_notes() -> None:
    assert NOTES
