"""Snapshots from a /proc-like tree: every source read, each failing alone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lvsprobe.snapshot_json import snapshot_from_json, snapshot_to_json
from lvsprobe.sources import Target, read_snapshot

GENL = Path(__file__).parent / "fixtures/kernel-6.1/nat/genl/ipvs_conversation.hex"


def test_fixture_tree_reads_every_source(nat_proc: Path) -> None:
    snap = read_snapshot(Target(procfs_root=nat_proc))
    assert snap.loaded and snap.via == "procfs"
    assert snap.failures == ()
    assert snap.version == "1.2.1" and snap.conn_table_size == 4096
    assert len(snap.services) == 4
    assert snap.totals is not None and snap.totals.conns > 0
    assert snap.conns is not None and snap.conns.total > 0
    assert snap.sysctls["sync_threshold"] == (3, 50)
    assert snap.slab is not None and snap.slab.slab_object_size == 320
    assert set(snap.durations_s) >= {"services", "stats", "conns", "sysctls", "slab"}


def test_genl_capture_gives_netlink_detail(nat_proc: Path) -> None:
    snap = read_snapshot(Target(procfs_root=nat_proc, genl_capture=GENL))
    assert snap.via == "netlink"
    assert all(s.stats is not None for s in snap.services)
    assert snap.timeouts is not None and snap.timeouts.tcp_s == 900
    assert snap.daemons and snap.daemons[0].port == 8848


@pytest.mark.parametrize(
    ("relative", "content", "source"),
    [
        ("net/ip_vs_stats", "garbage\n", "stats"),
        ("net/ip_vs_conn", "Pro FromIP\nTCP zz\n", "conns"),
        ("slabinfo", "\x00\x01", "slab"),
    ],
)
def test_a_broken_source_fails_alone(
    tmp_path: Path, nat_proc: Path, relative: str, content: str, source: str
) -> None:
    tree = tmp_path / "proc"
    shutil.copytree(nat_proc, tree)
    (tree / relative).write_text(content)
    if relative == "net/ip_vs_conn":
        (tree / "net/ip_vs_conn_sync").unlink()
    snap = read_snapshot(Target(procfs_root=tree))
    assert [f.source for f in snap.failures] == [source]
    assert len(snap.services) == 4  # the rest is still served


def test_not_loaded_is_a_state(tmp_path: Path) -> None:
    snap = read_snapshot(Target(procfs_root=tmp_path))
    assert snap.loaded is False


def test_json_round_trip(nat_proc: Path) -> None:
    snap = read_snapshot(Target(procfs_root=nat_proc, genl_capture=GENL))
    back = snapshot_from_json(snapshot_to_json(snap))
    assert back.services == snap.services
    assert back.conns == snap.conns
    assert back.daemons == snap.daemons
    assert back.slab == snap.slab and back.sysctls == snap.sysctls


def test_a_failing_netlink_dump_keeps_the_procfs_services(tmp_path: Path, nat_proc: Path) -> None:
    broken = tmp_path / "conversation.hex"
    lines = GENL.read_text().splitlines()
    # cut the service dump's first reply in half: the decoder must refuse it
    first = lines.index("# IPVS_CMD_GET_SERVICE dump") + 2
    assert lines[first].startswith("< ")
    hex_digits = lines[first][2:]
    lines[first] = "< " + hex_digits[: len(hex_digits) // 4 * 2]
    broken.write_text("\n".join(lines) + "\n")
    snap = read_snapshot(Target(procfs_root=nat_proc, genl_capture=broken))
    assert snap.via == "procfs"
    assert [f.source for f in snap.failures] == ["netlink"]
    assert len(snap.services) == 4


def test_an_unreadable_capture_is_a_netlink_failure(tmp_path: Path, nat_proc: Path) -> None:
    broken = tmp_path / "conversation.hex"
    broken.write_text("< 4001zz\n")
    snap = read_snapshot(Target(procfs_root=nat_proc, genl_capture=broken))
    assert [f.source for f in snap.failures] == ["netlink"]
    assert "not a hex string" in snap.failures[0].error
    assert len(snap.services) == 4
