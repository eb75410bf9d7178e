"""Topology files and the cluster they render (no VM needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsprobe.errors import ParseError
from lvsprobe.lab.cluster import (
    CONNTRACK_MAX,
    AddressPlan,
    build_script,
    failover_script,
    ipvs_rules,
)
from lvsprobe.lab.topology import Mode, ServiceSpec, Topology, load_topology, topology_from_dict


def test_default_topology_and_address_plan() -> None:
    topo = Topology()
    plan = AddressPlan(topo)
    assert (topo.mode, topo.scheduler, topo.real_servers, topo.clients) == (Mode.NAT, "rr", 3, 256)
    assert plan.vip == "198.18.1.100" and plan.vip6 == "2001:2:0:1::100"
    assert plan.real_server_addresses == ("198.18.1.11", "198.18.1.12", "198.18.1.13")
    assert len(set(plan.client_addresses)) == 256 and plan.client_addresses[0] == "198.18.16.1"
    assert plan.client_addresses[255] == "198.18.17.0"
    assert plan.namespaces == ("client", "router", "lvs1", "lvs2", "rs1", "rs2", "rs3")


def test_yaml_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "dr.yaml"
    path.write_text(
        "mode: dr\nscheduler: wrr\nreal_servers: 2\nweights: [1, 3]\nsync: false\n"
        "services:\n"
        "  - {protocol: tcp, port: 443, persistence: 300, netmask: 255.255.255.0}\n"
        "  - {fwmark: 5, ports: [80, 8080]}\n"
        "  - {family: ipv6, protocol: tcp, port: 80, scheduler: sh, options: ['-b', 'sh-port']}\n"
    )
    topo = load_topology(path)
    assert topo.mode is Mode.DR and topo.weights == (1, 3) and not topo.sync
    assert topo.services == (
        ServiceSpec("tcp", 443, persistence_s=300, netmask="255.255.255.0"),
        ServiceSpec(fwmark=5, ports=(80, 8080)),
        ServiceSpec("tcp", 80, family="ipv6", scheduler="sh", options=("-b", "sh-port")),
    )
    rules = ipvs_rules(AddressPlan(topo))
    assert "-A -t 198.18.1.100:443 -s wrr -p 300 -M 255.255.255.0\n" in rules
    assert "-a -t 198.18.1.100:443 -r 198.18.1.12:443 -g -w 3\n" in rules
    assert "-A -f 5 -s wrr\n" in rules and "-a -f 5 -r 198.18.1.11 -g -w 1\n" in rules
    assert "-A -t [2001:2:0:1::100]:80 -s sh -b sh-port\n" in rules
    assert "-a -t [2001:2:0:1::100]:80 -r [2001:2:0:1::11]:80 -g -w 1\n" in rules


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("mode: bridge\n", "mode"),
        ("scheduler: fastest\n", "scheduler"),
        ("real_servers: 0\n", "real_servers"),
        ("real_servers: many\n", "real_servers"),
        ("clients: 5000\n", "clients"),
        ("weights: [1, 2]\n", "weights"),
        ("sync: maybe\n", "sync"),
        ("colour: blue\n", "colour"),
        ("services: {port: 80}\n", "services"),
        ("services:\n  - {port: 70000}\n", "services[0].port"),
        ("services:\n  - {protocol: sctp}\n", "services[0].protocol"),
        ("services:\n  - {prot: tcp}\n", "services[0].prot"),
        ("services:\n  - {port: 80}\n  - {port: 80}\n", "services[1]"),
        ("services:\n  - {fwmark: 3}\n", "services[0].ports"),
        ("mode: tun\nservices:\n  - {family: ipv6}\n", "services[0].family"),
        ("services:\n  - {persistence: 60, netmask: 255.0.255.0}\n", "services[0].netmask"),
        ("- just\n- a list\n", "mapping"),
        ("client_namespaces: 5\n", "client_namespaces"),
        ("clients: 1\nclient_namespaces: 2\n", "client_namespaces"),
        ("client_namespaces: two\n", "client_namespaces"),
    ],
)
def test_bad_topologies_name_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ParseError) as info:
        load_topology(path)
    assert key in str(info.value) and str(path) in str(info.value)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("mode: nat\nservices: [\n")
    with pytest.raises(ParseError, match="invalid YAML"):
        load_topology(path)
    with pytest.raises(ParseError, match="cannot read"):
        load_topology(tmp_path / "missing.yaml")


def test_empty_file_is_the_default() -> None:
    assert topology_from_dict(None) == Topology()


def test_build_script_per_mode() -> None:
    nat = build_script(AddressPlan(Topology()))
    assert "route add default via 198.18.1.254" in nat  # NAT: RSs route via the floating gw
    assert "--start-daemon master" in nat and "--start-daemon backup" in nat
    dr = build_script(AddressPlan(Topology(mode=Mode.DR, sync=False)))
    assert "addr add 198.18.1.100/32 dev lo" in dr and "--start-daemon" not in dr
    assert '"net.ipv4.conf.all.arp_ignore": "1"' in dr
    tun = build_script(AddressPlan(Topology(mode=Mode.TUN)))
    assert "addr add 198.18.1.100/32 dev tunl0" in tun and "rp_filter" in tun
    fwm = build_script(AddressPlan(Topology(services=(ServiceSpec(fwmark=9, ports=(80,)),))))
    assert "flower ip_proto tcp dst_ip 198.18.1.100 dst_port 80 action skbedit mark 9" in fwm


def test_the_directors_conntrack_table_holds_minutes_of_new_connections() -> None:
    """With vs.conntrack=1 each connection keeps an entry 120 s in TIME_WAIT: the VM's default
    8192 entries filled after ~70 new connections/s and the director then dropped every SYN
    (wrk from the lab's client fell from 281 to 39 connections/s after 8,230 of them)."""
    script = build_script(AddressPlan(Topology()))
    assert '"net.ipv4.vs.conntrack": "1"' in script
    assert f"echo {CONNTRACK_MAX} > /proc/sys/net/netfilter/nf_conntrack_max" in script
    assert CONNTRACK_MAX >= 300 * 120  # the lab's fastest new-connection rate, for 120 s
    assert script.index("modprobe -a") < script.index("nf_conntrack_max")


def test_failover_moves_vip_and_nat_gateway() -> None:
    script = failover_script(AddressPlan(Topology()), "lvs1", "lvs2")
    assert script.index("addr del 198.18.1.100/24") < script.index("addr add 198.18.1.100/24")
    assert "addr add 198.18.1.254/24 dev e0" in script
    assert "arping -U" in script and "-s 198.18.1.100 198.18.1.100" in script


def test_a_second_client_namespace_holds_every_other_pool_address() -> None:
    topo = topology_from_dict({"clients": 6, "client_namespaces": 2})
    plan = AddressPlan(topo)
    assert plan.namespaces[:3] == ("client", "client2", "router")
    assert plan.client_pools == {
        "client": ("198.18.16.1", "198.18.16.3", "198.18.16.5"),
        "client2": ("198.18.16.2", "198.18.16.4", "198.18.16.6"),
    }
    assert plan.client_addresses == plan.client_pools["client"]
    script = build_script(plan)
    assert "link add c0 netns client2 type veth peer name rc1 netns router" in script
    assert "route add 198.18.16.4/32 via 198.18.3.2" in script  # the router: /32s win
    assert "addr add 198.18.16.4/32 dev c0" in script
    assert "route add 198.18.16.4/32" not in build_script(AddressPlan(Topology(clients=6)))
