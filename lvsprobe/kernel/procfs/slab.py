"""The ip_vs_conn slab: /proc/slabinfo and /sys/kernel/slab/ip_vs_conn (docs/kernel/procfs.md#slab).

One cache (`KMEM_CACHE(ip_vs_conn, SLAB_HWCACHE_ALIGN)`) holds the connections and
templates of all namespaces. SLUB may merge it into another cache of the same size (the
default unless `slab_nomerge`): then slabinfo has no `ip_vs_conn` row and the sysfs entry
is a symlink to the merged cache (e.g. `:0000320`), whose counts include other users.
Both files are 0400: without root the slab cannot be read, and the reader says so.
"""

from __future__ import annotations

from pathlib import Path

from lvsprobe.errors import ParseError
from lvsprobe.kernel.procfs import _hex
from lvsprobe.kernel.procfs._read import read_optional_text, read_proc_text
from lvsprobe.kernel.procfs.limits import SLABINFO_MAX_BYTES, SYSFS_MAX_BYTES
from lvsprobe.model import Slab

SLABINFO = "slabinfo"
SLAB_DIR = "kernel/slab/ip_vs_conn"
CONN_TAB_BITS = "module/ip_vs/parameters/conn_tab_bits"
_INT_MAX = (1 << 63) - 1


def parse_slabinfo(text: str, source: str = SLABINFO) -> Slab | None:
    """The `ip_vs_conn` row of /proc/slabinfo (version 2.x), or None when it has none."""
    lines = _hex.split_lines(text)
    if not lines:
        raise ParseError(source, None, None, "empty file: expected 'slabinfo - version: 2.x'")
    if not lines[0].startswith("slabinfo - version: 2."):
        raise ParseError(source, 1, lines[0], "expected 'slabinfo - version: 2.x'")
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split()
        if not fields or fields[0] != "ip_vs_conn":
            continue  # the other caches' rows and the '# name' comment are not ours
        # name active_objs num_objs objsize objperslab pagesperslab : tunables … : slabdata …
        if len(fields) < 6:
            raise ParseError(
                source, line_no, line, f"expected at least 6 fields, got {len(fields)}"
            )
        try:
            active, total, objsize, per_slab, pages = (
                _hex.decimal(tok, 0, _INT_MAX) for tok in fields[1:6]
            )
        except ValueError as exc:
            raise ParseError(source, line_no, line, str(exc)) from exc
        return Slab(
            active_objs=active,
            num_objs=total,
            slab_object_size=objsize,
            objs_per_slab=per_slab,
            pages_per_slab=pages,
        )
    return None


def parse_sysfs_number(name: str, text: str) -> int:
    """One `/sys/kernel/slab/<cache>/<name>` file: a number, maybe followed by per-node
    counts (`objects:912 N0=912` is printed as `912 N0=912`)."""
    fields = text.split()
    if not fields:
        raise ParseError(f"{SLAB_DIR}/{name}", 1, text, "expected a number, got an empty file")
    try:
        return _hex.decimal(fields[0], 0, _INT_MAX)
    except ValueError as exc:
        raise ParseError(f"{SLAB_DIR}/{name}", 1, text, str(exc)) from exc


def parse_conn_tab_bits(text: str) -> int:
    """/sys/module/ip_vs/parameters/conn_tab_bits: log2 of the connection hash-table size."""
    lines = _hex.split_lines(text)
    line = lines[0] if lines else ""
    try:
        return _hex.decimal(line.strip(), 0, 64)
    except ValueError as exc:
        raise ParseError(CONN_TAB_BITS, 1, line, str(exc)) from exc


def read_conn_tab_bits(sys_root: Path) -> int | None:
    """The module parameter, or None when /sys shows no ip_vs module (not loaded)."""
    text = read_optional_text(sys_root, CONN_TAB_BITS, max_bytes=SYSFS_MAX_BYTES)
    return None if text is None else parse_conn_tab_bits(text)


def read_slab(proc_root: Path, sys_root: Path | None) -> Slab:
    """The ip_vs_conn slab from `proc_root/slabinfo` and `sys_root/kernel/slab/ip_vs_conn/*`.

    Its own cache: counts (active/num objs, pages per slab) come from the slabinfo row;
    `object_size` (sizeof(struct ip_vs_conn)) and the slot size from sysfs when readable.
    Merged (the sysfs entry is a symlink): the kernel counts no objects of its own, so there
    are only the slot size and objects per slab, read from sysfs; `object_size` is None (the
    alias reports the merged cache's largest object).

    Raises rather than return less than the kernel shows: `NotPermitted` (the files are 0400),
    `ParseError` when a file is missing, malformed, or slabinfo has no row while sysfs does
    not show the cache merged.
    """
    if sys_root is not None and (sys_root / SLAB_DIR).is_symlink():
        return Slab(
            active_objs=None,
            num_objs=None,
            slab_object_size=_read_sysfs_number(sys_root, "slab_size"),
            objs_per_slab=_read_sysfs_number(sys_root, "objs_per_slab"),
            pages_per_slab=None,
            merged=True,
        )
    text = read_proc_text(proc_root, SLABINFO, max_bytes=SLABINFO_MAX_BYTES, ipvs_file=False)
    row = parse_slabinfo(text)
    if row is None:
        raise ParseError(SLABINFO, None, None, _no_row(sys_root))
    sysfs: dict[str, int] = {}
    if sys_root is not None:  # extras: unreadable ones leave nothing the row does not give
        for name in ("object_size", "slab_size", "objs_per_slab"):
            path = f"{SLAB_DIR}/{name}"
            extra = read_optional_text(sys_root, path, max_bytes=SYSFS_MAX_BYTES)
            if extra is not None:
                sysfs[name] = parse_sysfs_number(name, extra)
    return Slab(
        active_objs=row.active_objs,
        num_objs=row.num_objs,
        slab_object_size=sysfs.get("slab_size", row.slab_object_size),
        objs_per_slab=sysfs.get("objs_per_slab", row.objs_per_slab),
        pages_per_slab=row.pages_per_slab,
        object_size=sysfs.get("object_size"),
    )


def _read_sysfs_number(sys_root: Path, name: str) -> int:
    text = read_proc_text(
        sys_root, f"{SLAB_DIR}/{name}", max_bytes=SYSFS_MAX_BYTES, ipvs_file=False
    )
    return parse_sysfs_number(name, text)


def _no_row(sys_root: Path | None) -> str:
    """Why a slabinfo without an ip_vs_conn row (while IPVS is loaded, so the cache exists)
    cannot be read: merged into another cache, but /sys cannot say which."""
    if sys_root is None:
        where = "no /sys tree given (--sysfs-root) to tell whether it is merged"
    else:
        where = f"{sys_root / SLAB_DIR} is no symlink to the cache it is merged into"
    return f"no ip_vs_conn row, and {where}"
