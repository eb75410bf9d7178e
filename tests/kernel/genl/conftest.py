"""Fixtures of the generic-netlink tests: the captured 6.1 conversation and its decode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.kernel.genl.capture import Exchange, parse_conversation

GENL_DIR = Path(__file__).parents[2] / "fixtures" / "kernel-6.1" / "nat" / "genl"
CONVERSATION = GENL_DIR / "ipvs_conversation.hex"


@pytest.fixture(scope="session")
def conversation() -> tuple[Exchange, ...]:
    """Requests and replies as captured by the lab's ipvs-genl-dump script (6.1, x86_64)."""
    return parse_conversation(CONVERSATION.read_text(), str(CONVERSATION))


@pytest.fixture(scope="session")
def decoded() -> dict[str, Any]:
    """The capture script's own decode of the same conversation."""
    return json.loads((GENL_DIR / "ipvs_decoded.json").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def conversation_path() -> Path:
    return CONVERSATION
