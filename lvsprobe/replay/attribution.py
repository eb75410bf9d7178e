"""Backend attribution from the director's connection table (/proc/net/ip_vs_conn).

Snapshots are taken during the run (a local file such as /proc/net/ip_vs_conn, another
network namespace through `ip netns exec`, or files captured elsewhere) and joined on the
flow's client address:port and the virtual address:port it went to -> the real server.
Entries live on after a flow ends (TIME_WAIT 120 s, UDP 300 s), so a snapshot at the end of
a run still sees the short flows; when a client port was reused, the first snapshot taken
after the flow started wins.
"""

from __future__ import annotations

import ipaddress
import json
import math
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lvsprobe.errors import LvsprobeError
from lvsprobe.kernel.procfs.limits import CONN_TABLE_DEFAULT_MAX_BYTES, CONN_TABLE_OPTION
from lvsprobe.replay.flowlog import SNAPSHOT_DIR, SNAPSHOT_INDEX, FlowRecord

ConnKey = tuple[str, str, int]  # (protocol lower-case, client address, client port)
# The virtual address:port a connection went to: one client address:port can have entries to
# two services at once (an FTP data connection's ephemeral port, reused by a later flow).
Virtual = tuple[str, int]
# the flow-log columns `attribute` fills (after the run: not in the run's journal)
JOINED_COLUMNS = ("conn_backend_address", "conn_backend", "attribution_agrees")


@dataclass(frozen=True, slots=True)
class ConnSnapshot:
    t_s: float
    data: bytes


def conn_table_source(
    spec: str, max_bytes: int = CONN_TABLE_DEFAULT_MAX_BYTES
) -> Callable[[], bytes]:
    """A reader for `--conn-table`: `netns:NAME` (ip netns exec NAME head …) or a file path;
    a table longer than `max_bytes` is an error, never read further."""
    if spec.startswith("netns:"):
        name = spec.removeprefix("netns:")
        # head stops at one byte past the limit: that byte says the table is too long.
        argv = ["ip", "netns", "exec", name, "head", "-c", str(max_bytes + 1)]
        argv.append("/proc/net/ip_vs_conn")

        def read_netns() -> bytes:
            proc = subprocess.run(argv, capture_output=True, timeout=30, check=False)
            if proc.returncode != 0:
                err = proc.stderr.decode(errors="replace").strip()
                raise LvsprobeError(f"conn table of netns {name}: {err or proc.returncode}")
            if len(proc.stdout) > max_bytes:
                raise LvsprobeError(
                    f"conn table of netns {name}: longer than {max_bytes} bytes: raise the "
                    f"limit with {CONN_TABLE_OPTION}"
                )
            return proc.stdout

        return read_netns
    path = Path(spec)
    return lambda: _read_table(path, max_bytes)


def save_snapshots(run_dir: Path, snapshots: Iterable[ConnSnapshot]) -> int:
    """Write RUN/conn-snapshots/NNNN.txt and index.json; returns how many."""
    out = run_dir / SNAPSHOT_DIR
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for n, snap in enumerate(snapshots):
        name = f"{n:04d}.txt"
        (out / name).write_bytes(snap.data)
        index.append({"file": name, "t_s": round(snap.t_s, 6)})
    (out / SNAPSHOT_INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return len(index)


def load_snapshots(
    directory: Path, max_bytes: int = CONN_TABLE_DEFAULT_MAX_BYTES
) -> list[ConnSnapshot]:
    """Snapshots from a conn-snapshots directory (index.json if present, else every file),
    each at most `max_bytes`."""
    index_path = directory / SNAPSHOT_INDEX
    if index_path.exists():
        entries = json.loads(index_path.read_text())
        return [
            ConnSnapshot(float(e["t_s"]), _read_table(directory / e["file"], max_bytes))
            for e in entries
        ]
    # no index: capture times unknown, so every snapshot may serve every flow (in name order)
    files = sorted(p for p in directory.iterdir() if p.is_file())
    return [ConnSnapshot(math.inf, _read_table(p, max_bytes)) for p in files]


def _read_table(path: Path, max_bytes: int) -> bytes:
    """A regular file of at most `max_bytes` (the conn-table readers are imported when used)."""
    from lvsprobe.kernel.procfs.ip_vs_conn import read_conn_table_file

    return read_conn_table_file(path, max_bytes=max_bytes)


def _parse(data: bytes) -> dict[ConnKey, dict[Virtual, str]]:
    """{client key: {virtual address:port: backend ADDRESS:PORT}} of a snapshot's entries."""
    from lvsprobe.kernel.procfs.ip_vs_conn import iter_ip_vs_conn  # only a run with snapshots

    table: dict[ConnKey, dict[Virtual, str]] = {}
    for conn in iter_ip_vs_conn(data):
        if conn.is_template:
            continue
        dest = conn.dest_address
        shown = f"[{dest}]" if dest.version == 6 else str(dest)
        key = (conn.protocol.lower(), str(conn.client_address), conn.client_port)
        virtual = (str(conn.virtual_address), conn.virtual_port)
        table.setdefault(key, {})[virtual] = f"{shown}:{conn.dest_port}"
    return table


def _backend_in(
    table: dict[ConnKey, dict[Virtual, str]], key: ConnKey, virtual: Virtual
) -> str | None:
    """The backend of the flow's entry: the one to its virtual address:port, else the client
    address:port's only entry (a service reached through a firewall mark); None when the
    entries are to other services only, or several with none to its own."""
    entries = table.get(key)
    if not entries:
        return None
    if virtual in entries:
        return entries[virtual]
    return next(iter(entries.values())) if len(entries) == 1 else None


def backend_names(backends: Mapping[str, str]) -> dict[str, str]:
    """Target `backends` {name: ADDRESS[:PORT]} -> {ADDRESS:PORT or ADDRESS: name}."""
    names: dict[str, str] = {}
    for name, spec in backends.items():
        names[_canonical(spec)] = name
    return names


def _canonical(spec: str) -> str:
    if spec.startswith("["):
        host, _, port = spec[1:].partition("]:")
        return f"[{ipaddress.ip_address(host)}]" + (f":{port}" if port else "")
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return f"{ipaddress.ip_address(host)}:{port}"
    address = ipaddress.ip_address(spec)
    return f"[{address}]" if address.version == 6 else str(address)


def _name_of(address_port: str, names: Mapping[str, str]) -> str | None:
    if address_port in names:
        return names[address_port]
    return names.get(address_port.rsplit(":", 1)[0])


def attribute(
    records: list[FlowRecord], snapshots: list[ConnSnapshot], backends: Mapping[str, str]
) -> int:
    """Fill conn_backend_address / conn_backend / attribution_agrees; returns flows matched.

    Parsing snapshots is the cost (under TCG especially), so the last snapshot is tried first
    for every client address:port used by one flow only; the rest (ports reused within the
    run, flows the last snapshot lacks) scan the snapshots in time order, parsed on demand.
    """
    ordered = sorted(snapshots, key=lambda s: s.t_s)
    names = backend_names(backends)
    by_key: dict[ConnKey, list[FlowRecord]] = {}
    virtual: dict[int, Virtual] = {}
    for rec in records:
        if rec.client_port is not None:
            key = (rec.protocol, str(ipaddress.ip_address(rec.client_address)), rec.client_port)
            by_key.setdefault(key, []).append(rec)
            virtual[id(rec)] = (str(ipaddress.ip_address(rec.server_address)), rec.server_port)
    found: dict[int, str] = {}
    if ordered:
        last = ordered[-1]
        final = _parse(last.data)
        for key, recs in by_key.items():
            if len(recs) == 1 and last.t_s + 1e-3 >= recs[0].start_s:
                backend = _backend_in(final, key, virtual[id(recs[0])])
                if backend is not None:
                    found[id(recs[0])] = backend
    pending = [(k, r) for k, recs in by_key.items() for r in recs if id(r) not in found]
    for snap in ordered:
        if not pending:
            break
        table = _parse(snap.data)
        still = []
        for key, rec in pending:
            backend = (
                _backend_in(table, key, virtual[id(rec)])
                if snap.t_s + 1e-3 >= rec.start_s
                else None
            )
            if backend is not None:
                found[id(rec)] = backend
            else:
                still.append((key, rec))
        pending = still
    for rec in records:
        address = found.get(id(rec))
        if address is None:
            continue
        rec.conn_backend_address = address
        rec.conn_backend = _name_of(address, names)
        if rec.backend is not None and rec.conn_backend is not None:
            rec.attribution_agrees = rec.backend == rec.conn_backend
    return len(found)
