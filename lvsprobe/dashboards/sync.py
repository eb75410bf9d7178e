"""Sync and failover: which director holds the VIP, and whether the backup could take over."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.models import dashboard as dash_m

from lvsprobe.dashboards import variables
from lvsprobe.dashboards.panels import (
    DATASOURCE,
    DIRECTOR,
    DIRECTOR_LEGEND,
    Query,
    Row,
    dashboard,
    dashboards_link,
    rate,
    sel,
    state_timeline,
    sum_by,
    table,
    timeseries,
    value_text,
)

UID = "lvsprobe-ipvs-sync"
ESTABLISHED = sel("ipvs_conn_entries", 'state="ESTABLISHED"')
VRRP_BY = f"{DIRECTOR}, vrrp_instance"
VRRP_LEGEND = "{{vrrp_instance}} on {{instance}} {{netns}}"
# keepalived's own state numbers (VRRP_STATE_* in vrrp.h): the state set folded into one value.
VRRP_STATE_CODES = (("backup", 1), ("master", 2), ("fault", 3))


def vrrp_state_code() -> str:
    """Per director and VRRP instance: 0 init/stop, 1 BACKUP, 2 MASTER, 3 FAULT."""
    terms = []
    for state, code in VRRP_STATE_CODES:
        selector = sel("ipvs_keepalived_vrrp_state", f'vrrp_state="{state}"')
        terms.append(f"{code} * {sum_by(VRRP_BY, selector)}")
    return " + ".join(terms)


def failover_annotation() -> dash_b.AnnotationQuery:
    """A mark where a VRRP instance became MASTER on a director. keepalived counts those, but a
    restarted keepalived starts its counter again at 1, which `increase` never sees; so an
    instance that is MASTER now and was not (or was not there) a minute earlier is marked too."""
    increase = f"increase({sel('ipvs_keepalived_vrrp_become_master_total')}[1m])"
    master = sel("ipvs_keepalived_vrrp_state", 'vrrp_state="master"')
    now = f"{sum_by(VRRP_BY, master)} == 1"
    before = f"{sum_by(VRRP_BY, master + ' offset 1m')} == 1"
    return (
        dash_b.AnnotationQuery()
        .name("VRRP failovers (keepalived)")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("red")
        .expr(f"({sum_by(VRRP_BY, increase)} > 0) or (({now}) unless ({before}))")
    )


def _vrrp() -> Row:
    return Row(
        "VRRP (keepalived, --collector.keepalived)",
        [
            state_timeline(
                "VIP holder (VRRP)",
                "keepalived's VRRP state of each instance on each director: the MASTER holds "
                "the instance's VIPs. Two MASTERs of one instance: split brain "
                "(KeepalivedSplitBrain); none: nobody holds them (KeepalivedNoMaster). Red "
                "marks (the VRRP failovers annotation) are the moments an instance became "
                "MASTER.",
                [Query(vrrp_state_code(), VRRP_LEGEND)],
                mappings=value_text(
                    {
                        "0": ("INIT/STOP", "text"),
                        "1": ("BACKUP", "blue"),
                        "2": ("MASTER (holds VIPs)", "green"),
                        "3": ("FAULT", "red"),
                    }
                ),
                thresholds=((None, "text"), (1, "blue"), (2, "green"), (3, "red")),
            ),
            timeseries(
                "VRRP priority",
                "Effective priority each director advertises (configured, changed by tracked "
                "scripts, interfaces and files). The highest wins MASTER, unless nopreempt.",
                [
                    Query(
                        sel("ipvs_keepalived_vrrp_effective_priority"),
                        VRRP_LEGEND,
                    )
                ],
                unit="none",
            ),
            table(
                "VIPs held",
                "The virtual addresses keepalived has set on each director now.",
                [Query(f"{sel('ipvs_keepalived_vrrp_vip')} == 1")],
                hide=("Time", "__name__", "job", "Value"),
                height=6,
            ),
        ],
    )


def _roles() -> Row:
    return Row(
        "Roles",
        [
            state_timeline(
                "VIP holder (from traffic)",
                "A director that receives packets for its virtual services holds the VIP, as "
                "inferred from the rate of incoming packets (VIP holder (VRRP) has keepalived's "
                "own view). Two directors receiving at once: split brain (or both VIPs "
                "configured on purpose); none: the VIP is nowhere or there is no traffic.",
                [
                    Query(
                        f"sum by ({DIRECTOR}) ({rate('ipvs_incoming_packets_total')}) > bool 0",
                        DIRECTOR_LEGEND,
                    )
                ],
                mappings=value_text(
                    {"0": ("idle", "text"), "1": ("receiving (holds VIP)", "green")}
                ),
                thresholds=((None, "text"), (1, "green")),
            ),
            state_timeline(
                "Sync daemons",
                "The IPVS connection-sync daemons of each director (ipvsadm --start-daemon). "
                "The active director needs a master daemon and the standby a backup daemon; "
                "keepalived's lvs_sync_daemon runs both on both so roles can swap. A missing "
                "backup daemon means a failover drops every connection; alert "
                "SyncDaemonDown fires when a daemon that ran in the last day stops.",
                [Query(sel("ipvs_sync_daemon_up"), "{{instance}} {{netns}} {{role}}")],
                mappings=value_text({"0": ("stopped", "text"), "1": ("running", "green")}),
                thresholds=((None, "text"), (1, "green")),
            ),
            table(
                "Sync daemon settings",
                "Interface, sync id, multicast group and port of each running daemon. Master "
                "and backup must share the sync id (and group/port) or the backup ignores "
                "the master's messages.",
                [Query(sel("ipvs_sync_daemon_info"))],
                hide=("Time", "__name__", "job", "Value"),
                height=6,
            ),
            table(
                "Sync sysctls",
                "sync_threshold (sync when in_pkts % period == threshold; default 3 50), "
                "sync_refresh_period, sync_version, sync_persist_mode and friends.",
                [Query(sel("ipvs_sysctl", 'sysctl=~"sync_.*"'))],
                hide=("Time", "__name__", "job"),
                rename={"Value": "value"},
                height=6,
                width=12,
            ),
        ],
    )


def _state() -> Row:
    synced = sel("ipvs_conn_table_entries", 'origin="sync"')
    local = sel("ipvs_conn_table_entries", 'origin="local"')
    return Row(
        "Replicated state",
        [
            timeseries(
                "Synced entries",
                "Entries this director received from the master's sync daemon. On the "
                "standby it should follow the active director's ESTABLISHED count.",
                [Query(sum_by(DIRECTOR, synced), DIRECTOR_LEGEND)],
                unit="short",
            ),
            timeseries(
                "Backup coverage",
                "Synced entries on each director over the largest local table (the active "
                "director's). Below 1 by design: SYN_RECV entries and connections with fewer "
                "than 3 inbound packets are not synced (sync_threshold); what is missing is "
                "what a failover now would break.",
                [
                    Query(
                        f"{sum_by(DIRECTOR, synced)} / scalar(max({sum_by(DIRECTOR, local)}))",
                        DIRECTOR_LEGEND,
                    )
                ],
                unit="percentunit",
            ),
            timeseries(
                "Entries by origin",
                "Local (own traffic) and sync entries per director. After a failover the new "
                "active director's local entries grow while its sync entries expire.",
                [
                    Query(
                        f"sum by ({DIRECTOR}, origin) ({sel('ipvs_conn_table_entries')})",
                        "{{instance}} {{origin}}",
                    )
                ],
                unit="short",
            ),
            timeseries(
                "New connections/s per director",
                "Where new connections are scheduled: the line moves from one director to the "
                "other at a failover.",
                [Query(sum_by(DIRECTOR, rate("ipvs_connections_total")), DIRECTOR_LEGEND)],
                unit="cps",
            ),
            timeseries(
                "Established entries per director",
                "ESTABLISHED entries on each director, local and synced: what each could keep "
                "serving if it held the VIP.",
                [
                    Query(
                        f"sum by ({DIRECTOR}) ({ESTABLISHED})",
                        DIRECTOR_LEGEND,
                    )
                ],
                unit="short",
                width=24,
            ),
        ],
    )


def build() -> dash_m.Dashboard:
    return dashboard(
        UID,
        "IPVS sync and failover",
        "Both directors side by side: who holds the VIP, the sync daemons, and how much of "
        "the active director's connection table the standby already has.",
        variables.standard(),
        [_vrrp(), _roles(), _state()],
        links=[dashboards_link()],
        annotations=[failover_annotation()],
    )
