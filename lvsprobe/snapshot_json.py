"""A Snapshot as JSON, with a stable schema (`lvsprobe status --json`), and back.

The schema is versioned by `schema`; fields are only ever added. Addresses are printed the way
ipvsadm prints them (compressed IPv6), protocols as names, units in the key names.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lvsprobe.backends_json import ONE_LINE, backends_texts, backends_to_json
from lvsprobe.errors import ParseError
from lvsprobe.model import (
    RATE_FIELDS,
    STAT_FIELDS,
    ConnCountKey,
    ConnSummary,
    Daemon,
    DaemonState,
    Family,
    Forward,
    IPAddress,
    Origin,
    Persistence,
    Protocol,
    Rates,
    RealServer,
    RealServerRows,
    Service,
    ServiceFlag,
    ServiceKey,
    Slab,
    Snapshot,
    SourceFailure,
    Stats,
    Timeouts,
    Tunnel,
    Unread,
)

SCHEMA = 1
SOURCE = "snapshot JSON"


def _addr(value: IPAddress | None) -> str | None:
    return None if value is None else str(value)


def _plain(obj: Any) -> Any:
    return None if obj is None else dataclasses.asdict(obj)


def _counters(record: Stats | Rates | None) -> dict[str, int] | None:
    """A service's Stats or Rates as `_plain` has them, without its deep copy (10^4 services
    a snapshot)."""
    if record is None:
        return None
    return {name: getattr(record, name) for name in _COUNTER_FIELDS[type(record)]}


_COUNTER_FIELDS = {Stats: STAT_FIELDS, Rates: RATE_FIELDS}


def service_to_json(svc: Service) -> dict[str, Any]:
    return {**_service_fields(svc), "backends": backends_to_json(svc.real_servers)}


def _service_fields(svc: Service) -> dict[str, Any]:
    """A service's fields but its backends (the last)."""
    key = svc.key
    p = svc.persistence
    return {
        "protocol": key.protocol.name if key.protocol is not None else None,
        "family": key.family.name.lower() if key.family is not None else None,
        "address": _addr(key.address),
        "port": key.port,
        "fwmark": key.fwmark,
        "scheduler": svc.scheduler,
        "flags": int(svc.flags),
        "one_packet": svc.one_packet,
        "persistent": None
        if p is None
        else {
            "timeout_s": p.timeout_s,
            "timeout_jiffies": p.timeout_jiffies,
            "prefix_len": p.prefix_len,
        },
        "pe_name": svc.pe_name,
        "stats": _counters(svc.stats),
        "rates": _counters(svc.rates),
    }


def services_text(services: Sequence[Service]) -> Iterator[str]:
    """`ONE_LINE.encode(service_to_json(svc))` of each service, made without its backends'
    dicts (`backends_texts`)."""
    backends = backends_texts(svc.real_servers for svc in services)
    for svc, backends_text in zip(services, backends, strict=True):
        empty = ONE_LINE.encode({**_service_fields(svc), "backends": []})
        yield empty[: -len("[]}")] + backends_text + "}"


def conns_to_json(summary: ConnSummary) -> dict[str, Any]:
    by_state = [
        {"protocol": proto, "state": state, "entries": n}
        for (proto, state), n in sorted(summary.by_state().items())
    ]
    groups = [
        {
            "protocol": k.protocol,
            "virtual_address": _addr(k.virtual_address),
            "virtual_port": k.virtual_port,
            "fwmark": k.fwmark,
            "dest_address": str(k.dest_address),
            "dest_port": k.dest_port,
            "state": k.state,
            "template": k.template,
            "origin": k.origin.value if k.origin is not None else None,
            "entries": n,
        }
        for k, n in summary.counts.items()
    ]
    return {
        "total": summary.total,
        "templates": summary.templates,
        "by_state": by_state,
        "groups": groups,
    }


def snapshot_to_json(snap: Snapshot) -> dict[str, Any]:
    """The stable JSON form of a Snapshot."""
    return _document(snap, [service_to_json(s) for s in snap.services])


# Stands for the services in the document `snapshot_json_text` writes around them.
_SERVICES_MARK = "@lvsprobe-services@"


def snapshot_json_text(snap: Snapshot) -> Iterator[str]:
    """`snapshot_to_json(snap)` as JSON text, indented, with each service on a line of its own
    (greppable, and written without its dicts: `services_text`), in pieces, a service at a
    time: a kube-proxy node's 10^4 services would otherwise be held as one ~50 MB document
    and its Python objects, several times the snapshot they come from."""
    head, tail = json.dumps(_document(snap, _SERVICES_MARK), indent=2).split(
        json.dumps(_SERVICES_MARK), 1
    )
    if not snap.services:
        yield head + "[]" + tail
        return
    yield head + "[\n"
    last = len(snap.services) - 1
    for index, text in enumerate(services_text(snap.services)):
        yield "    " + text + (",\n" if index < last else "\n")
    yield "  ]" + tail


def _document(snap: Snapshot, services: Any) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "loaded": snap.loaded,
        "via": snap.via,
        "namespace": snap.namespace,
        "version": snap.version,
        "conn_table_size": snap.conn_table_size,
        "services": services,
        "totals": _plain(snap.totals),
        "total_rates": _plain(snap.total_rates),
        "per_cpu": [_plain(s) for s in snap.per_cpu],
        "conns": None if snap.conns is None else conns_to_json(snap.conns),
        "timeouts": _plain(snap.timeouts),
        "daemons": [
            {
                **_plain(d),
                "state": d.state.name.lower(),
                "group": _addr(d.group),
            }
            for d in snap.daemons
        ],
        "sysctls": {name: list(values) for name, values in sorted(snap.sysctls.items())},
        "slab": _plain(snap.slab),
        "failures": [_plain(f) for f in snap.failures],
        "warnings": list(snap.warnings),
        "unread": [{"parts": list(u.parts), "reason": u.reason} for u in snap.unread],
    }


# --- back from JSON (the lab reads snapshots taken inside the guest) -----------------------


def _ip(text: str | None) -> IPAddress | None:
    return None if text is None else ipaddress.ip_address(text)


def _stats(d: Mapping[str, int] | None) -> Stats | None:
    return None if d is None else Stats(**d)


def _rates(d: Mapping[str, int] | None) -> Rates | None:
    return None if d is None else Rates(**d)


def _family(name: str | None) -> Family | None:
    return None if name is None else Family[name.upper()]


def _backend(d: Mapping[str, Any]) -> RealServer:
    address = _ip(d["address"])
    assert address is not None
    return RealServer(
        address=address,
        port=d["port"],
        forward=Forward[d["forward"].upper()],
        weight=d["weight"],
        active_conns=d["active_conns"],
        inactive_conns=d["inactive_conns"],
        persistent_conns=d.get("persistent_conns"),
        upper_threshold=d.get("upper_threshold"),
        lower_threshold=d.get("lower_threshold"),
        stats=_stats(d.get("stats")),
        rates=_rates(d.get("rates")),
        family=_family(d.get("family")),
        tunnel=None if d.get("tunnel") is None else Tunnel(**d["tunnel"]),
    )


def _service(d: Mapping[str, Any]) -> Service:
    p = d.get("persistent")
    return Service(
        key=ServiceKey(
            family=_family(d.get("family")),
            protocol=None if d["protocol"] is None else Protocol[d["protocol"]],
            address=_ip(d["address"]),
            port=d["port"],
            fwmark=d["fwmark"],
        ),
        scheduler=d["scheduler"],
        flags=ServiceFlag(d["flags"]),
        persistence=None if p is None else Persistence(**p),
        real_servers=RealServerRows.of(_backend(b) for b in d["backends"]),
        stats=_stats(d.get("stats")),
        rates=_rates(d.get("rates")),
        pe_name=d.get("pe_name"),
    )


def _conns(d: Mapping[str, Any] | None) -> ConnSummary | None:
    if d is None:
        return None
    counts: dict[ConnCountKey, int] = {}
    for g in d["groups"]:
        dest = _ip(g["dest_address"])
        assert dest is not None
        key = ConnCountKey(
            protocol=g["protocol"],
            virtual_address=_ip(g["virtual_address"]),
            virtual_port=g["virtual_port"],
            fwmark=g["fwmark"],
            dest_address=dest,
            dest_port=g["dest_port"],
            state=g["state"],
            template=g["template"],
            origin=None if g["origin"] is None else Origin(g["origin"]),
        )
        counts[key] = counts.get(key, 0) + g["entries"]
    return ConnSummary(counts=counts, total=d["total"])


def _daemon(d: Mapping[str, Any]) -> Daemon:
    return Daemon(
        state=DaemonState[d["state"].upper()],
        interface=d["interface"],
        sync_id=d["sync_id"],
        max_len=d.get("max_len"),
        group=_ip(d.get("group")),
        port=d.get("port"),
        ttl=d.get("ttl"),
    )


def snapshot_from_json(doc: Mapping[str, Any]) -> Snapshot:
    """Rebuild a Snapshot from `snapshot_to_json` output; ParseError on a foreign document."""
    try:
        if doc.get("schema") != SCHEMA:
            raise ParseError(SOURCE, None, None, f"unknown schema {doc.get('schema')!r}")
        return Snapshot(
            loaded=doc["loaded"],
            via=doc["via"],
            namespace=doc.get("namespace"),
            version=doc.get("version"),
            conn_table_size=doc.get("conn_table_size"),
            services=tuple(_service(s) for s in doc["services"]),
            totals=_stats(doc.get("totals")),
            total_rates=_rates(doc.get("total_rates")),
            per_cpu=tuple(Stats(**s) for s in doc.get("per_cpu", [])),
            conns=_conns(doc.get("conns")),
            timeouts=None if doc.get("timeouts") is None else Timeouts(**doc["timeouts"]),
            daemons=tuple(_daemon(d) for d in doc.get("daemons", [])),
            sysctls={k: tuple(v) for k, v in doc.get("sysctls", {}).items()},
            slab=None if doc.get("slab") is None else Slab(**doc["slab"]),
            failures=tuple(SourceFailure(**f) for f in doc.get("failures", [])),
            warnings=tuple(doc.get("warnings", [])),
            unread=tuple(
                Unread(tuple(u["parts"]), str(u["reason"])) for u in doc.get("unread", [])
            ),
        )
    except ParseError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, AssertionError) as exc:
        raise ParseError(SOURCE, None, None, f"malformed document: {exc!r}") from exc
