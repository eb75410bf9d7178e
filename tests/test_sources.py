"""Snapshots from a /proc-like tree: every source read, each failing alone."""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

import pytest

from lvsprobe.deadline import Deadline
from lvsprobe.kernel.procfs import ip_vs
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


def _garbage_body(tmp_path: Path, nat_proc: Path) -> Path:
    """The fixture tree with /proc/net/ip_vs's header kept and its body garbage."""
    tree = tmp_path / "proc"
    shutil.copytree(nat_proc, tree)
    path = tree / "net/ip_vs"
    header = "".join(path.read_text().splitlines(keepends=True)[:3])
    path.write_text(header + "TCP  zz:zz rr\n")
    return tree


def test_with_netlink_only_the_header_of_ip_vs_is_parsed(
    tmp_path: Path, nat_proc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def whole_parse(*args: object, **kwargs: object) -> None:
        raise AssertionError("/proc/net/ip_vs parsed whole though netlink gave the services")

    monkeypatch.setattr(ip_vs, "read_ip_vs", whole_parse)
    snap = read_snapshot(Target(procfs_root=_garbage_body(tmp_path, nat_proc), genl_capture=GENL))
    assert snap.via == "netlink" and snap.failures == ()
    assert len(snap.services) == 4 and "services" in snap.durations_s
    assert (snap.version, snap.conn_table_size) == ("1.2.1", 4096)


def test_a_failing_netlink_read_parses_ip_vs_whole(tmp_path: Path, nat_proc: Path) -> None:
    broken = tmp_path / "conversation.hex"
    broken.write_text("< 4001zz\n")
    snap = read_snapshot(Target(procfs_root=_garbage_body(tmp_path, nat_proc), genl_capture=broken))
    assert snap.via == "procfs"
    assert [f.source for f in snap.failures] == ["netlink", "services"]
    assert "line 4" in snap.failures[1].error and snap.services == ()


def test_a_garbage_ip_vs_header_fails_the_services_even_with_netlink(
    tmp_path: Path, nat_proc: Path
) -> None:
    tree = tmp_path / "proc"
    shutil.copytree(nat_proc, tree)
    (tree / "net/ip_vs").write_text("IP Virtual Server, of a kind\n")
    snap = read_snapshot(Target(procfs_root=tree, genl_capture=GENL))
    assert snap.via == "netlink" and snap.failures == ()  # the netlink services make it moot
    assert len(snap.services) == 4


def _counting_deadline(at_call: int) -> Deadline:
    """Passes on the `at_call`-th look at its clock: deterministic, no wall clock."""
    calls = itertools.count(1)
    return Deadline(at_s=at_call, budget_s=9, clock=lambda: next(calls))


def test_sources_left_at_the_deadline_fail_unread(nat_proc: Path) -> None:
    # services and stats are looked at before the deadline (looks 1 and 2), the rest after
    snap = read_snapshot(Target(procfs_root=nat_proc), deadline=_counting_deadline(3))
    assert len(snap.services) == 4 and snap.totals is not None
    assert {f.source: f.error for f in snap.failures} == {
        source: "not read: the scrape deadline (9 s) passed"
        for source in ("conns", "sysctls", "slab")
    }
    assert "conns" not in snap.durations_s


def test_a_conn_table_read_stops_between_chunks_at_the_deadline(
    tmp_path: Path, nat_proc: Path
) -> None:
    tree = tmp_path / "proc"
    shutil.copytree(nat_proc, tree)
    table = tree / "net/ip_vs_conn_sync"
    header, rows = table.read_bytes().split(b"\n", 1)
    table.write_bytes(header + b"\n" + rows * (3 * (1 << 20) // len(rows)))  # 3 MiB: 3 chunks
    # looks: services 1, stats 2, conns 3, first chunk 4, second chunk 5: stop
    snap = read_snapshot(Target(procfs_root=tree), deadline=_counting_deadline(5))
    errors = {f.source: f.error for f in snap.failures}
    assert errors["conns"] == (
        "net/ip_vs_conn_sync: stopped reading, the scrape deadline (9 s) passed"
    )
    assert set(errors) == {"conns", "sysctls", "slab"}
    assert snap.conns is None and len(snap.services) == 4


@pytest.mark.parametrize(
    ("relative", "source"),
    [
        ("net/ip_vs", "services"),
        ("net/ip_vs_stats", "stats"),
        ("net/ip_vs_conn_sync", "conns"),
        ("sys/net/ipv4/vs/amemthresh", "sysctls"),
        ("slabinfo", "slab"),
    ],
)
@pytest.mark.timeout(30)
def test_a_fifo_or_device_in_the_tree_fails_its_source_alone(
    tmp_path: Path, nat_proc: Path, relative: str, source: str
) -> None:
    for kind, make in (("a FIFO", os.mkfifo), ("a character device", _to_dev_zero)):
        tree = tmp_path / kind / "proc"
        shutil.copytree(nat_proc, tree)
        (tree / relative).unlink()
        make(tree / relative)
        snap = read_snapshot(Target(procfs_root=tree))
        assert [f.source for f in snap.failures] == [source]
        assert f"{tree / relative}" in snap.failures[0].error
        assert f"is {kind}, not a regular file" in snap.failures[0].error


def _to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def test_the_conn_table_limit_is_the_callers(nat_proc: Path) -> None:
    snap = read_snapshot(Target(procfs_root=nat_proc), max_conn_table_bytes=1000)
    assert [f.source for f in snap.failures] == ["conns"]
    assert "larger than 1000 bytes: raise the limit with --max-conn-table-bytes" in (
        snap.failures[0].error
    )
