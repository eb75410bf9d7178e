"""Shared pytest fixtures. The lab VM fixture (one boot per session) lives here too."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
KERNEL_61 = FIXTURES / "kernel-6.1"


@pytest.fixture(scope="session")
def nat_proc() -> Path:
    """/proc of the active NAT director, captured on Debian's 6.1 kernel."""
    return KERNEL_61 / "nat" / "proc"


@pytest.fixture(scope="session")
def nat_ipvsadm() -> Path:
    """ipvsadm 1.31's own views of the same state as `nat_proc`."""
    return KERNEL_61 / "nat" / "ipvsadm"
