"""/proc/sys/net/ipv4/vs/*, /proc/slabinfo, /sys/kernel/slab/ip_vs_conn, conn_tab_bits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.errors import IPVSUnavailable, NotPermitted, ParseError
from lvsprobe.kernel.procfs import slab, sysctl
from lvsprobe.model import Slab

KERNEL_61 = Path(__file__).parents[2] / "fixtures" / "kernel-6.1"


def test_golden_sysctls(nat_proc: Path) -> None:
    values = sysctl.read_sysctls(nat_proc)
    assert values["sync_threshold"] == (3, 50)
    assert values["amemthresh"] == (1024,)
    assert values["conntrack"] == (1,)
    assert values["sync_qlen_max"] == (7155,)
    assert "est_cpulist" not in values  # 6.2+ only
    assert len(values) == 27
    assert all(len(v) == 1 for name, v in values.items() if name != "sync_threshold")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0-1\n", (0, 1)), ("\n", ()), ("0-3,8\n", (0, 1, 2, 3, 8)), ("0-7:2/4\n", (0, 1, 4, 5))],
)
def test_k612_est_cpulist(text: str, expected: tuple[int, ...]) -> None:
    assert sysctl.parse_sysctl("est_cpulist", text) == expected


def test_k612_est_nice_negative() -> None:
    assert sysctl.parse_sysctl("est_nice", "-5\n") == (-5,)


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("amemthresh", "", "empty"),
        ("amemthresh", "1024\n5\n", "single line"),
        ("amemthresh", "0x10\n", "bad decimal"),
        ("amemthresh", "1" * 45 + "\n", "bad decimal"),
        ("est_cpulist", "0-\n", "bad cpulist"),
        ("est_cpulist", "5-3\n", "bad cpulist range"),
        ("est_cpulist", "0-999999\n", "bad cpulist range"),
        ("est_cpulist", "0-3:5/4\n", "bad cpulist range"),
    ],
)
def test_hostile_sysctls(name: str, text: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        sysctl.parse_sysctl(name, text)
    assert info.value.source == f"sys/net/ipv4/vs/{name}"


def test_sysctls_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(IPVSUnavailable):
        sysctl.read_sysctls(tmp_path)


def test_golden_slabinfo(nat_proc: Path) -> None:
    assert slab.read_slab(nat_proc, None) == Slab(
        active_objs=912, num_objs=912, slab_object_size=320, objs_per_slab=12, pages_per_slab=1
    )


def fake_sysfs(root: Path, merged: bool) -> Path:
    target = root / "kernel/slab" / (":0000320" if merged else "ip_vs_conn")
    target.mkdir(parents=True)
    for name, value in (("object_size", 288), ("slab_size", 320), ("objs_per_slab", 12)):
        (target / name).write_text(f"{value}\n")
    (target / "objects").write_text("912 N0=912\n")
    if merged:
        (root / "kernel/slab/ip_vs_conn").symlink_to(":0000320")
    return root


def test_slab_from_sysfs(tmp_path: Path, nat_proc: Path) -> None:
    sys_root = fake_sysfs(tmp_path / "sys", merged=False)
    got = slab.read_slab(nat_proc, sys_root)
    assert got is not None and got.object_size == 288 and not got.merged
    assert (got.slab_object_size, got.objs_per_slab, got.active_objs) == (320, 12, 912)


def test_slab_merged(tmp_path: Path) -> None:
    # Default Debian boot (no slab_nomerge): no slabinfo row, sysfs is a symlink.
    proc_root = tmp_path / "proc"
    proc_root.mkdir()
    text = (KERNEL_61 / "nat/proc/slabinfo").read_text().splitlines()
    (proc_root / "slabinfo").write_text("\n".join(text[:2]) + "\n")
    got = slab.read_slab(proc_root, fake_sysfs(tmp_path / "sys", merged=True))
    assert got is not None and got.merged and got.object_size is None
    assert got.active_objs is None and got.slab_object_size == 320


def root_only(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Opening these files fails as it does for a non-root user (the tests may run as root)."""
    real_open = os.open

    def fake_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if Path(path).name in names:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)


def test_slab_unreadable_without_root_is_a_failure(
    tmp_path: Path, nat_proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # exporters/README: a non-root exporter reports the slab source as failed.
    root_only(monkeypatch, "slabinfo", "object_size", "slab_size", "objs_per_slab")
    with pytest.raises(NotPermitted, match="slabinfo: permission denied"):
        slab.read_slab(nat_proc, fake_sysfs(tmp_path / "sys", merged=False))


def test_merged_slab_unreadable_without_root_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: Slab(merged=True) with nothing read, reported as a success with no series.
    sys_root = fake_sysfs(tmp_path / "sys", merged=True)
    root_only(monkeypatch, "slabinfo", "object_size", "slab_size", "objs_per_slab")
    with pytest.raises(NotPermitted, match="slab_size: permission denied"):
        slab.read_slab(tmp_path, sys_root)


def test_merged_slab_needs_no_slabinfo(tmp_path: Path) -> None:
    """Merged, the kernel counts no ip_vs_conn objects: slabinfo has nothing to add."""
    got = slab.read_slab(tmp_path / "no-proc", fake_sysfs(tmp_path / "sys", merged=True))
    assert got.merged and (got.slab_object_size, got.objs_per_slab) == (320, 12)


@pytest.mark.parametrize("sysfs", ["none", "absent", "own directory"])
def test_no_slabinfo_row_without_a_merged_cache_is_a_failure(tmp_path: Path, sysfs: str) -> None:
    proc_root = tmp_path / "proc"
    proc_root.mkdir()
    (proc_root / "slabinfo").write_text("slabinfo - version: 2.1\n")
    sys_root = {"none": None, "absent": tmp_path / "sys"}.get(sysfs)
    if sysfs == "own directory":
        sys_root = fake_sysfs(tmp_path / "sys", merged=False)
    with pytest.raises(ParseError, match="no ip_vs_conn row, and") as info:
        slab.read_slab(proc_root, sys_root)
    assert ("--sysfs-root" in str(info.value)) == (sysfs == "none")


def test_a_sysfs_extra_unreadable_keeps_the_row(
    tmp_path: Path, nat_proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unmerged, sysfs only adds sizeof: without it every slab series is still there."""
    sys_root = fake_sysfs(tmp_path / "sys", merged=False)
    root_only(monkeypatch, "object_size")
    got = slab.read_slab(nat_proc, sys_root)
    assert (got.active_objs, got.slab_object_size, got.object_size) == (912, 320, None)


@pytest.mark.parametrize("entry", ["fifo", "directory", "symlink to /dev/zero"])
def test_sysctl_entries_must_be_regular_files(tmp_path: Path, nat_proc: Path, entry: str) -> None:
    # Before: is_file() skipped them silently (and a FIFO target would have blocked the read).
    tree = tmp_path / "proc"
    shutil.copytree(nat_proc, tree)
    path = tree / "sys/net/ipv4/vs/zzz"
    if entry == "fifo":
        os.mkfifo(path)
    elif entry == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(ParseError, match=r"sys/net/ipv4/vs/zzz: .* not a regular file"):
        sysctl.read_sysctls(tree)


def test_a_sysctl_directory_of_too_many_entries_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / sysctl.SYSCTL_DIR
    directory.mkdir(parents=True)
    for n in range(sysctl.MAX_FILES + 1):
        (directory / f"s{n}").write_text("1\n")
    with pytest.raises(ParseError, match="more than 1024 entries"):
        sysctl.read_sysctls(tmp_path)


def test_slab_absent_is_a_failure(tmp_path: Path) -> None:
    # Nothing read is not "no slab": the source must fail, never succeed with no series.
    with pytest.raises(ParseError, match="slabinfo: no such file"):
        slab.read_slab(tmp_path, tmp_path)
    assert slab.parse_slabinfo("slabinfo - version: 2.1\n") is None


@pytest.mark.parametrize(
    ("text", "line_no", "reason"),
    [
        ("", None, "empty file"),
        ("slabinfo - version: 1.1\n", 1, "version"),
        ("slabinfo - version: 2.1\nip_vs_conn 1 2\n", 2, "at least 6 fields"),
        ("slabinfo - version: 2.1\nip_vs_conn 1 2 x 4 5 : t\n", 2, "bad decimal"),
    ],
)
def test_hostile_slabinfo(text: str, line_no: int | None, reason: str) -> None:
    with pytest.raises(ParseError, match=reason) as info:
        slab.parse_slabinfo(text)
    assert info.value.line_no == line_no


def test_conn_tab_bits(tmp_path: Path) -> None:
    assert slab.read_conn_tab_bits(tmp_path) is None
    param = tmp_path / "module/ip_vs/parameters"
    param.mkdir(parents=True)
    (param / "conn_tab_bits").write_text("12\n")
    assert slab.read_conn_tab_bits(tmp_path) == 12
    with pytest.raises(ParseError, match="conn_tab_bits"):
        slab.parse_conn_tab_bits("twelve\n")
