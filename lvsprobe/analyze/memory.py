"""Connection-table memory: bytes per entry from the ip_vs_conn slab, the hash table's buckets,
a least-squares fit of slab memory against entries over a fill run, and a projection.

Facts (docs/kernel/memory.md#entry-size): ip_vs_conn is 288 B on 6.1/6.12 x86_64, slab object 320
(SLAB_HWCACHE_ALIGN), 12 per 4 KiB page -> ~341 B per entry; buckets are 8-byte hlist_heads.
The LVS paper (and Kconfig's help) says 128 bytes.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvsprobe.errors import AnalysisError
from lvsprobe.model import Slab, Snapshot

PAPER_BYTES = 128
PAGE_SIZE = 4096
BUCKET_BYTES = 8  # struct hlist_head on 64-bit
SAMPLES_FILE = "memory-samples.json"


@dataclass(frozen=True, slots=True)
class MemorySample:
    """One reading during a fill run: entries the table held and the slab's numbers."""

    entries: int
    num_objs: int
    active_objs: int
    slab_object_size: int
    objs_per_slab: int
    pages_per_slab: int
    object_size: int | None = None
    conn_table_size: int | None = None
    templates: int = 0
    conntrack: int | None = None

    @property
    def slab_bytes(self) -> int:
        """Memory the cache holds: whole slabs (num_objs / objs_per_slab) of pages."""
        slabs = -(-self.num_objs // self.objs_per_slab)
        return slabs * self.pages_per_slab * PAGE_SIZE


def sample_from_snapshot(snap: Snapshot) -> MemorySample:
    """A sample from a Snapshot read with the slab (and the connection summary)."""
    slab: Slab | None = snap.slab
    if slab is None or slab.num_objs is None or slab.slab_object_size is None:
        raise AnalysisError(
            "no ip_vs_conn slab figures in the snapshot (needs root; a merged cache needs "
            "the kernel option slab_nomerge)"
        )
    if slab.merged:
        raise AnalysisError("the ip_vs_conn cache is merged into another: boot with slab_nomerge")
    entries = snap.conns.total if snap.conns is not None else (slab.active_objs or 0)
    return MemorySample(
        entries=entries,
        num_objs=slab.num_objs,
        active_objs=slab.active_objs or 0,
        slab_object_size=slab.slab_object_size,
        objs_per_slab=slab.objs_per_slab or 1,
        pages_per_slab=slab.pages_per_slab or 1,
        object_size=slab.object_size,
        conn_table_size=snap.conn_table_size,
        templates=snap.conns.templates if snap.conns is not None else 0,
    )


def read_samples(path: Path) -> list[MemorySample]:
    """A JSON list of MemorySample fields (what `lvsprobe analyze memory` writes)."""
    try:
        raw = json.loads(path.read_text())
        return [MemorySample(**{k: v for k, v in d.items() if k != "slab_bytes"}) for d in raw]
    except (OSError, ValueError, TypeError) as exc:
        raise AnalysisError(f"{path}: not a list of memory samples: {exc}") from exc


def append_sample(path: Path, sample: MemorySample) -> int:
    """Add one sample to a samples file (created if missing); returns the sample count."""
    samples = read_samples(path) if path.is_file() else []
    samples.append(sample)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([dataclasses.asdict(s) for s in samples], indent=1) + "\n")
    tmp.replace(path)
    return len(samples)


def fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Least squares y = a + b·x: (slope, intercept, r²)."""
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise AnalysisError("the fill run did not change the number of entries: nothing to fit")
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, intercept, (1 - ss_res / ss_tot) if ss_tot else 1.0


@dataclass
class MemoryResult:
    samples: list[MemorySample]
    object_size: int | None
    slab_object_size: int
    per_entry_slab: float  # page bytes / objects per slab
    fit_bytes_per_entry: float
    fit_intercept: float
    fit_r2: float
    buckets: int | None
    bucket_bytes: int | None
    projections: dict[int, int]
    tolerance: float = 0.10
    fit_samples: int = 0

    @property
    def vs_slab_object(self) -> float:
        return self.fit_bytes_per_entry / self.slab_object_size - 1

    @property
    def passed(self) -> bool:
        """The fit within `tolerance` of the slab object size (the lab proof's check)."""
        return abs(self.vs_slab_object) <= self.tolerance

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["samples"] = [
            dict(dataclasses.asdict(s), slab_bytes=s.slab_bytes) for s in self.samples
        ]
        doc["projections"] = {str(k): v for k, v in self.projections.items()}
        doc["paper_bytes"] = PAPER_BYTES
        doc["vs_paper"] = self.fit_bytes_per_entry / PAPER_BYTES
        doc["vs_slab_object"] = self.vs_slab_object
        doc["passed"] = self.passed
        return doc


def analyze_memory(
    samples: Sequence[MemorySample],
    project: Sequence[int] = (1_000_000, 10_000_000),
    tolerance: float = 0.10,
) -> MemoryResult:
    """Fit slab bytes against entries (templates included: they are ip_vs_conn too)."""
    if len(samples) < 2:
        raise AnalysisError(f"need at least 2 memory samples over a fill run, got {len(samples)}")
    last = samples[-1]
    # The cache may hold free objects before the fill (num_objs > entries): the first entries
    # fill those without growing the slab, a flat start that would bias the slope. Fit from
    # the point where that spare capacity is used up, when enough samples remain.
    spare = samples[0].num_objs
    grown = [s for s in samples if s.entries + s.templates > spare]
    used = grown if len(grown) >= max(3, len(samples) // 3) else list(samples)
    xs = [float(s.entries + s.templates) for s in used]
    ys = [float(s.slab_bytes) for s in used]
    slope, intercept, r2 = fit(xs, ys)
    per_entry = last.pages_per_slab * PAGE_SIZE / last.objs_per_slab
    buckets = last.conn_table_size
    bucket_bytes = buckets * BUCKET_BYTES if buckets else None
    projections = {n: round(n * per_entry + (bucket_bytes or 0)) for n in project}
    return MemoryResult(
        samples=list(samples),
        object_size=last.object_size,
        slab_object_size=last.slab_object_size,
        per_entry_slab=per_entry,
        fit_bytes_per_entry=slope,
        fit_intercept=intercept,
        fit_r2=r2,
        buckets=buckets,
        bucket_bytes=bucket_bytes,
        projections=projections,
        tolerance=tolerance,
        fit_samples=len(used),
    )
