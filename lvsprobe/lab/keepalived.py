"""keepalived on the lab's directors (topology `ha: keepalived`): its config, rendered from the
topology, and the shell that starts and stops it.

One keepalived per director, run in the director's namespace with its OWN /tmp (a private
mount namespace with DIR/tmp bound over /tmp), so the two never share a file. Per director
(`lvs1`, `lvs2`), DIR = /run/lab/cluster/keepalived/DIRECTOR holds:

    keepalived.conf   the config (`render_config`)
    keepalived.pid    the parent's pid: signal it (`keepalived --signum=JSON|DATA|STATS`)
    vrrp.pid          the VRRP child (the one that sends adverts)
    checkers.pid      the health-checker child
    tmp/              keepalived's /tmp: keepalived.json, keepalived.data, keepalived.stats, ...
    notify.fifo       keepalived's notify FIFO (VRRP and checker events)
    events.jsonl      each FIFO line as {"unix": T, "line": "..."}, T the guest's wall clock
                      when it was read (the same clock as a replay's start_unix)
    keepalived.log    its own log (console, detailed)

VRRP: one instance `VI_LVS` (VRRPv3, so advert_int may be fractional) on e0, both directors
starting as BACKUP (the higher priority takes over after 3 x advert_int + skew; `nopreempt`
needs it), holding the IPv4 VIP (and the NAT gateway) as VRRP addresses and their IPv6
twins as excluded addresses (moved with the state, sent in no advert).
"""

from __future__ import annotations

import shlex

from lvsprobe.lab.topology import Mode, ServiceSpec, Topology

KEEPALIVED_DIR = "/run/lab/cluster/keepalived"
INSTANCE = "VI_LVS"
VIRTUAL_ROUTER_ID = 51
DIRECTORS = ("lvs1", "lvs2")
NOTIFY_READER = f"{KEEPALIVED_DIR}/notify-reader.sh"
LB_KIND = {Mode.NAT: "NAT", Mode.DR: "DR", Mode.TUN: "TUN"}
STOP_WAIT_S = 15  # keepalived waits up to 5 s for each child (child_wait_time)


def director_dir(director: str) -> str:
    return f"{KEEPALIVED_DIR}/{director}"


def _seconds(value: float) -> str:
    """keepalived's timer syntax: seconds with up to 6 decimals, no trailing zeros."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def _block(head: str, body: list[str], indent: int) -> list[str]:
    pad = "    " * indent
    return [f"{pad}{head} {{", *(f"{pad}    {line}" for line in body), f"{pad}}}"]


def _vrrp(topology: Topology, director: str, vip: str, vip6: str, gw: str, gw6: str) -> list[str]:
    ka = topology.keepalived
    v4 = [f"{vip}/24 dev e0"]
    v6 = [f"{vip6}/64 dev e0"]
    if topology.mode is Mode.NAT:  # the real servers' gateway floats with the VIP
        v4.append(f"{gw}/24 dev e0")
        v6.append(f"{gw6}/64 dev e0")
    body = [
        "state BACKUP",
        "interface e0",
        f"virtual_router_id {VIRTUAL_ROUTER_ID}",
        f"priority {ka.priorities[DIRECTORS.index(director)]}",
        f"advert_int {_seconds(ka.advert_int_s)}",
    ]
    if not ka.preempt:
        body.append("nopreempt")
    lines = _block("virtual_ipaddress", v4, 0) + _block("virtual_ipaddress_excluded", v6, 0)
    return _block(f"vrrp_instance {INSTANCE}", body + lines, 0)


def _checker(topology: Topology, svc: ServiceSpec) -> list[str]:
    """HTTP_GET on the backends' HTTP (port 80), TCP_CHECK on everything else (a UDP service
    is checked on the same port over TCP: the backends' echo listens on both)."""
    ka = topology.keepalived
    timing = [
        f"connect_timeout {_seconds(ka.connect_timeout_s)}",
        f"retry {ka.retry}",
        f"delay_before_retry {_seconds(ka.delay_before_retry_s)}",
    ]
    port = svc.ports[0] if svc.is_fwmark else svc.port
    if svc.is_fwmark or svc.protocol == "udp":
        timing.insert(0, f"connect_port {port}")
    if port == 80 and svc.protocol == "tcp":
        return _block("HTTP_GET", _block("url", ["path /", "status_code 200"], 0) + timing, 0)
    return _block("TCP_CHECK", timing, 0)


def _flags(svc: ServiceSpec) -> list[str]:
    """ipvsadm service flags as keepalived keywords (topology validation allows only these)."""
    words, out = list(svc.options), []
    while words:
        word = words.pop(0)
        if word == "-o":
            out.append("ops")
        elif word == "-b" and words:
            out += words.pop(0).split(",")
    return out


def _virtual_server(
    topology: Topology, svc: ServiceSpec, vip: str, addresses: tuple[str, ...]
) -> list[str]:
    ka = topology.keepalived
    head = (
        f"virtual_server fwmark {svc.fwmark}"
        if svc.is_fwmark
        else f"virtual_server {vip} {svc.port}"
    )
    body = [
        f"delay_loop {_seconds(ka.delay_loop_s)}",
        f"lb_algo {svc.scheduler or topology.scheduler}",
        f"lb_kind {LB_KIND[topology.mode]}",
    ]
    if not svc.is_fwmark:  # keepalived ignores (and warns about) a protocol for fwmark
        body.append(f"protocol {svc.protocol.upper()}")
    body += _flags(svc)
    if svc.persistence_s is not None:
        body.append(f"persistence_timeout {svc.persistence_s}")
        if svc.netmask is not None:
            body.append(f"persistence_granularity {svc.netmask}")
    for i, rip in enumerate(addresses):
        rs = [f"weight {topology.weight_of(svc, i)}"]
        if ka.inhibit_on_failure:
            rs.append("inhibit_on_failure")
        where = rip if svc.is_fwmark else f"{rip} {svc.port}"
        body += _block(f"real_server {where}", rs + _checker(topology, svc), 0)
    return _block(head, body, 0)


def render_config(
    topology: Topology,
    director: str,
    vips: tuple[str, str, str, str],
    real_servers: tuple[tuple[str, ...], tuple[str, ...]],
) -> str:
    """keepalived.conf of `director` (lvs1 or lvs2): pure, from the topology and its addresses.

    `vips`: (VIP, VIP6, NAT gateway, NAT gateway6); `real_servers`: (IPv4, IPv6) addresses.
    """
    vip, vip6, gw, gw6 = vips
    home = director_dir(director)
    ka = topology.keepalived
    globals_ = [
        f"router_id {director}",
        "vrrp_version 3",
        "script_user root",
        f"notify_fifo {home}/notify.fifo",  # read by the lab's reader (reader_start_script)
        "lvs_flush",  # a restart after a kill must not meet the services it made before
    ]
    if topology.sync:
        # master sync daemon while MASTER, backup daemon otherwise (keepalived switches them)
        globals_.append(f"lvs_sync_daemon e0 {INSTANCE} id 7")
    lines = [
        f"# keepalived on {director}: generated by lvsprobe.lab.keepalived from the topology",
        f"# ({topology.describe()}); advert_int {_seconds(ka.advert_int_s)} s, "
        f"{'preempt' if ka.preempt else 'nopreempt'}",
        *_block("global_defs", globals_, 0),
        *_vrrp(topology, director, vip, vip6, gw, gw6),
    ]
    for svc in topology.effective_services:
        six = svc.family == "ipv6"
        lines += _virtual_server(topology, svc, vip6 if six else vip, real_servers[six])
    return "\n".join(lines) + "\n"


def notify_reader_script() -> str:
    """The notify FIFO reader: each line stamped with $EPOCHREALTIME when read, bash builtins
    only. It holds the FIFO open read-write, so it outlives keepalived's restarts (a reader
    keepalived started itself would begin late after a restart: its first lines, the state at
    start-up, would be stamped seconds late under TCG)."""
    return r"""#!/bin/bash
out=$1 fifo=$2
exec 3<>"$fifo"
while IFS= read -r line <&3; do
  line=${line//\\/\\\\}
  printf '{"unix":%s,"line":"%s"}\n' "$EPOCHREALTIME" "${line//\"/\\\"}" >>"$out"
done
"""


def reader_start_script(director: str) -> str:
    """Make `director`'s notify FIFO and start its reader (before keepalived, once per build;
    the lab's teardown kills it by STATE/DIRECTOR-notify.pid)."""
    home = director_dir(director)
    return (
        f"mkfifo -m 600 {home}/notify.fifo\n"
        f"setsid bash {NOTIFY_READER} {home}/events.jsonl {home}/notify.fifo "
        f"</dev/null >/dev/null 2>&1 &\n"
        f"echo $! >/run/lab/cluster/{director}-notify.pid\n"
    )


def start_script(director: str) -> str:
    """Start keepalived in `director`'s namespace, its own /tmp bound over /tmp, in its own
    session (the lab's teardown kills the session by STATE/DIRECTOR-keepalived.pid).

    --dont-release-ipvs: a clean stop otherwise deletes the old master's real servers before
    its VRRP child releases the VIPs, and every long-lived connection was reset (20/20, sync
    on, lab kernel 6.1) while lvs2 held the synced entries; with the flag 0/20 broke. The
    services left behind are flushed by lvs_flush when keepalived starts again."""
    home = director_dir(director)
    inner = (
        f"mount --bind {home}/tmp /tmp && exec keepalived --dont-fork --dont-release-ipvs "
        f"--log-console --log-detail --no-syslog -f {home}/keepalived.conf "
        f"-p {home}/keepalived.pid -r {home}/vrrp.pid -c {home}/checkers.pid"
    )
    argv = [
        "ip",
        "netns",
        "exec",
        director,
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        inner,
    ]
    return (
        f"mkdir -p {home}/tmp\n"
        f"setsid {shlex.join(argv)} >>{home}/keepalived.log 2>&1 </dev/null &\n"
        f"echo $! >/run/lab/cluster/{director}-keepalived.pid\n"
    )


def pids_expr(director: str) -> str:
    """Bash words: the pids of `director`'s keepalived (parent, VRRP, checkers) from their
    pid files; empty when it is not running."""
    home = director_dir(director)
    return " ".join(
        f"$(cat {home}/{name}.pid 2>/dev/null)" for name in ("keepalived", "vrrp", "checkers")
    )


def wait_gone_script(pid: str) -> str:
    """Wait, bounded, until process `pid` (a shell word) is gone: keepalived, after a SIGTERM,
    releases its VIPs, sends a priority-0 advert, removes its IPVS services and its sync
    daemon, waiting up to 5 s for each child (child_wait_time)."""
    return (
        f"(for i in $(seq {STOP_WAIT_S * 10}); do kill -0 {pid} 2>/dev/null || exit 0; "
        "sleep 0.1; done\n"
        f'echo "keepalived {pid} did not stop" >&2; exit 1)\n'
    )


def wait_master_script(director: str, timeout_s: float) -> str:
    """Wait (bounded) until `director`'s notify log says MASTER; exit 1 if it never does."""
    events = f"{director_dir(director)}/events.jsonl"
    tries = max(1, int(timeout_s * 5))
    return (
        f"(for i in $(seq {tries}); do\n"
        f'  [ -e {events} ] && [[ "$(<{events})" == *\'\\"{INSTANCE}\\" MASTER\'* ]] && exit 0\n'
        "  sleep 0.2\ndone\n"
        f"echo '{director} never became MASTER' >&2; exit 1)\n"
    )
