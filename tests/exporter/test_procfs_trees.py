"""The exporter through the real readers (lvsprobe.sources) on /proc trees: the captured
fixture (exact golden), hostile trees (never a crash, the failing source shows), the CLI."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lvsprobe import sources as lvsprobe_sources
from lvsprobe.exporter.scrape import ExportOptions, Scraper

GOLDEN = Path(__file__).parent / "golden"
BUILD = ("0.1.0", "3.11.0")


@pytest.fixture(scope="module")
def sources() -> Any:
    return lvsprobe_sources


def _reader(sources: Any) -> Callable[..., Any]:
    """read_snapshot with a clock that ticks 1 ms per call: durations are exact."""

    def read(target: Any, **kw: Any) -> Any:
        ticks = itertools.count()
        return sources.read_snapshot(target, clock=lambda: next(ticks) / 1000, **kw)

    return read


def _scrape(sources: Any, root: Path, **opts: Any) -> bytes:
    options = ExportOptions(targets=(sources.Target(procfs_root=root),), netlink=False, **opts)
    return Scraper(options, read=_reader(sources), build=BUILD).scrape()


def test_captured_tree_golden(
    sources: Any,
    nat_proc: Path,
    check_metrics: Callable[[bytes], subprocess.CompletedProcess[bytes]],
) -> None:
    text = _scrape(sources, nat_proc, conns="per-real-server", compat_node_exporter=True)
    path = GOLDEN / "fixture-nat.prom"
    if os.environ.get("LVSPROBE_UPDATE_GOLDEN"):
        path.write_bytes(text)
    assert text.decode() == path.read_text()
    result = check_metrics(text)
    assert result.returncode == 0 and not result.stdout, result.stdout


@pytest.fixture
def tree(tmp_path: Path, nat_proc: Path) -> Iterator[Path]:
    root = tmp_path / "proc"
    shutil.copytree(nat_proc, root)
    yield root


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 3])


HOSTILE: dict[str, tuple[str, Callable[[Path], None]]] = {
    "ip_vs truncated": ("services", lambda r: _truncate(r / "net/ip_vs")),
    "ip_vs garbage": (
        "services",
        lambda r: (r / "net/ip_vs").write_bytes(b"\x00\xffgarbage\n" * 50),
    ),
    "ip_vs wrong widths": (
        "services",
        lambda r: (r / "net/ip_vs").write_text(
            (r / "net/ip_vs").read_text().replace("C6120164:0050", "C61201640:050")
        ),
    ),
    "ip_vs_stats garbage": ("stats", lambda r: (r / "net/ip_vs_stats").write_text("nope\n")),
    "ip_vs_stats empty": ("stats", lambda r: (r / "net/ip_vs_stats").write_text("")),
    "conn truncated": ("conns", lambda r: _truncate(r / "net/ip_vs_conn_sync")),
    "conn wrong widths": (
        "conns",
        lambda r: (r / "net/ip_vs_conn_sync").write_text(
            (r / "net/ip_vs_conn_sync").read_text().replace("C6120164 0050", "C6120164 00050")
        ),
    ),
    "sysctl garbage": (
        "sysctls",
        lambda r: (r / "sys/net/ipv4/vs/am_droprate").write_text("ten\n"),
    ),
    "slabinfo garbage": (
        "slab",
        lambda r: (r / "slabinfo").write_text("slabinfo - version: 9.9\nxx\n"),
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_tree_never_crashes(
    sources: Any,
    tree: Path,
    case: str,
    check_metrics: Callable[[bytes], subprocess.CompletedProcess[bytes]],
) -> None:
    source, spoil = HOSTILE[case]
    spoil(tree)
    text = _scrape(sources, tree, compat_node_exporter=True).decode()
    if f'ipvs_scrape_source_success{{source="{source}"}} 0' not in text:
        # A reader may accept a harmless variant; then the source must read as a success.
        assert f'ipvs_scrape_source_success{{source="{source}"}} 1' in text, case
    assert "ipvs_up 1" in text
    result = check_metrics(text.encode())
    assert result.returncode == 0, result.stdout


def test_stats_file_missing(sources: Any, tree: Path) -> None:
    """Either a failing stats source or IPVS not loaded: never a crash or an error status."""
    (tree / "net/ip_vs_stats").unlink()
    text = _scrape(sources, tree).decode()
    assert 'ipvs_scrape_source_success{source="stats"} 0' in text or "ipvs_up 0" in text


def test_not_loaded_tree(sources: Any, tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    text = _scrape(sources, tmp_path).decode()
    assert "ipvs_up 0" in text and "ipvs_backend_weight" not in text


def test_cli_once(sources: Any, nat_proc: Path) -> None:
    from lvsprobe.cli import cli

    result = CliRunner().invoke(
        cli,
        ["export", "--procfs-root", str(nat_proc), "--once", "--collector.services.exclude", ":53"],
    )
    assert result.exit_code == 0, result.output
    assert "ipvs_up 1" in result.stdout and 'port="53"' not in result.stdout


def test_cli_errors(tmp_path: Path, nat_proc: Path) -> None:
    from lvsprobe.cli import cli

    runner = CliRunner()
    bad = runner.invoke(cli, ["export", "--collector.services.include", "10.0.0.0/33", "--once"])
    assert bad.exit_code == 2 and "--collector.services.include" in bad.stderr
    bad = runner.invoke(cli, ["export", "--collector.ipvs.backend-labels", "vip", "--once"])
    assert bad.exit_code == 2 and "unknown label" in bad.stderr
    bad = runner.invoke(
        cli, ["export", "--web.listen-address", "nope", "--procfs-root", str(nat_proc)]
    )
    assert bad.exit_code == 2 and "--web.listen-address" in bad.stderr
    names = tmp_path / "names.yml"
    names.write_text("10.0.0.1:80/tcpx: web\n")
    bad = runner.invoke(
        cli, ["export", "--names", str(names), "--procfs-root", str(nat_proc), "--once"]
    )
    assert bad.exit_code == 1
    assert bad.stderr.count("\n") == 1 and "names.yml" in bad.stderr


def test_cli_pid_reads_the_namespace_of_a_process(
    sources: Any, monkeypatch: pytest.MonkeyPatch, nat_proc: Path
) -> None:
    """--pid (repeatable, with --netns) makes one Target per process, labelled by pid."""
    from lvsprobe.cli import cli
    from lvsprobe.model import Snapshot

    read: list[Any] = []

    def fake_read(target: Any, **kw: Any) -> Snapshot:
        read.append(target)
        return Snapshot(loaded=False, via="procfs")

    monkeypatch.setattr(sources, "read_snapshot", fake_read)
    runner = CliRunner()
    pid = os.getpid()
    result = runner.invoke(cli, ["export", "--pid", str(pid), "--once"])
    assert result.exit_code == 0, result.output
    assert [(t.pid, t.netns) for t in read] == [(pid, None)]
    assert "ipvs_up 0" in result.stdout and "netns=" not in result.stdout
    read.clear()
    result = runner.invoke(cli, ["export", "--pid", str(pid), "--netns", "blue", "--once"])
    assert result.exit_code == 0, result.output
    assert [(t.pid, t.netns) for t in read] == [(None, "blue"), (pid, None)]
    assert f'ipvs_up{{netns="{pid}"}} 0' in result.stdout
    assert 'ipvs_up{netns="blue"} 0' in result.stdout
    bad = runner.invoke(cli, ["export", "--pid", str(pid), "--procfs-root", str(nat_proc)])
    assert bad.exit_code == 2 and "--pid" in bad.stderr
    bad = runner.invoke(cli, ["export", "--pid", "999999999", "--once"])
    assert bad.exit_code == 2 and "no process 999999999" in bad.stderr
