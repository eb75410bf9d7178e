"""The LVS cluster inside the VM: a Topology rendered into ONE bash script run by the agent.

Address plan (198.18.0.0/15 and 2001:2::/48 are the benchmarking ranges, RFC 2544/5180):

    client   c0   198.18.0.2/24      2001:2::2/64      + pool 198.18.16.1..N  2001:2:0:100::1..N
                  (the pool is routed to the client by the router; bind to a pool address)
    clientK  c0   198.18.(K+1).2/24  (client_namespaces >= K, K = 2..4: every K-th address of
                  the IPv4 pool moves here, routed by the router as /32s; IPv6 stays on client)
    router   rc0  198.18.0.1/24      2001:2::1/64
             rcK  198.18.(K+1).1/24  (to clientK)
             br0  198.18.1.1/24      2001:2:0:1::1/64  (the server LAN bridge)
    lvs1     e0   198.18.1.2/24      2001:2:0:1::2/64  active director: the VIPs, the NAT gateway
    lvs2     e0   198.18.1.3/24      2001:2:0:1::3/64  standby director (same IPVS rules)
    VIP           198.18.1.100       2001:2:0:1::100
    NAT gw        198.18.1.254       2001:2:0:1::254   (floats with the VIP: the RSs' route)
    rsI      e0   198.18.1.(10+I)    2001:2:0:1::(10+I)  I = 1..N

NAT: real servers route back through the director's floating gateway, the directors send no ICMP
redirects. DR: the VIP on each real server's loopback, arp_ignore=1/arp_announce=2. TUN: the VIP
on tunl0 (ipip), rp_filter off. fwmark services: a tc flower filter on the directors' e0 marks
VIP:port packets (no iptables needed).
"""

from __future__ import annotations

import json
import shlex
import sys
from typing import ClassVar

from lvsprobe.lab import keepalived
from lvsprobe.lab.topology import Ha, Mode, ServiceSpec, Topology

STATE = "/run/lab/cluster"
TLS_DIR = "/run/lab/tls"
SYNC_ID = 7
MODULES = (
    "ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_sh ip_vs_mh ip_vs_ftp nf_conntrack "
    "veth bridge ipip sch_ingress cls_flower act_skbedit sch_netem"
)

# The directors keep a conntrack entry per IPVS connection (vs.conntrack=1), each held 120 s
# in TIME_WAIT; the VM's default table (8192 entries, sized from its 1 GB) was full after
# ~70 new connections/s and then dropped every SYN. A real director is sized up likewise.
CONNTRACK_MAX = 1 << 18
CONNTRACK_BUCKETS = 1 << 16
_CONNTRACK_SIZING = (
    f"echo {CONNTRACK_BUCKETS} > /proc/sys/net/netfilter/nf_conntrack_buckets; "
    f"echo {CONNTRACK_MAX} > /proc/sys/net/netfilter/nf_conntrack_max"
)


class AddressPlan:
    """Every address of a topology's cluster (see the module docstring)."""

    vip = "198.18.1.100"
    vip6 = "2001:2:0:1::100"
    nat_gateway = "198.18.1.254"
    nat_gateway6 = "2001:2:0:1::254"
    router_lan, router_lan6 = "198.18.1.1", "2001:2:0:1::1"
    client_link, client_link6 = "198.18.0.2", "2001:2::2"
    directors: ClassVar[dict[str, tuple[str, str]]] = {
        "lvs1": ("198.18.1.2", "2001:2:0:1::2"),
        "lvs2": ("198.18.1.3", "2001:2:0:1::3"),
    }

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        n = topology.clients
        self.pool_addresses = tuple(f"198.18.{16 + i // 256}.{i % 256}" for i in range(1, n + 1))
        count_ns = topology.client_namespaces
        self.client_namespaces = ("client", *(f"client{k}" for k in range(2, count_ns + 1)))
        # dealt round-robin: any prefix of the pool (a scenario's clients) spans every namespace
        self.client_pools = {
            ns: self.pool_addresses[k::count_ns] for k, ns in enumerate(self.client_namespaces)
        }
        self.client_addresses = self.client_pools["client"]
        self.client_addresses6 = tuple(f"2001:2:0:100::{i:x}" for i in range(1, n + 1))
        count = topology.real_servers
        self.real_server_names = tuple(f"rs{i}" for i in range(1, count + 1))
        self.real_server_addresses = tuple(f"198.18.1.{10 + i}" for i in range(1, count + 1))
        self.real_server_addresses6 = tuple(f"2001:2:0:1::{10 + i}" for i in range(1, count + 1))

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (*self.client_namespaces, "router", "lvs1", "lvs2", *self.real_server_names)

    def client_links(self) -> dict[str, tuple[str, str, str]]:
        """Each client namespace's link: (router's interface, router's address, client's)."""
        links = {"client": ("rc0", "198.18.0.1", self.client_link)}
        for k, ns in enumerate(self.client_namespaces[1:], start=2):
            links[ns] = (f"rc{k - 1}", f"198.18.{k + 1}.1", f"198.18.{k + 1}.2")
        return links

    def service_address(self, svc: ServiceSpec) -> str:
        """ipvsadm's form of a service: `198.18.1.100:80`, `[2001:…]:80` or the mark."""
        if svc.is_fwmark:
            return str(svc.fwmark)
        return f"[{self.vip6}]:{svc.port}" if svc.family == "ipv6" else f"{self.vip}:{svc.port}"


def _q(*words: object) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


def teardown_script() -> str:
    """Stop what a previous build started and delete every namespace (idempotent).

    Deleting a namespace stops its IPVS sync daemons too (ip_vs_sync_net_cleanup), and only
    bash builtins run per pid file: every exec costs under TCG.
    """
    return f"""
for f in {STATE}/*.pid; do [ -e "$f" ] && kill -9 -- -"$(<"$f")" 2>/dev/null; done
ip -all netns delete 2>/dev/null
rm -rf {STATE}; mkdir -p {STATE}
"""


def _links(plan: AddressPlan) -> str:
    lines = ["link add br0 netns router type bridge"]
    for ns, (router_if, _, _) in plan.client_links().items():
        lines.append(f"link add c0 netns {ns} type veth peer name {router_if} netns router")
    for name in ("lvs1", "lvs2", *plan.real_server_names):
        lines.append(f"link add e0 netns {name} type veth peer name b-{name} netns router")
    return "\n".join(lines)


def _router(plan: AddressPlan) -> str:
    lines = [
        "link set br0 up", f"addr add {plan.router_lan}/24 dev br0",
        f"addr add {plan.router_lan6}/64 dev br0 nodad",
        "link set rc0 up", "addr add 198.18.0.1/24 dev rc0", "addr add 2001:2::1/64 dev rc0 nodad",
        f"route add 198.18.16.0/20 via {plan.client_link}",
        f"route add 2001:2:0:100::/64 via {plan.client_link6}",
    ]  # fmt: skip
    for ns, (router_if, router_address, client_address) in plan.client_links().items():
        if ns == "client":
            continue
        lines += [f"link set {router_if} up", f"addr add {router_address}/24 dev {router_if}"]
        lines += [f"route add {a}/32 via {client_address}" for a in plan.client_pools[ns]]
    lines += [f"link set b-{n} master br0 up" for n in ("lvs1", "lvs2", *plan.real_server_names)]
    return "\n".join(lines)


def _client(plan: AddressPlan, ns: str) -> str:
    _, router_address, own_address = plan.client_links()[ns]
    lines = ["link set c0 up", f"addr add {own_address}/24 dev c0",
             f"route add default via {router_address}"]  # fmt: skip
    if ns == "client":
        lines += [
            f"addr add {plan.client_link6}/64 dev c0 nodad",
            "route add default via 2001:2::1",
        ]
        lines += [f"addr add {a}/128 dev c0 nodad" for a in plan.client_addresses6]
    lines += [f"addr add {a}/32 dev c0" for a in plan.client_pools[ns]]
    return "\n".join(lines)


def _director(plan: AddressPlan, name: str, active: bool) -> str:
    v4, v6 = plan.directors[name]
    lines = ["link set e0 up", f"addr add {v4}/24 dev e0", f"addr add {v6}/64 dev e0 nodad",
             f"route add default via {plan.router_lan}",
             f"route add default via {plan.router_lan6}"]  # fmt: skip
    if active:
        lines += vip_lines(plan, "add")
    return "\n".join(lines)


def vip_lines(plan: AddressPlan, verb: str) -> list[str]:
    """`ip addr add|del` lines for the floating addresses of the active director."""
    lines = [f"addr {verb} {plan.vip}/24 dev e0", f"addr {verb} {plan.vip6}/64 dev e0 nodad"]
    if plan.topology.mode is Mode.NAT:
        lines += [f"addr {verb} {plan.nat_gateway}/24 dev e0",
                  f"addr {verb} {plan.nat_gateway6}/64 dev e0 nodad"]  # fmt: skip
    if verb == "del":
        lines = [line.replace(" nodad", "") for line in lines]
    return lines


def _real_server(plan: AddressPlan, index: int) -> str:
    mode = plan.topology.mode
    lines = ["link set e0 up", f"addr add {plan.real_server_addresses[index]}/24 dev e0",
             f"addr add {plan.real_server_addresses6[index]}/64 dev e0 nodad"]  # fmt: skip
    if mode is Mode.NAT:
        lines += [f"route add default via {plan.nat_gateway}",
                  f"route add default via {plan.nat_gateway6}"]  # fmt: skip
    else:
        lines += [f"route add default via {plan.router_lan}",
                  f"route add default via {plan.router_lan6}"]  # fmt: skip
    if mode is Mode.DR:
        lines += [f"addr add {plan.vip}/32 dev lo", f"addr add {plan.vip6}/128 dev lo nodad"]
    if mode is Mode.TUN:
        lines += ["link set tunl0 up", f"addr add {plan.vip}/32 dev tunl0"]
    return "\n".join(lines)


def _sysctls(plan: AddressPlan, name: str) -> list[str]:
    mode = plan.topology.mode
    if name == "router":
        return ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]
    if name in ("lvs1", "lvs2"):
        # send_redirects=0: RS->director->router leaves by the interface it came in on, and
        # redirects would make the RSs bypass the director (NAT breaks). conntrack=1 keeps
        # conntrack entries for IPVS connections (ip_vs_ftp's NAT mangling needs them).
        return ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0",
                "net.ipv4.conf.e0.send_redirects=0", "net.ipv4.vs.conntrack=1"]  # fmt: skip
    if name.startswith("rs"):
        if mode is Mode.NAT:
            return ["net.ipv4.conf.all.accept_redirects=0"]
        values = ["net.ipv4.conf.all.arp_ignore=1", "net.ipv4.conf.all.arp_announce=2"]
        if mode is Mode.TUN:
            values += [
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
                "net.ipv4.conf.tunl0.rp_filter=0",
                "net.ipv4.conf.e0.rp_filter=0",
            ]
        return values
    return []


def ipvs_rules(plan: AddressPlan) -> str:
    """`ipvsadm -R` input (the -S format) for the topology's services."""
    topo = plan.topology
    lines = []
    for svc in topo.effective_services:
        six = " -6" if svc.family == "ipv6" else ""
        if svc.is_fwmark:
            where = f"-f {svc.fwmark}{six}"
        else:
            where = f"{'-t' if svc.protocol == 'tcp' else '-u'} {plan.service_address(svc)}"
        opts = f" -s {svc.scheduler or topo.scheduler}"
        if svc.persistence_s is not None:
            opts += f" -p {svc.persistence_s}"
            if svc.netmask is not None:
                opts += f" -M {svc.netmask}"
        lines.append(f"-A {where}{opts} {' '.join(svc.options)}".rstrip())
        addresses = (
            plan.real_server_addresses6 if svc.family == "ipv6" else plan.real_server_addresses
        )
        for i, rip in enumerate(addresses):
            rip = f"[{rip}]" if svc.family == "ipv6" else rip
            dest = rip if svc.is_fwmark else f"{rip}:{svc.port}"
            weight = topo.weight_of(svc, i)
            lines.append(f"-a {where} -r {dest} {topo.mode.ipvsadm_flag} -w {weight}")
    return "\n".join(lines) + "\n"


def _fwmark_filters(plan: AddressPlan) -> list[str]:
    """tc commands (for `tc -batch`) marking VIP:port packets of fwmark services."""
    lines = []
    services = [s for s in plan.topology.effective_services if s.is_fwmark]
    if services:
        lines.append("qdisc add dev e0 ingress")
    for svc in services:
        proto, vip = ("ipv6", plan.vip6) if svc.family == "ipv6" else ("ip", plan.vip)
        for port in svc.ports:
            lines.append(
                f"filter add dev e0 ingress protocol {proto} pref 10 flower "
                f"ip_proto {svc.protocol} dst_ip {vip} dst_port {port} "
                f"action skbedit mark {svc.fwmark}"
            )
    return lines


def launcher_spec(plan: AddressPlan) -> dict[str, object]:
    """What `lvsprobe.lab.launcher` does: sysctls per namespace, then the real servers."""
    sysctls = {}
    for name in plan.namespaces:
        values = _sysctls(plan, name)
        if values:
            sysctls[name] = dict(v.split("=", 1) for v in values)
    return {
        "state": STATE,
        "cert": f"{TLS_DIR}/cert.pem",
        "key": f"{TLS_DIR}/key.pem",
        "sysctls": sysctls,
        "real_servers": list(plan.real_server_names),
        "vsftpd": True,
    }


def build_script(plan: AddressPlan, python: str = sys.executable) -> str:
    """The whole build, teardown first: bash, run once in the VM's root namespace.

    Few processes on purpose: each exec from the 9p root costs 0.05-0.3 s under TCG, and one
    Python launcher (sysctls, backends, vsftpd) replaces dozens of `ip netns exec` calls.
    """
    topo = plan.topology
    loaded = "/run/lab/modules-loaded"  # modprobe reads modules.dep over 9p: seconds under TCG
    out = ["set -u", teardown_script(), "set -e"]
    out.append(
        f"[ -e {loaded} ] || {{ modprobe -a {MODULES}; {_CONNTRACK_SIZING}; : > {loaded}; }}"
    )
    netns = "\n".join(f"netns add {n}" for n in plan.namespaces)
    out.append(f"ip -batch - <<'EOF'\n{netns}\n{_links(plan)}\nEOF")
    parts = {"router": _router(plan)} | {ns: _client(plan, ns) for ns in plan.client_namespaces}
    manual = topo.ha is Ha.MANUAL
    parts |= {d: _director(plan, d, manual and d == "lvs1") for d in ("lvs1", "lvs2")}
    parts |= {n: _real_server(plan, i) for i, n in enumerate(plan.real_server_names)}
    # The launcher (one Python: sysctls, backends, vsftpd) is the slow part; it needs only the
    # namespaces and links, so it starts now and runs while the shell configures the rest.
    spec = json.dumps(launcher_spec(plan))
    launcher = _q(python, "-S", "-m", "lvsprobe.lab.launcher")  # -S: see vm.guest_python
    out.append(f"{launcher} > {STATE}/launcher.log 2>&1 <<'EOF' &\n{spec}\nEOF\nlauncher=$!")
    for name, batch in parts.items():
        out.append(f"ip -n {name} -batch - <<'EOF'\nlink set lo up\n{batch}\nEOF")
    for director in ("lvs1", "lvs2"):
        if manual:  # with keepalived, its virtual_server blocks program IPVS
            out.append(f"ip netns exec {director} ipvsadm -R <<'EOF'\n{ipvs_rules(plan)}EOF")
        tc = _fwmark_filters(plan)
        if tc:
            out.append(f"tc -n {director} -batch - <<'EOF'\n" + "\n".join(tc) + "\nEOF")
    if topo.sync and manual:
        for director, role in (("lvs1", "master"), ("lvs2", "backup")):
            out.append(
                f"ip netns exec {director} ipvsadm --start-daemon {role} "
                f"--mcast-interface e0 --syncid {SYNC_ID}"
            )
    out.append(
        f"wait $launcher || {{ cat {STATE}/launcher.log >&2; exit 1; }}\ncat {STATE}/launcher.log"
    )
    if not manual:  # after the backends listen: no checker sees them down at the start
        out.append(keepalived_script(plan))
    out.append(f"echo 'cluster: {topo.describe()}'")
    return "\n".join(out) + "\n"


def keepalived_configs(plan: AddressPlan) -> dict[str, str]:
    """keepalived.conf of each director, rendered from the plan's topology and addresses."""
    vips = (plan.vip, plan.vip6, plan.nat_gateway, plan.nat_gateway6)
    reals = (plan.real_server_addresses, plan.real_server_addresses6)
    return {
        d: keepalived.render_config(plan.topology, d, vips, reals) for d in keepalived.DIRECTORS
    }


def keepalived_script(plan: AddressPlan, wait_s: float = 60.0) -> str:
    """Write the configs and the notify reader, start keepalived on both directors, and wait
    (bounded) until lvs1, the higher priority, is MASTER."""
    out = [
        f"mkdir -p {keepalived.KEEPALIVED_DIR}",
        f"cat >{keepalived.NOTIFY_READER} <<'EOF'\n{keepalived.notify_reader_script()}EOF",
        f"chmod 755 {keepalived.NOTIFY_READER}",
    ]
    for director, text in keepalived_configs(plan).items():
        home = keepalived.director_dir(director)
        out.append(f"mkdir -p {home}/tmp\ncat >{home}/keepalived.conf <<'EOF'\n{text}EOF")
        out.append(keepalived.reader_start_script(director))
        out.append(keepalived.start_script(director))
    first = (
        "lvs1"
        if plan.topology.keepalived.priorities[0] >= plan.topology.keepalived.priorities[1]
        else "lvs2"
    )
    out.append(keepalived.wait_master_script(first, wait_s))
    return "\n".join(out)


def failover_script(plan: AddressPlan, old: str, new: str) -> str:
    """Move the floating addresses from director `old` to `new` as keepalived does: delete on
    the old, add on the new, then gratuitous ARP (busybox arping -U) for each IPv4 address.
    IPv6: the router's neighbour entries are flushed (no unsolicited-NA tool in the packages).
    It prints `started T` and `done T` (guest wall clock, seconds since the epoch)."""
    batch_old = "\n".join(vip_lines(plan, "del"))
    batch_new = "\n".join(vip_lines(plan, "add"))
    v4 = [plan.vip] + ([plan.nat_gateway] if plan.topology.mode is Mode.NAT else [])
    garp = "\n".join(
        f"ip netns exec {new} busybox arping -U -c 2 -w 1 -I e0 -s {a} {a} >/dev/null" for a in v4
    )
    # $EPOCHREALTIME (a bash variable, no exec): when the move began and when it was done
    return (
        "set -e\n"
        'echo "started $EPOCHREALTIME"\n'
        f"ip -n {old} -batch - <<'EOF'\n{batch_old}\nEOF\n"
        f"ip -n {new} -batch - <<'EOF'\n{batch_new}\nEOF\n"
        f"{garp}\n"
        f"ip -n router -6 neigh flush dev br0\n"
        'echo "done $EPOCHREALTIME"\n'
    )
