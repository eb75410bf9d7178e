"""The readers (lvsprobe.sources: netlink and procfs) against ipvsadm on the real kernel.

One cluster per forwarding mode, each with a plain TCP service, a persistent one (netmask
/24), a UDP one, an fwmark one and (NAT, DR) an IPv6 one; a little traffic; then ONE guest call
takes both snapshots and the ipvsadm views, and they must agree character for character.
"""

from __future__ import annotations

import collections
import ipaddress
import time
from typing import Any

import pytest

from lvsprobe.ipvsadm_view import View, format_daemons, format_list, format_timeout
from lvsprobe.lab.snapshot import GuestViews, guest_views
from lvsprobe.lab.topology import Mode, ServiceSpec, Topology
from lvsprobe.model import Snapshot

pytestmark = pytest.mark.lab

IPVSADM = (
    "-Ln",
    "-Ln --exact --stats",
    "-Ln --persistent-conn",
    "-Ln --thresholds",
    "-Ln --timeout",
    "-Ln --daemon",
    "-Lnc",
)


def readers_topology(mode: Mode) -> Topology:
    services = [
        ServiceSpec("tcp", 80),
        ServiceSpec("tcp", 443, persistence_s=300, netmask="255.255.255.0"),
        ServiceSpec("udp", 7),
        ServiceSpec("tcp", fwmark=1, ports=(7,)),
    ]
    if mode is not Mode.TUN:
        services.append(ServiceSpec("tcp", 80, family="ipv6"))
    return Topology(mode=mode, services=tuple(services), clients=16)


def drive(lab: Any) -> None:
    v4 = list(lab.client_addresses[:6])
    jobs = [
        {"proto": "http", "vip": lab.vip, "sources": v4},
        {"proto": "tcp", "vip": lab.vip, "port": 443, "sources": v4[:4]},
        {"proto": "tcp", "vip": lab.vip, "port": 7, "sources": v4[:3]},
        {"proto": "udp", "vip": lab.vip, "port": 7, "sources": v4[:3]},
    ]
    if lab.topology.mode is not Mode.TUN:
        jobs.append({"proto": "http", "vip": lab.vip6, "sources": list(lab.client_addresses6[:3])})
    results = lab.client_batch(jobs)
    for job, result in zip(jobs, results, strict=True):
        assert result["errors"] == [], (job, result["errors"])


def lnc_counts(text: str) -> collections.Counter[tuple[str, str, str]]:
    """`ipvsadm -Lnc` rows counted by (protocol, state, destination)."""
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for line in text.splitlines()[2:]:
        fields = line.split()
        proto, state, dest = fields[0], fields[2], fields[5]
        host, _, port = dest.rpartition(":")
        counts[(proto, state, f"{ipaddress.ip_address(host.strip('[]'))}:{port}")] += 1
    return counts


def summary_counts(snap: Snapshot) -> collections.Counter[tuple[str, str, str]]:
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    assert snap.conns is not None
    for key, n in snap.conns.counts.items():
        counts[(key.protocol, key.state, f"{key.dest_address}:{key.dest_port}")] += n
    return counts


def agreeing_views(lab: Any) -> GuestViews:
    """Views that agree on the services, counters and connection table: entries may expire
    between two reads and counters move with the 2 s estimator, so a disagreement is re-read,
    a bounded number of times."""
    for _ in range(5):
        views = guest_views(lab, "lvs1", conns="per-real-server", ipvsadm=IPVSADM)
        netlink = views.snapshots["netlink"]
        same_list = format_list(netlink, View.LIST) == views.ipvsadm["-Ln"]
        same_stats = (
            format_list(netlink, View.STATS, exact=True) == views.ipvsadm["-Ln --exact --stats"]
        )
        if (
            same_list
            and same_stats
            and summary_counts(netlink) == lnc_counts(views.ipvsadm["-Lnc"])
        ):
            return views
        time.sleep(1)
    return views


@pytest.mark.parametrize("mode", [Mode.NAT, Mode.DR, Mode.TUN], ids=lambda m: m.value)
def test_readers_agree_with_ipvsadm(lab: Any, mode: Mode) -> None:
    lab.ensure(readers_topology(mode))
    drive(lab)
    # Counters are copied by the kernel's estimator every 2 s, and CLOSE entries live 10 s:
    # wait both out, so the readers and ipvsadm see the same settled state.
    time.sleep(11)
    views = agreeing_views(lab)
    netlink, procfs = views.snapshots["netlink"], views.snapshots["procfs"]
    ipvsadm = views.ipvsadm
    assert netlink.via == "netlink" and procfs.via == "procfs"
    assert netlink.failures == () and procfs.failures == ()

    assert format_list(netlink, View.LIST) == ipvsadm["-Ln"]
    assert format_list(netlink, View.STATS, exact=True) == ipvsadm["-Ln --exact --stats"]
    assert format_list(netlink, View.PERSISTENT_CONN) == ipvsadm["-Ln --persistent-conn"]
    assert format_list(netlink, View.THRESHOLDS) == ipvsadm["-Ln --thresholds"]
    assert netlink.timeouts is not None
    assert format_timeout(netlink.timeouts) == ipvsadm["-Ln --timeout"]
    assert format_daemons(netlink.daemons) == ipvsadm["-Ln --daemon"]
    assert summary_counts(netlink) == lnc_counts(ipvsadm["-Lnc"])

    # the procfs view of the same moment: same services, same table
    assert format_list(procfs, View.LIST) == format_list(netlink, View.LIST)
    assert summary_counts(procfs) == summary_counts(netlink)
    assert procfs.totals == netlink.totals

    assert any(s.key.is_fwmark and s.stats and s.stats.conns for s in netlink.services)
    assert any(s.persistence is not None for s in netlink.services)
    templates = [k for k in netlink.conns.counts if k.template] if netlink.conns else []
    assert templates, "persistent service: templates expected in the conn table"
    forward = {rs.forward.label for s in netlink.services for rs in s.real_servers}
    assert forward == {{"nat": "masq", "dr": "route", "tun": "tunnel"}[mode.value]}
