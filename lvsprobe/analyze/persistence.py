"""Persistence and affinity: clients stay on one backend for the timeout (ip_vs_core.c
ip_vs_sched_persist), FTP data lands with its control connection, resumed TLS sessions stay
on the server that issued them. Violations are listed with their flows."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from lvsprobe.analyze.inputs import ServiceModel, backend_column, ip
from lvsprobe.errors import AnalysisError

# A template that still controls connections is re-armed for 60 s when it expires
# (ip_vs_conn.c), so a client returning in that window may still stick: not a violation.
TEMPLATE_REARM_S = 60.0
MAX_LISTED = 50


def client_net(address: str, prefix: int | None) -> str:
    """caddr & netmask, the template's key (`-M`; default /32 or /128)."""
    addr = ip(address)
    bits = addr.max_prefixlen if prefix is None else min(prefix, addr.max_prefixlen)
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


@dataclass
class Violation:
    check: str
    client_net: str
    flow_id: int
    start_s: float
    backend: str | None
    expected: str | None
    reason: str

    @classmethod
    def of_flow(
        cls, check: str, net: object, row: Any, expected: str | None, reason: str
    ) -> Violation:
        """A violation by one flow (a row of the flow log)."""
        return cls(
            check, str(net), int(row.flow_id), float(row.start_s), row.served_by, expected, reason
        )


@dataclass
class PersistenceResult:
    service: str
    timeout_s: float
    prefix_len: int | None
    client_nets: int
    flows_checked: int
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        decided = [c["passed"] for c in self.checks.values() if c["passed"] is not None]
        return bool(decided) and all(decided)

    def to_json(self) -> dict[str, Any]:
        doc = dataclasses.asdict(self)
        doc["violations"] = doc["violations"][:MAX_LISTED]
        doc["violations_total"] = len(self.violations)
        doc["passed"] = self.passed
        return doc


def _sticky(flows: pd.DataFrame, timeout_s: float, prefix: int | None) -> list[Violation]:
    """Every flow of a client net must follow the net's template while it lives."""
    out: list[Violation] = []
    for net, group in flows.groupby("net", sort=False):
        template: str | None = None
        must_until = -1.0  # surely alive before this
        may_until = -1.0  # possibly alive (re-armed) before this
        for row in group.itertuples(index=False):
            start = float(row.start_s)
            if template is not None and start < must_until and row.served_by != template:
                reason = f"moved while its template lived (until {must_until:.3f} s)"
                out.append(Violation.of_flow("client", net, row, template, reason))
                continue
            if template is None or start >= may_until or row.served_by == template:
                template = row.served_by
            must_until = max(must_until, start + timeout_s)
            may_until = max(may_until, must_until, float(row.end_s) + TEMPLATE_REARM_S)
    return out


def _ftp(flows: pd.DataFrame, data_backends: dict[tuple[str, int], str]) -> list[Violation]:
    """FTP sessions: the transfer worked, and the data connection (if the connection table
    caught it) went to the control connection's backend."""
    out: list[Violation] = []
    for row in flows.itertuples(index=False):
        problem = None
        expected = row.served_by
        if row.outcome != "ok":
            problem = f"FTP session failed: {row.outcome} {row.detail or ''}".strip()
        elif row.ftp_checksum_ok is False:
            problem = "the retrieved file's checksum did not match"
        port = row.ftp_data_client_port
        key = (str(row.client_address), int(port)) if pd.notna(port) else None
        if problem is None and key in data_backends and data_backends[key] != expected:
            problem = f"data connection went to {data_backends[key]}"
        if problem:
            out.append(Violation.of_flow("ftp", row.net, row, expected, problem))
    return out


def _tls(flows: pd.DataFrame, persistent: bool) -> tuple[list[Violation], int, int]:
    """A resumed session must be on the backend of the client's last full handshake."""
    out: list[Violation] = []
    resumed = not_resumed = 0
    for net, group in flows.groupby("net", sort=False):
        issuer: str | None = None
        for row in group.itertuples(index=False):
            if row.tls_session_reused is True:
                resumed += 1
                if issuer is not None and row.served_by != issuer:
                    reason = "resumed a session on a server that did not issue it"
                    out.append(Violation.of_flow("tls", net, row, issuer, reason))
            else:
                if issuer is not None and persistent:
                    not_resumed += 1
                    reason = "full handshake: the saved session was not resumed"
                    out.append(Violation.of_flow("tls", net, row, issuer, reason))
                issuer = row.served_by
    return out, resumed, not_resumed


def analyze_persistence(
    flows: pd.DataFrame,
    model: ServiceModel,
    service: str,
    timeout_s: float | None = None,
    prefix_len: int | None = None,
    data_conns: Iterable[tuple[str, int, str]] = (),
) -> PersistenceResult:
    """Check persistence of one service's flows. `data_conns`: (client, port, backend) of
    connections seen in the director's table (FTP data connections among them)."""
    timeout = timeout_s if timeout_s is not None else model.persistence_s
    prefix = prefix_len if prefix_len is not None else model.netmask_prefix
    if not timeout:
        raise AnalysisError(
            f"service {service}: not persistent (no -p in the director snapshot); "
            "pass --timeout to check stickiness anyway"
        )
    served = backend_column(flows)
    work = flows[served.notna()].copy()
    if work.empty:
        raise AnalysisError(f"service {service}: no flow reached a backend")
    work["served_by"] = served[served.notna()].astype(str)
    work["net"] = [client_net(a, prefix) for a in work["client_address"]]
    work = work.sort_values(["start_s", "flow_id"], kind="stable")
    result = PersistenceResult(
        service, float(timeout), prefix, int(work["net"].nunique()), len(work)
    )
    sticky = _sticky(work, float(timeout), prefix)
    result.violations += sticky
    result.checks["client"] = {
        "passed": not sticky,
        "detail": f"{len(work) - len(sticky)}/{len(work)} flows on their client net's backend",
    }
    ftp = work[work["kind"].str.startswith("ftp")]
    failed_ftp = flows[flows["kind"].str.startswith("ftp") & served.isna()]
    if not ftp.empty or not failed_ftp.empty:
        data = {(c, int(p)): b for c, p, b in data_conns}
        bad = _ftp(ftp, data)
        bad += [
            Violation("ftp", "?", int(r.flow_id), float(r.start_s), None, None, str(r.outcome))
            for r in failed_ftp.itertuples(index=False)
        ]
        result.violations += bad
        total = len(ftp) + len(failed_ftp)
        result.checks["ftp"] = {
            "passed": not bad,
            "detail": f"{total - len(bad)}/{total} FTP sessions transferred on one backend",
        }
    tls = work[work["kind"] == "tls"]
    if not tls.empty:
        bad, resumed, missed = _tls(tls, persistent=True)
        result.violations += bad
        result.checks["tls"] = {
            "passed": not bad,
            "detail": f"{resumed} resumed sessions, {missed} not resumed, "
            f"{len(bad)} violations over {len(tls)} TLS flows",
        }
    return result
