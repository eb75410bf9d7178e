"""/proc/sys/net/ipv4/vs/*, /proc/slabinfo, /sys/kernel/slab/ip_vs_conn, conn_tab_bits."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsprobe.errors import IPVSUnavailable, ParseError
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
