"""A scenario's `expect:` block: what its flow log must show, checked after a run.

Keys (all optional; `lab` is free-form: the lab topology the scenario is meant for).
Each value is checked when the scenario loads, so a mistyped check stops the run before
any traffic:

    all_ok: true                   every flow ended `ok`
    shares: {rs1: 33, rs2: 33}     exact flows per backend
    equal_shares: true             per-backend counts differ by at most one
    backends_used: 3               this many distinct backends served flows
    sticky_per_client: true        each client address always on the same backend
    tls_resumed_after_first: true  every TLS flow after a client's first one resumed
    tls_max_resumed_fraction: 0.5  at most this share of those flows resumed
    ftp_checksums: true            every FTP transfer had the right size and sha256
    attribution_agrees: true       self-named backend == conn-table backend on every flow
    min_heartbeats: 10             every held flow got at least this many heartbeats answered
"""

from __future__ import annotations

import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.limits import MAX_FLOWS
from lvsprobe.replay.yamldoc import Reader


def _flag(r: Reader, key: str) -> bool:
    return r.flag(key, False)


def _count(r: Reader, key: str) -> int:
    return r.integer(key, lo=0, hi=MAX_FLOWS)


def _fraction(r: Reader, key: str) -> float:
    return r.number(key, 0.0, lo=0.0, hi=1.0)


def _shares(r: Reader, key: str) -> dict[str, int]:
    shares = Reader(r.doc, (*r.path, key), None, "a mapping BACKEND: FLOWS")
    if not shares.data:
        raise r.err(key, "expected at least one BACKEND: FLOWS")
    return {name: _count(shares, name) for name in shares.data}


def _free(r: Reader, key: str) -> Any:
    return r.data[key]  # documentation for people and the lab, not checked here


# Every check and how its value is read: the loader validates `expect:` with this table,
# so a mistyped check fails before the run, not after it.
READERS: dict[str, Callable[[Reader, str], Any]] = {
    "all_ok": _flag,
    "shares": _shares,
    "equal_shares": _flag,
    "backends_used": _count,
    "sticky_per_client": _flag,
    "tls_resumed_after_first": _flag,
    "tls_max_resumed_fraction": _fraction,
    "ftp_checksums": _flag,
    "attribution_agrees": _flag,
    "min_heartbeats": _count,
    "lab": _free,
}
KNOWN = tuple(READERS)


def read_expect(top: Reader) -> dict[str, Any]:
    """The scenario's `expect:` block (under the top-level reader), every value checked."""
    if not top.has("expect"):
        return {}
    r = Reader(top.doc, ("expect",), KNOWN, "a mapping of checks")
    return {key: READERS[key](r, key) for key in r.data}


def _backend(record: FlowRecord) -> str | None:
    return record.backend or record.conn_backend


def check_expectations(expect: Mapping[str, Any], records: Iterable[FlowRecord]) -> list[str]:
    """Failed checks, one line each (empty: everything held). What only some checks need (the
    flows by backend, by client) is gathered only for them: a pass over every flow each."""
    rows = sorted(records, key=operator.attrgetter("flow_id"))
    failures = [f"unknown expectation {key!r}" for key in expect if key not in KNOWN]
    if expect.get("all_ok"):
        bad = Counter(r.outcome for r in rows if r.outcome != "ok")
        if bad:
            failures.append(f"all_ok: {sum(bad.values())} flows failed: {dict(bad)}")
    if {"shares", "equal_shares", "backends_used"} & set(expect):
        failures += _share_failures(expect, rows)
    by_client: dict[str, list[FlowRecord]] = defaultdict(list)
    if {"sticky_per_client", "tls_resumed_after_first", "tls_max_resumed_fraction"} & set(expect):
        for r in rows:
            by_client[r.client_address].append(r)
    if expect.get("sticky_per_client"):
        moved = [c for c, rs in by_client.items() if len({_backend(r) for r in rs}) > 1]
        if moved:
            failures.append(f"sticky_per_client: {len(moved)} clients moved, e.g. {moved[:3]}")
    later = [r for rs in by_client.values() for r in rs[1:] if r.kind == "tls"]
    if expect.get("tls_resumed_after_first"):
        fresh = [r.flow_id for r in later if not r.tls_session_reused]
        if fresh or not later:
            failures.append(f"tls_resumed_after_first: {len(fresh)} of {len(later)} not resumed")
    if "tls_max_resumed_fraction" in expect and later:
        share = sum(1 for r in later if r.tls_session_reused) / len(later)
        if share > float(expect["tls_max_resumed_fraction"]):
            failures.append(f"tls_max_resumed_fraction: {share:.2f} resumed")
    if expect.get("ftp_checksums"):
        ftp = [r for r in rows if r.kind.startswith("ftp")]
        bad_ftp = [r.flow_id for r in ftp if not r.ftp_checksum_ok]
        if bad_ftp or not ftp:
            failures.append(f"ftp_checksums: {len(bad_ftp)} of {len(ftp)} transfers wrong")
    if expect.get("attribution_agrees"):
        judged = [r for r in rows if r.kind != "syn"]
        missing = [r.flow_id for r in judged if r.attribution_agrees is None]
        wrong = [r.flow_id for r in judged if r.attribution_agrees is False]
        if missing or wrong:
            failures.append(
                f"attribution_agrees: {len(wrong)} disagree, {len(missing)} not attributed "
                f"both ways (e.g. flows {(wrong + missing)[:5]})"
            )
    if "min_heartbeats" in expect:
        held = [r for r in rows if r.kind == "tcp" and r.heartbeats < int(expect["min_heartbeats"])]
        if held:
            failures.append(f"min_heartbeats: {len(held)} flows below {expect['min_heartbeats']}")
    return failures


def _share_failures(expect: Mapping[str, Any], rows: list[FlowRecord]) -> list[str]:
    """The `shares`, `equal_shares` and `backends_used` checks' failures."""
    failures = []
    counts = Counter(b for r in rows if (b := _backend(r)) is not None)
    if "shares" in expect and dict(counts) != {str(k): v for k, v in expect["shares"].items()}:
        failures.append(
            f"shares: expected {dict(expect['shares'])}, got {dict(sorted(counts.items()))}"
        )
    if expect.get("equal_shares") and counts and max(counts.values()) - min(counts.values()) > 1:
        failures.append(f"equal_shares: got {dict(sorted(counts.items()))}")
    if "backends_used" in expect and len(counts) != expect["backends_used"]:
        failures.append(f"backends_used: expected {expect['backends_used']}, got {len(counts)}")
    return failures
