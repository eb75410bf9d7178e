"""The exporter picks up a changed --names file without a restart, as a ConfigMap mount changes
it (the `..data` symlink swapped to a new directory), and a broken new file keeps the names."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from lvsprobe.errors import ParseError
from lvsprobe.exporter import names as names_module
from lvsprobe.exporter.names import NamesFile
from lvsprobe.exporter.scrape import ExportOptions, Scraper
from lvsprobe.model import Snapshot

WEB = "198.18.1.100:80/tcp"


class ConfigMapMount:
    """A directory laid out as the kubelet mounts a ConfigMap: `names.yml -> ..data/names.yml`,
    `..data -> ..<version>`; an update writes a new version and renames a new `..data` over."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.versions = 0
        self.path = root / "names.yml"

    def publish(self, text: str) -> None:
        self.versions += 1
        version = self.root / f"..2024_01_01_00_00_{self.versions:02d}.000000001"
        version.mkdir()
        (version / "names.yml").write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(version.name)
        os.replace(tmp, self.root / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to("..data/names.yml")


@pytest.fixture
def mount(tmp_path: Path) -> ConfigMapMount:
    m = ConfigMapMount(tmp_path)
    m.publish(f"{WEB}: web\n")
    return m


def scrape_text(scraper: Scraper) -> str:
    return scraper.scrape().decode()


@pytest.fixture
def scraper(mount: ConfigMapMount, make_snapshot: Callable[..., Snapshot]) -> Scraper:
    options = ExportOptions(names=NamesFile(mount.path))
    return Scraper(options, read=lambda target, **kw: make_snapshot())


def name_of_web(text: str) -> str | None:
    for line in text.splitlines():
        if (
            line.startswith("ipvs_service_name_info{")
            and 'address="198.18.1.100",port="80"' in line
        ):
            return line.split('name="')[1].split('"')[0]
    return None


def test_configmap_update_is_served_without_restart(
    mount: ConfigMapMount, scraper: Scraper
) -> None:
    text = scrape_text(scraper)
    assert name_of_web(text) == "web"
    assert 'ipvs_scrape_source_success{source="names"} 1' in text
    mount.publish(f"{WEB}: shop\n")
    text = scrape_text(scraper)
    assert name_of_web(text) == "shop"
    assert 'ipvs_scrape_source_success{source="names"} 1' in text


def test_broken_update_keeps_the_names_logs_once_and_shows(
    mount: ConfigMapMount, scraper: Scraper, caplog: pytest.LogCaptureFixture
) -> None:
    scrape_text(scraper)
    mount.publish(f"{WEB}: web\n10.0.0.1:80/tcpx: oops\n")
    with caplog.at_level(logging.INFO, logger="lvsprobe.exporter"):
        for _ in range(3):
            text = scrape_text(scraper)
            assert name_of_web(text) == "web"
            assert 'ipvs_scrape_source_success{source="names"} 0' in text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "keeping the 1 names read before" in warnings[0] and "10.0.0.1:80/tcpx" in warnings[0]
    caplog.clear()
    mount.publish(f"{WEB}: fixed\n")
    with caplog.at_level(logging.INFO, logger="lvsprobe.exporter"):
        text = scrape_text(scraper)
    assert name_of_web(text) == "fixed"
    assert 'ipvs_scrape_source_success{source="names"} 1' in text
    assert [r.getMessage() for r in caplog.records] == [
        f"names file reloaded: path={mount.path} names=1"
    ]


def test_removed_file_keeps_the_names_until_it_is_back(mount: ConfigMapMount) -> None:
    names = NamesFile(mount.path)
    (mount.root / "..data").unlink()
    read = names.refresh()
    assert read.error is not None and "cannot read" in read.error
    assert read.names.by_key  # the names read before
    mount.publish(f"{WEB}: back\n")
    read = names.refresh()
    assert read.error is None and list(read.names.by_key.values()) == ["back"]


def test_unchanged_file_is_not_read_again(
    mount: ConfigMapMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = NamesFile(mount.path)
    reads: list[Path] = []
    real = names_module.read_names

    def counting(path: Path) -> names_module.ServiceNames:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(names_module, "read_names", counting)
    for _ in range(5):
        assert names.refresh().error is None
    assert reads == []
    mount.publish(f"{WEB}: other\n")
    names.refresh()
    names.refresh()
    assert len(reads) == 1


def test_rewritten_in_place_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "names.yml"
    path.write_text(f"{WEB}: a\n")
    names = NamesFile(path)
    path.write_text(f"{WEB}: longer\n")  # same inode: size (and mtime) tell
    assert list(names.refresh().names.by_key.values()) == ["longer"]


def test_broken_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "names.yml"
    path.write_text("- not a mapping\n")
    with pytest.raises(ParseError, match="mapping"):
        NamesFile(path)
    with pytest.raises(ParseError, match="cannot read"):
        NamesFile(tmp_path / "missing.yml")


def test_concurrent_scrapes_see_one_version_or_the_other(mount: ConfigMapMount) -> None:
    names = NamesFile(mount.path)
    seen: set[str] = set()
    errors: list[Exception] = []

    def scrape_loop() -> None:
        try:
            for _ in range(200):
                read = names.refresh()
                seen.update(read.names.by_key.values())
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=scrape_loop) for _ in range(4)]
    for t in threads:
        t.start()
    for n in range(20):
        mount.publish(f"{WEB}: v{n}\n")
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert seen <= {"web", *(f"v{n}" for n in range(20))}
    assert list(names.refresh().names.by_key.values()) == ["v19"]


def test_a_scrape_during_a_reload_does_not_wait_for_it(
    mount: ConfigMapMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = NamesFile(mount.path)
    entered, release = threading.Event(), threading.Event()
    real = names_module.read_names

    def slow(path: Path) -> names_module.ServiceNames:
        entered.set()
        assert release.wait(timeout=60)  # a safety bound, never reached in a passing run
        return real(path)

    monkeypatch.setattr(names_module, "read_names", slow)
    mount.publish(f"{WEB}: new\n")
    reloading = threading.Thread(target=names.refresh)
    reloading.start()
    assert entered.wait(timeout=60)
    during = names.refresh()  # returns while the reload is still blocked
    assert not release.is_set()
    assert list(during.names.by_key.values()) == ["web"] and during.error is None
    release.set()
    reloading.join(timeout=60)
    assert list(names.refresh().names.by_key.values()) == ["new"]
