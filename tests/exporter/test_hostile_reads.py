"""The exporter on hostile /proc trees: a device, FIFO, directory or huge file in a tree costs
its source (success 0, one log line), never the scrape; a scrape reads within its deadline."""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from lvsprobe.exporter.flights import Scrape, scrape_formats
from lvsprobe.exporter.httpsettings import HTTPLimits
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.exporter.server import ExporterServer
from lvsprobe.kernel.procfs import ip_vs
from lvsprobe.sources import Target, read_snapshot

pytestmark = pytest.mark.timeout(60)  # a blocking read must fail the test, not hang the run


def _sparse(path: Path, size: int) -> None:
    with path.open("ab") as f:
        f.truncate(size)


def _swap(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def spoil(path: Path) -> None:
        path.unlink()
        make(path)

    return spoil


SPOILERS: dict[str, Callable[[Path], None]] = {
    "/dev/zero": _swap(lambda p: p.symlink_to("/dev/zero")),
    "/dev/urandom": _swap(lambda p: p.symlink_to("/dev/urandom")),
    "FIFO": _swap(os.mkfifo),
    "directory": _swap(Path.mkdir),
    "sparse 20 GiB": lambda p: _sparse(p, 20 << 30),
}
FILES = {
    "net/ip_vs": "services",
    "net/ip_vs_stats": "stats",
    "net/ip_vs_conn_sync": "conns",
    "sys/net/ipv4/vs/amemthresh": "sysctls",
    "slabinfo": "slab",
}


@pytest.fixture
def tree(tmp_path: Path, nat_proc: Path) -> Path:
    root = tmp_path / "proc"
    shutil.copytree(nat_proc, root)
    return root


def _scraper(root: Path, **options: Any) -> Scraper:
    targets = (Target(procfs_root=root),)
    return Scraper(ExportOptions(targets=targets, netlink=False, **options), **_no_logs())


def _no_logs() -> dict[str, Any]:
    return {"logger": logging.getLogger("test.hostile"), "build": ("0.1.0", "3.11.0")}


@pytest.mark.parametrize("spoiler", list(SPOILERS))
@pytest.mark.parametrize("relative", list(FILES))
def test_a_hostile_file_costs_its_source_only(
    tree: Path, relative: str, spoiler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ip_vs, "IP_VS_MAX_BYTES", 1 << 20)  # not 256 MiB of zeros per test
    SPOILERS[spoiler](tree / relative)
    text = b"".join(_scraper(tree).stream()).decode()
    assert "ipvs_up 1\n" in text
    source = FILES[relative]
    assert f'ipvs_scrape_source_success{{source="{source}"}} 0\n' in text
    others = set(FILES.values()) - {source}
    for other in others:
        assert f'ipvs_scrape_source_success{{source="{other}"}} 1\n' in text


def test_the_slab_source_fails_when_slabinfo_is_unreadable(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """exporters/README: a non-root exporter reports the slab failed, and the memory estimate
    assumes 320-byte entries; before, it reported success and dropped the slab series."""
    real_open = os.open

    def as_non_root(path: Any, *args: Any, **kwargs: Any) -> int:
        if Path(path).name == "slabinfo":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", as_non_root)
    text = b"".join(_scraper(tree).stream()).decode()
    assert 'ipvs_scrape_source_success{source="slab"} 0\n' in text
    assert "ipvs_conn_slab_" not in text
    entries = 455 - 1  # the rows of the fixture's ip_vs_conn_sync, header aside
    assert f"ipvs_conn_table_memory_bytes {entries * 320 + 4096 * 8}\n" in text


def _stepping_clock() -> Callable[[], float]:
    """Each look at the clock is one second later: the deadline falls between sources."""
    ticks = itertools.count()
    return lambda: float(next(ticks))


def test_sources_left_at_the_deadline_report_failure_and_log_once(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("test.deadline")
    options = ExportOptions(targets=(Target(procfs_root=tree),), netlink=False, read_timeout_s=2.5)
    scraper = Scraper(options, logger=logger, clock=_stepping_clock())
    for _ in range(3):
        # looks: deadline set t, services t+1, stats t+2, conns t+3 (> t+2.5): the rest unread
        with caplog.at_level(logging.WARNING, logger="test.deadline"):
            text = b"".join(scraper.stream()).decode()
        for source, success in (("services", 1), ("stats", 1), ("conns", 0), ("sysctls", 0)):
            assert f'ipvs_scrape_source_success{{source="{source}"}} {success}\n' in text
        assert "ipvs_conn_entries{" not in text and "ipvs_sysctl{" not in text
    lines = [r.getMessage() for r in caplog.records]
    # one line per source for the first scrape; the same error again logs nothing
    assert len(lines) == 3, lines
    assert all("the scrape deadline (2.5 s) passed" in line for line in lines)


def test_a_zero_read_timeout_reads_nothing_but_never_raises(tree: Path) -> None:
    text = b"".join(_scraper(tree, read_timeout_s=0.0).stream()).decode()
    assert 'ipvs_scrape_source_success{source="services"} 0\n' in text
    assert "ipvs_backend_weight" not in text


@pytest.mark.parametrize(
    ("read_timeout_s", "announced_s", "budget_s"),
    [
        (9.0, None, 9.0),
        (9.0, 10.0, 9.0),
        (9.0, 5.0, 4.5),  # Prometheus' scrape_timeout less the margin to send
        (9.0, 0.4, 0.2),  # never less than half of what was announced
        (None, 3.0, 2.5),
        (None, None, None),
    ],
)
def test_the_deadline_takes_the_announced_timeout_into_account(
    read_timeout_s: float | None, announced_s: float | None, budget_s: float | None
) -> None:
    scraper = Scraper(ExportOptions(read_timeout_s=read_timeout_s), clock=lambda: 100.0)
    deadline = scraper.deadline(announced_s)
    if budget_s is None:
        assert deadline is None
    else:
        assert deadline is not None and deadline.budget_s == budget_s
        assert deadline.at_s == 100.0 + budget_s


def test_a_stream_closed_early_has_finished_reading(tree: Path) -> None:
    reads: list[object] = []

    def counting_reader(target: Any, **kw: Any) -> Any:
        reads.append(kw["deadline"])
        return read_snapshot(target, **kw)

    options = ExportOptions(targets=(Target(procfs_root=tree),), netlink=False)
    chunks = Scraper(options, read=counting_reader, **_no_logs()).stream(timeout_s=10)
    next(chunks)
    chunks.close()  # the client went away after the first chunk
    assert len(reads) == 1 and reads[0] is not None


@contextmanager
def _serve(scrape: Scrape, max_requests: int) -> Iterator[str]:
    limits = HTTPLimits(max_scrapes=max_requests)
    server = ExporterServer(("127.0.0.1", 0), scrape, limits=limits)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_a_fifo_in_the_tree_does_not_wedge_the_exporter(tree: Path) -> None:
    """Before: each scrape blocked opening the FIFO; 41 of them held all 40 slots for good."""
    (tree / "net/ip_vs_conn_sync").unlink()
    os.mkfifo(tree / "net/ip_vs_conn_sync")
    with _serve(scrape_formats(_scraper(tree)), max_requests=40) as url:

        def get(_: int) -> bytes:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body: bytes = resp.read()
                return body

        with ThreadPoolExecutor(max_workers=8) as pool:
            bodies = list(pool.map(get, range(41)))
    assert all(b'ipvs_scrape_source_success{source="conns"} 0\n' in b for b in bodies)
