"""The dashboards' keepalived queries: the ones tests/lab/test_keepalived.py proves on the lab's
Prometheus (tests/dashboards/test_lab_proof.py proves all the others)."""

from __future__ import annotations

from lvsprobe.dashboards import promql, proof

# (dashboard, panel, ref) of every query that reads --collector.keepalived's series; the lab
# test checks each one's values, so a new one must be added there and here.
KEEPALIVED_QUERIES = {
    ("lvsprobe-ipvs-sync", "annotation VRRP failovers (keepalived)", ""),
    ("lvsprobe-ipvs-sync", "VIP holder (VRRP)", "A"),
    ("lvsprobe-ipvs-sync", "VRRP priority", "A"),
    ("lvsprobe-ipvs-sync", "VIPs held", "A"),
    ("lvsprobe-ipvs-service", "Health checker verdict (keepalived)", "A"),
    ("lvsprobe-ipvs-service", "Real servers", "F"),
}


def test_needs_keepalived_picks_exactly_the_keepalived_queries() -> None:
    queries = [q for d in proof.exporter_dashboards() for q in promql.panel_queries(d)]
    picked = {(q.dashboard, q.panel_title, q.ref_id) for q in queries if proof.needs_keepalived(q)}
    assert picked == KEEPALIVED_QUERIES
    others = [q for q in queries if not proof.needs_keepalived(q)]
    assert others and all("keepalived" not in q.expr for q in others)


def test_the_replay_dashboard_is_not_an_exporters() -> None:
    uids = {d["uid"] for d in proof.exporter_dashboards()}
    assert "lvsprobe-ipvs-sync" in uids and not any("replay" in uid for uid in uids)
