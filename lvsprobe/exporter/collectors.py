"""Collectors for the netns totals, connection table, slab, sync daemons, timeouts, sysctls and
the health of each source. Each reads one part of a Snapshot and adds fresh samples."""

from __future__ import annotations

from lvsprobe.exporter.filters import ServiceFilter
from lvsprobe.exporter.metrics import SERVICE_LABELS
from lvsprobe.exporter.render import Builder, escape_label_value
from lvsprobe.exporter.services import add_stats, address_number, address_texts
from lvsprobe.model import ConnCountKey, DaemonState, IPAddress, Origin, Snapshot

# hlist_head: a pointer per bucket on 64-bit kernels (docs/kernel/memory.md#connection-hash-table)
BUCKET_BYTES = 8
CACHE_LINE = 64
# sizeof(struct ip_vs_conn) is 288 on 6.1 and 6.12 x86_64, 320 in its HWCACHE_ALIGN slab: the
# estimate uses it when the slab cannot be read (/proc/slabinfo is root-only).
DEFAULT_OBJECT_BYTES = 320


class HealthCollector:
    """ipvs_up, ipvs_info and, for every source the snapshot tried, success and duration."""

    def collect(self, snap: Snapshot, out: Builder) -> None:
        out.add("ipvs_up", out.block(""), 1 if snap.loaded else 0)
        if snap.loaded:
            out.add_labeled("ipvs_info", (snap.version or "", snap.via), 1)
        failed = {f.source for f in snap.failures}
        for source in sorted(set(snap.durations_s) | failed):
            out.add_labeled("ipvs_scrape_source_success", (source,), 0 if source in failed else 1)
            if source in snap.durations_s:
                out.add_labeled(
                    "ipvs_scrape_source_duration_seconds",
                    (source,),
                    float(snap.durations_s[source]),
                )


class StatsCollector:
    """Totals of the namespace (/proc/net/ip_vs_stats) and the table size."""

    def collect(self, snap: Snapshot, out: Builder) -> None:
        add_stats(out, "ipvs_", out.block(""), snap.totals, snap.total_rates)
        if snap.conn_table_size is not None:
            out.add("ipvs_conn_table_buckets", out.block(""), snap.conn_table_size)


def _conn_service_pairs(key: ConnCountKey, is_service: bool) -> str:
    """SERVICE_LABELS for a connection entry: its virtual address, or the fwmark of a template.

    Entries whose <protocol, address, port> is no configured service (FTP data connections,
    connections of fwmark services) keep their address but get port="": one series per
    address instead of one per passive port. Port 0 stays "0", as the kernel and `ipvsadm
    -Lnc` show it: the templates of a persistent FTP service (and of a port-0 service) are
    keyed <protocol, client, 0, VIP, 0, real server, 0>.
    """
    addr: IPAddress | None = key.virtual_address
    family_of = addr if addr is not None else key.dest_address
    family = "inet" if family_of.version == 4 else "inet6"
    if key.fwmark:
        return f'protocol="",address="",port="0",fwmark="{key.fwmark}",family="{family}"'
    # Only the protocol comes as text from the table; the rest are numbers and addresses.
    protocol = escape_label_value(key.protocol.lower())
    address = address_texts([addr])[0] if addr is not None else ""
    port = key.virtual_port if is_service or not key.virtual_port else ""
    return f'protocol="{protocol}",address="{address}",port="{port}",fwmark="0",family="{family}"'


assert SERVICE_LABELS == ("protocol", "address", "port", "fwmark", "family")


_ORIGIN = {None: "unknown", Origin.LOCAL: "local", Origin.SYNC: "sync"}
_ORIGIN_OF_ID = {id(origin): name for origin, name in _ORIGIN.items()}
_UNSEEN = ""  # no label pairs are empty: a service has five labels


class ConnsCollector:
    """Entries by service and state, templates, and origins (/proc/net/ip_vs_conn[_sync])."""

    def __init__(self, service_filter: ServiceFilter, per_real_server: bool) -> None:
        self.service_filter = service_filter
        self.per_real_server = per_real_server

    def collect(self, snap: Snapshot, out: Builder) -> None:
        summary = snap.conns
        if summary is None:
            return
        entries: dict[tuple[str, str], int] = {}
        backend_entries: dict[tuple[str, str, str, str], int] = {}
        templates: dict[str, int] = {}
        pairs_of: dict[tuple[str, int, int, int], str | None] = {}
        allows = self.service_filter.allows
        # Addresses by (type, int): hashing an ipaddress object runs Python code.
        services = {
            (
                svc.key.protocol.name,
                type(svc.key.address),
                address_number(svc.key.address),
                svc.key.port,
            )
            for svc in snap.services
            if svc.key.protocol is not None and not svc.key.fwmark
        }
        by_origin: dict[int, int] = {}  # by id(): an Enum member's hash runs Python code
        for key, n in summary.counts.items():
            origin_id = id(key.origin)
            by_origin[origin_id] = by_origin.get(origin_id, 0) + n
            # Memoised by the address object's identity (the summary keeps them all alive):
            # hashing an IP address runs Python code (ipaddress). Equal addresses held by
            # two objects just cost a second, equal, computation.
            vaddr = key.virtual_address
            memo = (key.protocol, id(vaddr), key.virtual_port, key.fwmark)
            pairs = pairs_of.get(memo, _UNSEEN)
            if pairs is _UNSEEN:
                ok = allows(vaddr, key.virtual_port, key.fwmark)
                is_service = (
                    vaddr is not None
                    and (key.protocol, type(vaddr), address_number(vaddr), key.virtual_port)
                    in services
                )
                pairs = pairs_of[memo] = _conn_service_pairs(key, is_service) if ok else None
            if pairs is None:
                continue
            if key.template:
                templates[pairs] = templates.get(pairs, 0) + n
                continue
            entries[(pairs, key.state)] = entries.get((pairs, key.state), 0) + n
            if self.per_real_server:
                bkey = (pairs, str(key.dest_address), str(key.dest_port), key.state)
                backend_entries[bkey] = backend_entries.get(bkey, 0) + n
        for (pairs, state), n in sorted(entries.items()):
            out.add(
                "ipvs_conn_entries", out.block(f'{pairs},state="{escape_label_value(state)}"'), n
            )
        for (pairs, b_addr, b_port, state), n in sorted(backend_entries.items()):
            block = out.block(
                f'{pairs},backend_address="{b_addr}",backend_port="{b_port}",'
                f'state="{escape_label_value(state)}"'
            )
            out.add("ipvs_backend_conn_entries", block, n)
        for pairs, n in sorted(templates.items()):
            out.add("ipvs_conn_templates", out.block(pairs), n)
        origins = {_ORIGIN_OF_ID[origin_id]: n for origin_id, n in by_origin.items()}
        for origin, n in sorted(origins.items()):
            out.add_labeled("ipvs_conn_table_entries", (origin,), n)


class SlabCollector:
    """The ip_vs_conn slab and an estimate of the connection table's memory."""

    def collect(self, snap: Snapshot, out: Builder) -> None:
        slab = snap.slab
        obj_size = None
        if slab is not None:
            obj_size = slab.slab_object_size
            if obj_size is None and slab.object_size is not None:
                # SLAB_HWCACHE_ALIGN: sizeof rounded up to a cache line (288 -> 320).
                obj_size = -(-slab.object_size // CACHE_LINE) * CACHE_LINE
            if obj_size is not None:
                out.add("ipvs_conn_slab_object_size_bytes", out.block(""), obj_size)
            if slab.active_objs is not None and not slab.merged:
                out.add("ipvs_conn_slab_active_objects", out.block(""), slab.active_objs)
        entries = snap.conns.total if snap.conns is not None else None
        if entries is None and slab is not None and not slab.merged:
            entries = slab.active_objs
        if entries is not None:
            obj_size = obj_size or DEFAULT_OBJECT_BYTES
            buckets = snap.conn_table_size or 0
            out.add(
                "ipvs_conn_table_memory_bytes",
                out.block(""),
                entries * obj_size + buckets * BUCKET_BYTES,
            )


class DaemonsCollector:
    """Sync daemons (netlink GET_DAEMON): up per role when the source was read, and settings."""

    def collect(self, snap: Snapshot, out: Builder) -> None:
        if "daemons" not in snap.durations_s or any(f.source == "daemons" for f in snap.failures):
            return
        running = {d.state: d for d in snap.daemons}
        for state in DaemonState:
            role = state.name.lower()
            out.add_labeled("ipvs_sync_daemon_up", (role,), 1 if state in running else 0)
            daemon = running.get(state)
            if daemon is not None:
                values = (
                    role,
                    daemon.interface,
                    str(daemon.sync_id),
                    str(daemon.group) if daemon.group is not None else "",
                    str(daemon.port) if daemon.port is not None else "",
                )
                out.add_labeled("ipvs_sync_daemon_info", values, 1)


class TimeoutsCollector:
    """Connection timeouts (netlink GET_CONFIG)."""

    def collect(self, snap: Snapshot, out: Builder) -> None:
        t = snap.timeouts
        if t is not None:
            for name, value in (("tcp", t.tcp_s), ("tcp_fin", t.tcp_fin_s), ("udp", t.udp_s)):
                out.add_labeled("ipvs_connection_timeout_seconds", (name,), value)


class SysctlsCollector:
    """Numeric net.ipv4.vs.* sysctls."""

    def collect(self, snap: Snapshot, out: Builder) -> None:
        for name, values in sorted(snap.sysctls.items()):
            for index, value in enumerate(values):
                out.add_labeled("ipvs_sysctl", (name, str(index)), value)
