"""The scale load file and the guest-side table comparison, without the VM."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

from lvsprobe.lab.scale import MISMATCHES_SHOWN, restore_text, table_mismatches
from lvsprobe.model.service_rows import RealServerRows
from lvsprobe.sources import Target, read_snapshot

LAB_V4 = ipaddress.ip_network("198.18.0.0/15")
DOC_V6 = ipaddress.ip_network("2001:db8::/32")


def test_restore_text_stays_in_the_lab_ranges_and_covers_every_format() -> None:
    text = restore_text(3000, 10)
    lines = text.splitlines()
    assert len(lines) == 3000 * 11
    for v6 in re.findall(r"\[([0-9a-f:]+)\]", text):
        assert ipaddress.IPv6Address(v6) in DOC_V6
    for v4 in re.findall(r"-[tur] (\d+\.\d+\.\d+\.\d+)", text):
        assert ipaddress.IPv4Address(v4) in LAB_V4
    for needle in (" -u ", " -f ", " -m ", " -g ", " -i ", " -M ", " -x ", " -w 0", "[2001:"):
        assert needle in text, needle
    real_servers = {line.split(" -r ")[1].split()[0] + line.split()[2] for line in lines[1:11]}
    assert len(real_servers) == 10


def test_table_mismatches_names_the_service_and_row(nat_proc: Path) -> None:
    snap = read_snapshot(Target(procfs_root=nat_proc), netlink=False, conns="off")
    assert table_mismatches(snap, snap)[1] == []
    first = snap.services[0]
    changed = [dataclasses.replace(rs, weight=rs.weight + 1) for rs in first.real_servers]
    other = dataclasses.replace(
        snap,
        services=(
            dataclasses.replace(first, real_servers=RealServerRows.of(changed)),
            *snap.services[1:],
        ),
    )
    compared, mismatches = table_mismatches(snap, other)
    assert compared == sum(len(s.real_servers) for s in snap.services)
    assert mismatches and len(mismatches) <= MISMATCHES_SHOWN
    assert mismatches[0].startswith(f"{first.key} row 0: netlink ")
