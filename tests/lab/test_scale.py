"""Correctness at kube-proxy scale on the real kernel: 10^5 real servers in lvs1.

One `ipvsadm -R` loads 10,000 services x 10 real servers (IPv4/IPv6, TCP/UDP/fwmark, eight
schedulers, NAT/DR/TUN, persistence, thresholds). Then one guest run of the venv Python
(lvsprobe.lab.scale) reads the netlink and /proc tables and compares them where they are,
and writes `lvsprobe status --exact --stats` and `ipvsadm -Ln --exact --stats` into the
shared directory, compared here whole-file. The entries are cleared afterwards.

lvs2's services are cleared first: the kernel's service table is one for all namespaces and
/proc/net/ip_vs's seq position counts other namespaces' services, so a read that restarts
(each ~4 KiB) skips as many of lvs1's as it passed of lvs2's (6.1: 6 of 10,000 lost). That is
a kernel limit of the /proc reader, measured here once, not a disagreement to test each run.
"""

from __future__ import annotations

import difflib
import json
import sys
from typing import Any

import pytest

from lvsprobe.lab.scale import restore_text

pytestmark = pytest.mark.lab

SERVICES = 10_000
REAL_SERVERS_EACH = 10
DIFF_LINES_SHOWN = 40


def first_differences(ours: str, theirs: str) -> str:
    diff = difflib.unified_diff(
        theirs.splitlines(), ours.splitlines(), "ipvsadm", "lvsprobe status", lineterm="", n=1
    )
    return "\n".join(line for _, line in zip(range(DIFF_LINES_SHOWN), diff, strict=False))


def test_readers_and_status_agree_at_1e5_real_servers(lab: Any) -> None:
    lab.ensure()
    out = lab.shared_dir / "scale"
    out.mkdir(exist_ok=True)
    restore = out / "load.ipvsadm"
    restore.write_text(restore_text(SERVICES, REAL_SERVERS_EACH))
    lab.mark_dirty()
    try:
        lab.run("lvs2", ["ipvsadm", "-C"], timeout=300).check()
        lab.sh("lvs1", f"ipvsadm -C && ipvsadm -R < {restore}", timeout=900).check()
        argv = [sys.executable, "-m", "lvsprobe.lab.scale", "compare", str(out)]
        verdict = json.loads(lab.run("lvs1", argv, timeout=1200).check().stdout)
        print(json.dumps(verdict, indent=1))
        assert verdict["failures"] == []
        assert verdict["mismatches"] == [], "\n".join(verdict["mismatches"])
        assert verdict["real_servers"] == SERVICES * REAL_SERVERS_EACH
        ours, theirs = (out / "status.txt").read_text(), (out / "ipvsadm.txt").read_text()
        assert len(theirs.splitlines()) > SERVICES * (REAL_SERVERS_EACH + 1)
        assert ours == theirs, first_differences(ours, theirs)
    finally:
        lab.run("lvs1", ["ipvsadm", "-C"], timeout=300)
        lab.mark_dirty()
