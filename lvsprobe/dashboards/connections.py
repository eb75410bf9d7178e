"""Connection table and memory: what fills the table, and how close it is to hurting."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as dash_m

from lvsprobe.dashboards import variables
from lvsprobe.dashboards.panels import (
    DIRECTOR,
    DIRECTOR_LEGEND,
    OK_RED,
    SERVICE_BY,
    SERVICE_LEGEND,
    Query,
    Row,
    dashboard,
    dashboards_link,
    rate,
    sel,
    stat,
    sum_by,
    table,
    timeseries,
)

UID = "lvsprobe-ipvs-conntable"

# ConnTableMemoryHigh's threshold in exporters/prometheus/ipvs-alerts.yml; a test keeps them equal.
MEMORY_ALERT_BYTES = 1 << 30
DEFENSES = sel("ipvs_sysctl", 'sysctl=~"drop_entry|drop_packet|secure_tcp"')


def _entries() -> Row:
    return Row(
        "Entries",
        [
            timeseries(
                "Entries by protocol and state",
                "Connection-table entries (templates excluded). Each entry lives until its "
                "state's timeout: TIME_WAIT 2 min, ESTABLISHED 15 min, UDP 5 min by default "
                "(ipvsadm --set). A table that only grows: long timeouts or a flood.",
                [
                    Query(
                        f"sum by (protocol, state) ({sel('ipvs_conn_entries')})",
                        "{{protocol}} {{state}}",
                    )
                ],
                unit="short",
                stack=True,
            ),
            timeseries(
                "Entries per service (top 10)",
                "The ten virtual services with the most entries.",
                [
                    Query(
                        f"topk(10, sum by ({SERVICE_BY}) ({sel('ipvs_conn_entries')}))",
                        SERVICE_LEGEND,
                    )
                ],
                unit="short",
            ),
            timeseries(
                "Persistence templates",
                "Templates pin a client (or its netmask) to a real server for the persistence "
                "timeout; one per client per persistent service. They count against memory "
                "like connections.",
                [Query(sum_by(DIRECTOR, sel("ipvs_conn_templates")), DIRECTOR_LEGEND)],
                unit="short",
            ),
            timeseries(
                "Synced vs local entries",
                "All entries (templates included) by origin: local = created by this "
                "director's traffic; sync = received from the master's sync daemon (only on "
                "a backup). unknown = read without ip_vs_conn_sync.",
                [Query(sel("ipvs_conn_table_entries"), "{{instance}} {{origin}}")],
                unit="short",
                stack=True,
            ),
            timeseries(
                "New entries/s",
                "Connections scheduled per second: the inflow that, times the timeouts, sets "
                "the table size.",
                [Query(sum_by(DIRECTOR, rate("ipvs_connections_total")), DIRECTOR_LEGEND)],
                unit="cps",
                width=24,
            ),
        ],
    )


def _memory() -> Row:
    memory = sel("ipvs_conn_table_memory_bytes")
    return Row(
        "Memory",
        [
            timeseries(
                "Table memory estimate vs alert threshold",
                "Entries × ip_vs_conn slab object size + hash buckets × 8 bytes. The dashed "
                f"line is ConnTableMemoryHigh's threshold ({MEMORY_ALERT_BYTES // 2**20} MiB). "
                "IPVS has no entry cap: under memory pressure the kernel's defenses "
                "(drop_entry, drop_packet, secure_tcp sysctls) start dropping.",
                [
                    Query(memory, DIRECTOR_LEGEND),
                    Query(f"{memory} * 0 + {MEMORY_ALERT_BYTES}", "alert threshold"),
                ],
                unit="bytes",
                thresholds=((None, "green"), (MEMORY_ALERT_BYTES, "red")),
                width=12,
            ),
            timeseries(
                "Slab objects",
                "Allocated ip_vs_conn slab objects (all namespaces of the host) next to the "
                "table's entries. Absent when the slab is merged into another cache (boot "
                "with slab_nomerge to see it).",
                [
                    Query(sel("ipvs_conn_slab_active_objects"), "slab objects {{instance}}"),
                    Query(
                        sum_by(DIRECTOR, sel("ipvs_conn_table_entries")),
                        "entries {{instance}} {{netns}}",
                    ),
                ],
                unit="short",
                width=12,
            ),
            stat(
                "Slab object size",
                "Bytes per ip_vs_conn entry (sizeof rounded to a cache line; 320 on 6.1).",
                [Query(sel("ipvs_conn_slab_object_size_bytes"), "{{instance}}")],
                unit="bytes",
            ),
            stat(
                "Hash buckets",
                "Connection hash table size (ip_vs conn_tab_bits module parameter, host-wide). "
                "Entries per bucket above ~8 makes lookups slow: raise conn_tab_bits.",
                [Query(sel("ipvs_conn_table_buckets"), "{{instance}}")],
            ),
            stat(
                "Entries per bucket",
                "Average hash-chain length: all entries over buckets.",
                [
                    Query(
                        f"sum by ({DIRECTOR}) ({sel('ipvs_conn_table_entries')}) / on ({DIRECTOR}) "
                        f"{sel('ipvs_conn_table_buckets')}",
                        DIRECTOR_LEGEND,
                    )
                ],
                thresholds=((None, "green"), (8, "orange"), (32, "red")),
            ),
            stat(
                "Memory defenses on",
                "How many of drop_entry, drop_packet and secure_tcp are not 0 (0 = never, "
                "1-2 = automatic under low memory, 3 = always).",
                [
                    Query(
                        f"sum by ({DIRECTOR}) ({DEFENSES} > bool 0)",
                        DIRECTOR_LEGEND,
                    )
                ],
                thresholds=OK_RED,
            ),
            table(
                "Timeouts and memory sysctls",
                "Connection timeouts (ipvsadm --set: tcp, tcp_fin, udp, in seconds) and the "
                "sysctls that govern memory: amemthresh (pages), drop_entry, drop_packet, "
                "secure_tcp, am_droprate, expire_nodest_conn.",
                [
                    Query(sel("ipvs_connection_timeout_seconds")),
                    Query(
                        sel(
                            "ipvs_sysctl",
                            'sysctl=~"amemthresh|am_droprate|drop_entry|drop_packet|secure_tcp|expire_nodest_conn"',
                        )
                    ),
                ],
                hide=("Time", "__name__", "job"),
                rename={"Value #A": "timeout (s)", "Value #B": "sysctl value"},
            ),
        ],
    )


def build() -> dash_m.Dashboard:
    return dashboard(
        UID,
        "IPVS connection table and memory",
        "The IPVS connection table: entries by state, persistence templates, synced vs local "
        "entries, and its kernel memory against the alert threshold.",
        variables.standard(),
        [_entries(), _memory()],
        links=[dashboards_link()],
    )
