"""Memory: slab bytes per entry, the fit, projections, and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from lvsprobe.analyze.memory import (
    MemorySample,
    analyze_memory,
    append_sample,
    read_samples,
    sample_from_snapshot,
)
from lvsprobe.cli import cli
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import AnalysisError
from lvsprobe.model import ConnSummary, Slab, Snapshot


def fill(entries: list[int], objsize: int = 320, per_slab: int = 12) -> list[MemorySample]:
    """Samples as SLUB would report them: whole slabs of `per_slab` objects."""
    return [
        MemorySample(
            entries=n,
            num_objs=-(-n // per_slab) * per_slab,
            active_objs=n,
            slab_object_size=objsize,
            objs_per_slab=per_slab,
            pages_per_slab=1,
            object_size=288,
            conn_table_size=4096,
        )
        for n in entries
    ]


def test_fit_lands_on_page_bytes_per_object() -> None:
    result = analyze_memory(fill(list(range(0, 20001, 1000))))
    assert result.fit_bytes_per_entry == pytest.approx(4096 / 12, rel=0.01)
    assert result.passed  # 341 B is within 10 % of the 320 B object
    assert result.bucket_bytes == 4096 * 8
    assert result.projections[1_000_000] == round(1_000_000 * 4096 / 12 + 32768)
    doc = result.to_json()
    assert doc["vs_paper"] > 2.5


def test_a_fat_debug_kernel_fails_the_tolerance() -> None:
    samples = fill(list(range(0, 20001, 1000)), objsize=320, per_slab=6)  # 683 B/entry
    assert not analyze_memory(samples).passed


def test_too_few_samples_or_no_growth() -> None:
    with pytest.raises(AnalysisError, match="at least 2"):
        analyze_memory(fill([10]))
    with pytest.raises(AnalysisError, match="did not change"):
        analyze_memory(fill([10, 10]))


def test_sample_from_snapshot() -> None:
    slab = Slab(
        active_objs=100,
        num_objs=108,
        slab_object_size=320,
        objs_per_slab=12,
        pages_per_slab=1,
        object_size=288,
    )
    snap = Snapshot(
        loaded=True,
        via="procfs",
        slab=slab,
        conn_table_size=4096,
        conns=ConnSummary(counts={}, total=100),
    )
    s = sample_from_snapshot(snap)
    assert (s.entries, s.slab_bytes) == (100, 9 * 4096)
    with pytest.raises(AnalysisError, match="slab_nomerge"):
        sample_from_snapshot(dataclasses.replace(snap, slab=dataclasses.replace(slab, merged=True)))
    with pytest.raises(AnalysisError, match="no ip_vs_conn slab"):
        sample_from_snapshot(dataclasses.replace(snap, slab=None))


def test_cli(tmp_path: Path) -> None:
    path = tmp_path / "memory-samples.json"
    path.write_text(json.dumps([dataclasses.asdict(s) for s in fill([0, 5000, 10000])]))
    res = CliRunner().invoke(cli, ["analyze", "memory", str(tmp_path), "--project", "1000000"])
    assert res.exit_code == ExitCode.OK, res.output
    assert "341.3 B/entry" in res.output
    assert (tmp_path / "analysis" / "memory.html").is_file()
    path.write_text("[{}]")
    res = CliRunner().invoke(cli, ["analyze", "memory", str(tmp_path)])
    assert res.exit_code == ExitCode.ERROR and "not a list of memory samples" in res.output


def test_append_sample_builds_a_fill_run(tmp_path: Path) -> None:
    path = tmp_path / "memory-samples.json"
    for s in fill([0, 1200, 2400]):
        count = append_sample(path, s)
    assert count == 3
    assert analyze_memory(read_samples(path)).passed


def test_spare_objects_before_the_fill_do_not_bias_the_slope() -> None:
    # 144 objects allocated, none used: the first 144 entries do not grow the slab
    samples = [
        MemorySample(n, max(144, -(-n // 12) * 12), n, 320, 12, 1, 288, 4096)
        for n in range(0, 3001, 100)
    ]
    result = analyze_memory(samples)
    assert result.fit_samples == 29
    assert result.fit_bytes_per_entry == pytest.approx(4096 / 12, rel=0.005)
