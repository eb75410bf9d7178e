"""Shared pytest fixtures. The lab VM fixture (one boot per session) lives here too."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# No test passes or fails on wall-clock time: Hypothesis' per-example deadline (200 ms)
# failed property tests on a loaded 2-core machine, so it is off for every test.
settings.register_profile("lvsprobe", deadline=None)
settings.load_profile("lvsprobe")

FIXTURES = Path(__file__).parent / "fixtures"
KERNEL_61 = FIXTURES / "kernel-6.1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "needs_bin(*names): needs these external programs (`make test` installs them); "
        "skipped where one is missing, failed under CI=true",
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A missing external program skips a test on a developer's machine, but CI installs
    everything, so there a missing program is a broken install step: fail, never skip."""
    for marker in item.iter_markers("needs_bin"):
        missing = [name for name in marker.args if shutil.which(name) is None]
        if not missing:
            continue
        reason = f"{', '.join(missing)} missing: `make test` installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def nat_proc() -> Path:
    """/proc of the active NAT director, captured on Debian's 6.1 kernel."""
    return KERNEL_61 / "nat" / "proc"


@pytest.fixture(scope="session")
def nat_ipvsadm() -> Path:
    """ipvsadm 1.31's own views of the same state as `nat_proc`."""
    return KERNEL_61 / "nat" / "ipvsadm"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """ONE lab VM per test session (lvsprobe.lab.Lab), booted on first use, killed at the end.

    No cluster is built at boot: tests share the VM, so each test calls
    `lab.ensure(Topology(...))` (or `lab.ensure()` for the default NAT cluster) first - a no-op
    when that cluster already runs untouched - and `lab.mark_dirty()` after changing the
    cluster by hand (ipvsadm edits, failover, stopped backends). `lab.shared_dir` is a host
    directory mounted read-write at the same path in the guest.
    LVSPROBE_NO_LAB=1 skips lab tests; otherwise (and always with CI=true) a VM that cannot
    boot fails them.
    """
    if os.environ.get("LVSPROBE_NO_LAB") == "1":
        pytest.skip("LVSPROBE_NO_LAB=1: lab VM tests disabled")
    from lvsprobe.errors import LvsprobeError
    from lvsprobe.lab import Lab

    def progress(message: str) -> None:
        print(f"lab: {message}", file=sys.__stderr__, flush=True)

    vm = Lab(build=False, shared_dir=tmp_path_factory.mktemp("lab-shared"), progress=progress)
    try:
        vm.start()
    except LvsprobeError as exc:
        vm.close()
        pytest.fail(f"the lab VM did not come up: {exc}", pytrace=False)
    try:
        yield vm
    finally:
        vm.close()
