"""The commands on hostile /proc trees and conn tables: one line and exit 1 (or a warning for a
secondary source), never a traceback, a hang or memory without bound."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.errors import LvsprobeError, ParseError
from lvsprobe.replay import flowlog
from lvsprobe.replay.attribution import conn_table_source, load_snapshots

pytestmark = pytest.mark.timeout(60)  # a blocking read must fail the test, not hang the run


@pytest.fixture
def tree(tmp_path: Path, nat_proc: Path) -> Path:
    root = tmp_path / "proc"
    shutil.copytree(nat_proc, root)
    return root


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def _swap(path: Path, how: str) -> None:
    path.unlink()
    if how == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(how)


@pytest.mark.parametrize("how", ["/dev/zero", "/dev/urandom", "fifo"])
def test_status_on_a_hostile_ip_vs_says_one_line(tree: Path, how: str) -> None:
    _swap(tree / "net/ip_vs", how)
    result = _run("status", "--procfs-root", str(tree))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    kind = "a FIFO" if how == "fifo" else "a character device"
    assert lines[0].startswith("lvsprobe: could not read the services of procfs tree")
    assert f"{tree / 'net/ip_vs'}" in lines[0] and f"is {kind}, not a regular file" in lines[0]


@pytest.mark.parametrize("relative", ["net/ip_vs_stats", "slabinfo", "net/ip_vs_conn_sync"])
def test_status_warns_of_a_hostile_secondary_source(tree: Path, relative: str) -> None:
    _swap(tree / relative, "/dev/zero")
    result = _run("status", "--procfs-root", str(tree))
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "could not read" in line]
    assert len(warnings) == 1 and "is a character device" in warnings[0]
    assert "Traceback" not in result.output


def test_status_conn_table_limit(tree: Path) -> None:
    result = _run("status", "--procfs-root", str(tree), "--max-conn-table-bytes", "1000")
    assert result.exit_code == 0
    assert (
        "warning: could not read conns: net/ip_vs_conn_sync: "
        f"{tree / 'net/ip_vs_conn_sync'} is larger than 1000 bytes: raise the limit with "
        "--max-conn-table-bytes"
    ) in result.stderr
    bad = _run("status", "--procfs-root", str(tree), "--max-conn-table-bytes", "0")
    assert bad.exit_code == 2 and "--max-conn-table-bytes" in bad.stderr


def test_export_once_refuses_a_giant_sysctl_at_once(tree: Path) -> None:
    # The finding: 50M integers on one line cost `export --once` 140 s, 5.9 GB of memory and
    # 2.6 GB of output. A sparse 10 GiB file stands for it.
    with (tree / "sys/net/ipv4/vs/amemthresh").open("ab") as f:
        f.truncate(10 << 30)
    result = _run("export", "--procfs-root", str(tree), "--once", "--no-collector.netlink")
    assert result.exit_code == 0
    assert 'ipvs_scrape_source_success{source="sysctls"} 0\n' in result.stdout
    assert len(result.stdout) < 100_000


def test_export_read_timeout_zero_reads_to_the_end(tree: Path) -> None:
    result = _run("export", "--procfs-root", str(tree), "--once", "--scrape.read-timeout", "0")
    assert result.exit_code == 0
    success = [
        line
        for line in result.stdout.splitlines()
        if line.startswith("ipvs_scrape_source_success{")
    ]
    assert len(success) == 5 and all(line.endswith(" 1") for line in success), success


def test_replay_conn_table_file_is_checked_and_bounded(tmp_path: Path, nat_proc: Path) -> None:
    zero = tmp_path / "zero"
    zero.symlink_to("/dev/zero")
    with pytest.raises(ParseError, match="is a character device, not a regular file"):
        conn_table_source(str(zero))()
    table = nat_proc / "net/ip_vs_conn"
    assert conn_table_source(str(table))() == table.read_bytes()
    with pytest.raises(ParseError, match="raise the limit with --max-conn-table-bytes"):
        conn_table_source(str(table), max_bytes=100)()


def test_replay_conn_table_of_a_netns_reads_one_byte_past_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ip netns exec NAME head -c LIMIT+1`: the extra byte tells a table too long."""
    seen: list[list[str]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        seen.append(argv)
        count = int(argv[argv.index("-c") + 1])
        return subprocess.CompletedProcess(argv, 0, b"x" * count, b"")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(LvsprobeError, match="longer than 100 bytes: raise the limit with"):
        conn_table_source("netns:lvs1", max_bytes=100)()
    assert seen[0] == [
        *("ip", "netns", "exec", "lvs1", "head", "-c", "101", "/proc/net/ip_vs_conn")
    ]


def test_replay_attribute_refuses_hostile_snapshots(tmp_path: Path, nat_proc: Path) -> None:
    run = tmp_path / "run"
    snaps = run / flowlog.SNAPSHOT_DIR
    snaps.mkdir(parents=True)
    flowlog.FlowLogWriter(run / flowlog.FLOWS_FILE).close()  # a run of no flows
    shutil.copy(nat_proc / "net/ip_vs_conn", snaps / "0000.txt")
    (snaps / flowlog.SNAPSHOT_INDEX).write_text(json.dumps([{"file": "0000.txt", "t_s": 1}]))
    assert len(load_snapshots(snaps)) == 1
    with pytest.raises(ParseError, match="larger than 100 bytes"):
        load_snapshots(snaps, max_bytes=100)
    result = _run("replay", "attribute", str(run), "--max-conn-table-bytes", "100")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "--max-conn-table-bytes" in result.stderr
    (snaps / "0000.txt").unlink()
    os.mkfifo(snaps / "0000.txt")
    result = _run("replay", "attribute", str(run))
    assert result.exit_code == 1 and "is a FIFO, not a regular file" in result.stderr
