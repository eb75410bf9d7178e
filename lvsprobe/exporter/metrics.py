"""Every metric family `lvsprobe export` serves, declared once: name, help, type, labels.

This table is the contract: the collectors build their families from it, the golden tests
check the output against it, and the dashboards generator reads it. Names are stable once
released; add, never rename.

Conventions: base units (seconds, bytes), `_total` on counters, rates as gauges ending in
`_per_second`, `_info` series carry value 1 and the labels worth joining on, and a label name
means the same thing in every family. When more than one network namespace is read, every
series also gets the label `netns` (first); it is not listed here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class MetricType(enum.Enum):
    """The Prometheus text-format TYPE of a family."""

    GAUGE = "gauge"
    COUNTER = "counter"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family. `source` names the snapshot part it comes from (for dashboards)."""

    name: str
    help: str
    type: MetricType
    labels: tuple[str, ...]
    source: str


NETNS_LABEL = "netns"

# The virtual service a series belongs to. fwmark services have protocol="", address="",
# port="0"; <protocol, address, port> services have fwmark="0". family is inet, inet6, or ""
# when /proc/net/ip_vs does not tell (an fwmark service read from procfs).
SERVICE_LABELS = ("protocol", "address", "port", "fwmark", "family")
BACKEND_LABELS = (*SERVICE_LABELS, "backend_address", "backend_port", "forward")
CONN_LABELS = (*SERVICE_LABELS, "state")
BACKEND_CONN_LABELS = (*SERVICE_LABELS, "backend_address", "backend_port", "state")
# A keepalived vrrp_instance by its name (`instance` is Prometheus' target label).
VRRP_LABELS = ("vrrp_instance",)

G, C = MetricType.GAUGE, MetricType.COUNTER

_STAT_FIELDS = (
    ("connections", "connections scheduled"),
    ("incoming_packets", "packets from clients"),
    ("outgoing_packets", "packets from real servers (NAT only)"),
    ("incoming_bytes", "bytes from clients"),
    ("outgoing_bytes", "bytes from real servers (NAT only)"),
)


def _stat_specs(prefix: str, what: str, labels: tuple[str, ...], source: str) -> list[MetricSpec]:
    """Counters and the kernel estimator's rates for one stats block (struct ip_vs_kstats)."""
    specs = [
        MetricSpec(
            f"{prefix}{field}_total",
            f"{what}: {text} since the last zeroing (ipvsadm -Z); u64, lags up to 2 s.",
            C,
            labels,
            source,
        )
        for field, text in _STAT_FIELDS
    ]
    specs += [
        MetricSpec(
            f"{prefix}{field}_per_second",
            f"{what}: the kernel estimator's rate of {text} (EWMA over ~8 s, refreshed every 2 s).",
            G,
            labels,
            source,
        )
        for field, text in _STAT_FIELDS
    ]
    return specs


SPECS: tuple[MetricSpec, ...] = (
    # --- health of the exporter and of each source ---------------------------------------
    MetricSpec(
        "ipvs_up",
        "1 if IPVS is loaded and was read, 0 if IPVS is not loaded (a state, not a failure).",
        G,
        (),
        "services",
    ),
    MetricSpec(
        "ipvs_scrape_source_success",
        "1 if this source was read in this scrape, 0 if it failed (see the log line).",
        G,
        ("source",),
        "health",
    ),
    MetricSpec(
        "ipvs_scrape_source_duration_seconds",
        "Time spent reading this source in this scrape.",
        G,
        ("source",),
        "health",
    ),
    MetricSpec(
        "ipvs_exporter_build_info",
        "lvsprobe's version and the Python that runs it; value 1.",
        G,
        ("version", "python_version"),
        "health",
    ),
    MetricSpec(
        "ipvs_info",
        "The IPVS version and the interface it was read through (netlink or procfs); value 1.",
        G,
        ("version", "via"),
        "services",
    ),
    MetricSpec(
        "ipvs_exporter_dropped_series_total",
        "Series not exported since start: backends over --collector.backends.max-series.",
        C,
        ("reason",),
        "health",
    ),
    MetricSpec(
        "ipvs_exporter_dropped_backends",
        "Backends left out of this scrape by --collector.backends.max-series.",
        G,
        (),
        "health",
    ),
    # --- netns totals (/proc/net/ip_vs_stats) --------------------------------------------
    *_stat_specs("ipvs_", "All services of the namespace", (), "stats"),
    # --- virtual services ------------------------------------------------------------------
    MetricSpec(
        "ipvs_service_info",
        "A virtual service: scheduler, flags, persistence and persistence engine; value 1.",
        G,
        (*SERVICE_LABELS, "scheduler", "flags", "persistent", "pe_name"),
        "services",
    ),
    MetricSpec(
        "ipvs_service_name_info",
        "The name --names gives a virtual service, for joins; value 1.",
        G,
        (*SERVICE_LABELS, "name"),
        "services",
    ),
    MetricSpec(
        "ipvs_service_persistence_timeout_seconds",
        "Persistence timeout (ipvsadm -p) of a persistent service.",
        G,
        SERVICE_LABELS,
        "services",
    ),
    MetricSpec(
        "ipvs_service_backends",
        "Real servers configured for the service (before any --collector.backends cap).",
        G,
        SERVICE_LABELS,
        "services",
    ),
    MetricSpec(
        "ipvs_service_usable_backends",
        "Real servers of the service with weight > 0 (the scheduler can pick them).",
        G,
        SERVICE_LABELS,
        "services",
    ),
    *_stat_specs("ipvs_service_", "Virtual service", SERVICE_LABELS, "services"),
    # --- real servers ------------------------------------------------------------------
    MetricSpec(
        "ipvs_backend_weight", "Configured weight; 0 drains.", G, BACKEND_LABELS, "services"
    ),
    MetricSpec(
        "ipvs_backend_active_connections",
        "Connections in an active state (TCP ESTABLISHED) on this real server.",
        G,
        BACKEND_LABELS,
        "services",
    ),
    MetricSpec(
        "ipvs_backend_inactive_connections",
        "Connections in any other state (TIME_WAIT, FIN_WAIT, UDP, ...) on this real server.",
        G,
        BACKEND_LABELS,
        "services",
    ),
    MetricSpec(
        "ipvs_backend_persistent_connections",
        "Persistence templates pointing at this real server (netlink only).",
        G,
        BACKEND_LABELS,
        "services",
    ),
    MetricSpec(
        "ipvs_backend_upper_threshold_connections",
        "Upper connection threshold (ipvsadm -x); 0 means none (netlink only).",
        G,
        BACKEND_LABELS,
        "services",
    ),
    MetricSpec(
        "ipvs_backend_lower_threshold_connections",
        "Lower connection threshold (ipvsadm -y); 0 means none (netlink only).",
        G,
        BACKEND_LABELS,
        "services",
    ),
    *_stat_specs("ipvs_backend_", "Real server", BACKEND_LABELS, "services"),
    # --- connection table (/proc/net/ip_vs_conn[_sync]) ----------------------------------
    MetricSpec(
        "ipvs_conn_entries",
        "Connection-table entries (templates excluded) by virtual service and state; "
        'port="" gathers entries of no configured service (FTP data, fwmark services).',
        G,
        CONN_LABELS,
        "conns",
    ),
    MetricSpec(
        "ipvs_backend_conn_entries",
        "Connection-table entries by real server and state (--collector.conns=per-real-server).",
        G,
        BACKEND_CONN_LABELS,
        "conns",
    ),
    MetricSpec(
        "ipvs_conn_templates",
        "Persistence templates in the connection table by virtual service; "
        'port="0" for templates keyed without ports (persistent FTP or port-0 services).',
        G,
        SERVICE_LABELS,
        "conns",
    ),
    MetricSpec(
        "ipvs_conn_table_entries",
        "All connection-table entries of the namespace (templates included) by origin: "
        "local, or sync (created by the backup sync daemon).",
        G,
        ("origin",),
        "conns",
    ),
    MetricSpec(
        "ipvs_conn_table_buckets",
        "Size of the connection hash table (conn_tab_bits; global to the host).",
        G,
        (),
        "services",
    ),
    MetricSpec(
        "ipvs_conn_slab_object_size_bytes",
        "Bytes one ip_vs_conn slab object occupies (sizeof rounded to a cache line).",
        G,
        (),
        "slab",
    ),
    MetricSpec(
        "ipvs_conn_slab_active_objects",
        "Allocated ip_vs_conn slab objects (connections and templates of all namespaces).",
        G,
        (),
        "slab",
    ),
    MetricSpec(
        "ipvs_conn_table_memory_bytes",
        "Estimated kernel memory of the connection table: entries x slab object size + "
        "buckets x 8.",
        G,
        (),
        "slab",
    ),
    # --- sync daemons, timeouts, sysctls --------------------------------------------------
    MetricSpec(
        "ipvs_sync_daemon_up",
        "1 if the connection-sync daemon of this role (master, backup) runs, else 0.",
        G,
        ("role",),
        "daemons",
    ),
    MetricSpec(
        "ipvs_sync_daemon_info",
        "A running connection-sync daemon's settings; value 1.",
        G,
        ("role", "interface", "sync_id", "sync_group", "sync_port"),
        "daemons",
    ),
    MetricSpec(
        "ipvs_connection_timeout_seconds",
        "Connection timeouts (ipvsadm --set): tcp, tcp_fin, udp.",
        G,
        ("timeout",),
        "timeouts",
    ),
    MetricSpec(
        "ipvs_sysctl",
        "Numeric net.ipv4.vs.* sysctls; index counts the values of multi-value ones.",
        G,
        ("sysctl", "index"),
        "sysctls",
    ),
)

# --- keepalived (--collector.keepalived; lvsprobe/exporter/keepalived.py) ---------------------
KEEPALIVED_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "ipvs_keepalived_up",
        "1 if the keepalived of --keepalived.pid-file runs, 0 if not (a state, not a failure).",
        G,
        (),
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_state",
        "1 for the state a VRRP instance is in (init, backup, master, fault, deleted, stop), "
        "0 for the others.",
        G,
        (*VRRP_LABELS, "vrrp_state"),
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_info",
        "A VRRP instance's virtual router id and interface; value 1.",
        G,
        (*VRRP_LABELS, "vrid", "interface"),
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_priority",
        "The configured priority of a VRRP instance.",
        G,
        VRRP_LABELS,
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_effective_priority",
        "The priority a VRRP instance advertises: configured, changed by tracked scripts, "
        "interfaces and files.",
        G,
        VRRP_LABELS,
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_vip",
        "1 if keepalived has set this virtual address of the VRRP instance (it holds it), "
        "else 0; address as in the service labels.",
        G,
        (*VRRP_LABELS, "address"),
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_become_master_total",
        "Times the VRRP instance became MASTER since keepalived started.",
        C,
        VRRP_LABELS,
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_release_master_total",
        "Times the VRRP instance left MASTER since keepalived started.",
        C,
        VRRP_LABELS,
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_last_transition_timestamp_seconds",
        "Unix time of the VRRP instance's last state change.",
        G,
        VRRP_LABELS,
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_adverts_received_total",
        "VRRP advertisements the instance received.",
        C,
        VRRP_LABELS,
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_vrrp_adverts_sent_total",
        "VRRP advertisements the instance sent.",
        C,
        VRRP_LABELS,
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_service_up",
        "1 if keepalived counts the virtual_server's quorum of alive real servers as met, else 0.",
        G,
        SERVICE_LABELS,
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_backend_up",
        "1 if keepalived's health checkers find the real server alive, 0 if they took it out "
        "(weight 0 with inhibit_on_failure, else removed); labels as ipvs_backend_weight.",
        G,
        BACKEND_LABELS,
        "keepalived",
    ),
    MetricSpec(
        "ipvs_keepalived_backend_failed_checkers",
        "Health checkers of the real server that fail now.",
        G,
        BACKEND_LABELS,
        "keepalived",
    ),
)
SPECS += KEEPALIVED_SPECS

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in SPECS}
