"""The scale load for the lab: 10^4-10^5 real servers in one `ipvsadm -R` file, and the
guest-side check that the netlink and /proc readers see the same real-server table.

Host side: `restore_text(services, real_servers_each)` builds the file. Guest side (the venv
Python, numpy on): `python -m lvsprobe.lab.scale compare OUT_DIR` reads both tables in the
current namespace, times `lvsprobe status` (text and --json) and `ipvsadm`, writes their
outputs into OUT_DIR and prints one JSON verdict. The comparison runs in the guest because
the readers must run in the director's namespace anyway; shipping two 10^5-row snapshots
as JSON to the host would cost more than comparing them where they are.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCALE_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh", "sed", "nq", "dh")
V4_FORWARDS = ("-m", "-g", "-i")
MISMATCHES_SHOWN = 20


def _v4(base: int, index: int) -> str:
    """An address of 198.18.0.0/16 (base 18) or 198.19.0.0/16 (base 19): the lab range."""
    index %= 1 << 16
    return f"198.{base}.{index >> 8}.{index & 255}"


def restore_text(services: int, real_servers_each: int) -> str:
    """An `ipvsadm -R` file of `services` services with `real_servers_each` real servers:
    mostly IPv4 TCP/UDP, one in 1000 IPv6 and one in 1000 fwmark; every scheduler of
    SCALE_SCHEDULERS, every forwarding method, persistence (some with a netmask),
    thresholds and a zero weight, so every column and format branch is exercised."""
    lines = []
    for i in range(services):
        scheduler = SCALE_SCHEDULERS[i % len(SCALE_SCHEDULERS)]
        options = f"-s {scheduler}"
        if i % 7 == 0:
            options += " -p 300" + (" -M 255.255.255.0" if i % 14 == 0 else "")
        if i % 1000 == 1:
            service = f"-t [2001:db8:18::{i:x}]:80"
        elif i % 1000 == 2:
            service = f"-f {i + 1}"
        else:
            service = f"{'-u' if i % 5 == 4 else '-t'} {_v4(18, i + 1)}:{80 + i // (1 << 16)}"
        lines.append(f"-A {service} {options}")
        for j in range(real_servers_each):
            row = i * real_servers_each + j
            if i % 1000 == 1:
                real = f"[2001:db8:19::{row >> 16:x}:{row & 0xFFFF:x}]:8080 {('-m', '-g')[j % 2]}"
            elif i % 1000 == 2:
                real = f"{_v4(19, row)} -g"
            else:
                real = f"{_v4(19, row)}:{8080 + j} {V4_FORWARDS[(i + j) % 3]}"
            weight = 0 if j == real_servers_each - 1 and i % 3 == 0 else j + 1
            limits = " -x 1000 -y 100" if i % 11 == 0 else ""
            lines.append(f"-a {service} -r {real} -w {weight}{limits}")
    return "\n".join(lines) + "\n"


def _rows(snapshot: Any) -> dict[str, list[tuple[object, ...]]]:
    """Real-server rows by service, as the columns both readers have."""
    by_service: dict[str, list[tuple[object, ...]]] = {}
    for service in snapshot.services:
        rows = service.real_servers
        table, start, stop = rows.table, rows.start, rows.stop
        columns = (
            table.address_families,
            table.address_numbers,
            table.ports,
            table.forwards,
            table.weights,
            table.active_conns,
            table.inactive_conns,
        )
        by_service[str(service.key)] = [
            tuple(str(c[n]) for c in columns) for n in range(start, stop)
        ]
    return by_service


def table_mismatches(netlink: Any, procfs: Any) -> tuple[int, list[str]]:
    """(real servers compared, the first MISMATCHES_SHOWN differences) between two snapshots."""
    left, right = _rows(netlink), _rows(procfs)
    found: list[str] = []
    compared = 0
    for key in sorted(left.keys() | right.keys()):
        mine, theirs = left.get(key), right.get(key)
        if mine is None or theirs is None:
            found.append(f"{key}: only in {'procfs' if mine is None else 'netlink'}")
            continue
        compared += min(len(mine), len(theirs))
        if len(mine) != len(theirs):
            found.append(f"{key}: {len(mine)} real servers by netlink, {len(theirs)} by procfs")
        found.extend(
            f"{key} row {n}: netlink {a} != procfs {b}"
            for n, (a, b) in enumerate(zip(mine, theirs, strict=False))
            if a != b
        )
        if len(found) >= MISMATCHES_SHOWN:
            break
    return compared, found[:MISMATCHES_SHOWN]


# Runs the lvsprobe CLI, then writes its own VmHWM to the file named by argv[1]: a fresh
# exec has a fresh mm, whereas wait4's ru_maxrss also counts the forking parent's peak.
_PEAK_RSS_WRAPPER = """
import atexit, pathlib, runpy, sys
peak_file = pathlib.Path(sys.argv.pop(1))
def record():
    status = pathlib.Path("/proc/self/status").read_text().splitlines()
    peak_file.write_text(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
atexit.register(record)
sys.argv[0] = "lvsprobe"
runpy.run_module("lvsprobe", run_name="__main__", alter_sys=True)
"""


def timed(argv: list[str], out: Path) -> dict[str, float]:
    """Run `argv` with stdout to `out`: its wall seconds and CPU seconds."""
    started = time.perf_counter()
    with out.open("wb") as sink:
        proc = subprocess.Popen(argv, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - started
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {stderr.strip()}")
    return {"wall_s": round(wall_s, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}


def timed_cli(args: list[str], out: Path) -> dict[str, float]:
    """`lvsprobe ARGS` timed like `timed`, plus its peak RSS in MB (VmHWM at exit)."""
    peak_file = out.with_suffix(".peak-kb")
    figures = timed([sys.executable, "-c", _PEAK_RSS_WRAPPER, str(peak_file), *args], out)
    return {**figures, "peak_rss_mb": round(int(peak_file.read_text()) / 1024, 1)}


def compare(out_dir: Path) -> dict[str, Any]:
    """Read both tables here, write the status and ipvsadm views to `out_dir`, say what
    differs, with the figures of each (the connection-table summary, which ipvsadm -Ln
    does not print, is left out)."""
    from lvsprobe.sources import read_snapshot

    started = time.perf_counter()
    netlink = read_snapshot(conns="off")
    procfs = read_snapshot(conns="off", netlink=False)
    read_s = time.perf_counter() - started
    compared, mismatches = table_mismatches(netlink, procfs)
    return {
        "real_servers": compared,
        "mismatches": mismatches,
        "failures": [str(f) for snap in (netlink, procfs) for f in snap.failures],
        "both_reads_s": round(read_s, 2),
        "compare_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ipvsadm": timed(["ipvsadm", "-Ln", "--exact", "--stats"], out_dir / "ipvsadm.txt"),
        "status": timed_cli(["status", "--exact", "--stats", "--no-conns"], out_dir / "status.txt"),
    }


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] != "compare":
        sys.exit("usage: python -m lvsprobe.lab.scale compare OUT_DIR")
    print(json.dumps(compare(Path(sys.argv[2]))))


if __name__ == "__main__":
    main()
