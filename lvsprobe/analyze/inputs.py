"""What the analyzers read: a replay run directory, director snapshots, the service's shape.

The run directory is the replay's (lvsprobe/replay/flowlog.py): flows.parquet, summary.json,
target.json, conn-snapshots/. Column names are the flow log's; they are named once here.
Everything missing or malformed becomes an AnalysisError naming the file and what is wrong.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lvsprobe.analyze.schedulers import KNOWN
from lvsprobe.errors import AnalysisError, LvsprobeError
from lvsprobe.kernel.procfs.ip_vs_conn import iter_ip_vs_conn
from lvsprobe.replay import flowlog
from lvsprobe.replay.flowlog import COLUMNS

FLOWS_FILE = "flows.parquet"
SUMMARY_FILE = "summary.json"
TARGET_FILE = "target.json"
SNAPSHOT_DIR = "conn-snapshots"
DIRECTOR_FILES = ("director.json", "director-before.json")

# The flow-log columns the analyzers need (flowlog.FLOW_SCHEMA has more).
REQUIRED_COLUMNS = (
    "flow_id",
    "kind",
    "client_address",
    "client_port",
    "server_address",
    "server_port",
    "protocol",
    "start_s",
    "end_s",
    "outcome",
)
OPTIONAL_COLUMNS = (
    "connect_s",
    "backend",
    "conn_backend",
    "conn_backend_address",
    "heartbeats",
    "tls_session_reused",
    "ftp_data_client_port",
    "ftp_checksum_ok",
    "detail",
    "start_unix",  # the lab's failover drill times its events from it (lab/drill.py)
)


# What each column holds: the replay's own declaration, (Arrow type name, nullable).
_DECLARED = {name: (kind, nullable) for name, kind, nullable in COLUMNS}


@dataclass(frozen=True, slots=True)
class Backend:
    """A real server as the analyzers name it: id, address, port, weight."""

    name: str
    address: str
    port: int
    weight: int


@dataclass(frozen=True, slots=True)
class ServiceModel:
    """A service's scheduler, flags and backends in the kernel's list order."""

    scheduler: str
    backends: tuple[Backend, ...]
    flags: frozenset[str] = frozenset()  # sh-port, sh-fallback, mh-port, mh-fallback
    persistence_s: int | None = None
    netmask_prefix: int | None = None
    source: str = "unknown"

    @property
    def weights(self) -> list[int]:
        return [b.weight for b in self.backends]

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.backends]


@dataclass
class Run:
    """A loaded run directory."""

    path: Path
    flows: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)

    def service_label(self) -> str:
        t = self.target
        if t.get("fwmark"):
            return f"FWM {t['fwmark']}"
        proto = str(t.get("protocol", "tcp")).upper()
        if t.get("address") is None and not self.flows.empty:
            row = self.flows.iloc[0]
            return f"{row['protocol'].upper()} {row['server_address']}:{row['server_port']}"
        return f"{proto} {t.get('address')}:{t.get('port')}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnalysisError(f"{path}: unreadable JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise AnalysisError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    return doc


def _check_column(path: Path, name: str, column: Any) -> None:
    """AnalysisError unless `column` holds what the flow log declares (flowlog.COLUMNS):
    an analyzer doing arithmetic on text would fail far from the cause."""
    import pyarrow as pa

    declared, nullable = _DECLARED[name]
    expected, fits = {
        "int32": ("integers", pa.types.is_integer),
        "int64": ("integers", pa.types.is_integer),
        "float64": ("numbers", lambda t: pa.types.is_floating(t) or pa.types.is_integer(t)),
        "string": ("text", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        "bool_": ("true/false", pa.types.is_boolean),
    }[declared]
    kind = column.type
    if pa.types.is_dictionary(kind):  # pandas categoricals are written this way
        kind = kind.value_type
    if pa.types.is_null(kind) and nullable:
        return
    if not fits(kind):
        raise AnalysisError(f"{path}: column {name!r} holds {kind} values, expected {expected}")
    if not nullable and column.null_count:
        raise AnalysisError(
            f"{path}: column {name!r} has {column.null_count} empty values, expected {expected}"
        )


def read_flows(path: Path) -> pd.DataFrame:
    """flows.parquet as a DataFrame with the columns the analyzers use, checked.

    Only those columns are read (a pyarrow dataset, projected): a log of millions of flows
    (`replay run --workers`) is analysed without decoding the columns no analyzer reads,
    text ones (ftp_sha256, tls_version, worker) among them."""
    journal = path.parent / flowlog.JOURNAL_FILE
    if not path.is_file() and not journal.is_file():
        raise AnalysisError(
            f"{path}: no flow log (a run directory written by `lvsprobe replay run --out` "
            "has flows.parquet)"
        )
    try:
        # A run that was killed left its journal only: every flow it finished is there.
        table = _read_columns(path) if path.is_file() else flowlog.read_flows(path.parent)
    except (OSError, ValueError, LvsprobeError) as exc:  # ArrowInvalid is a ValueError
        raise AnalysisError(f"{path}: not a readable Parquet flow log: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise AnalysisError(
            f"{path}: not an lvsprobe flow log: missing column(s) {', '.join(missing)}"
        )
    for name in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS):
        if name in table.column_names:
            _check_column(path, name, table.column(name))
    frame = table.to_pandas()
    for col in OPTIONAL_COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    return frame.sort_values(["start_s", "flow_id"], kind="stable").reset_index(drop=True)


def _read_columns(path: Path) -> Any:
    """The analyzers' columns of a Parquet flow log (those it has: a missing required one is
    reported by the caller), as an Arrow table."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(path), format="parquet")
    wanted = [c for c in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS) if c in dataset.schema.names]
    return dataset.to_table(columns=wanted)


def load_run(run_dir: Path) -> Run:
    """Read RUN/: the flow log (required, non-empty), summary and target (optional)."""
    if not run_dir.is_dir():
        raise AnalysisError(f"{run_dir}: not a directory (expected a replay run directory)")
    flows = read_flows(run_dir / FLOWS_FILE)
    if flows.empty:
        raise AnalysisError(f"{run_dir / FLOWS_FILE}: the run has no flows: nothing to analyze")
    summary = _read_json(run_dir / SUMMARY_FILE) if (run_dir / SUMMARY_FILE).is_file() else {}
    target = _read_json(run_dir / TARGET_FILE) if (run_dir / TARGET_FILE).is_file() else {}
    return Run(path=run_dir, flows=flows, summary=summary, target=target)


def backend_column(flows: pd.DataFrame) -> pd.Series:
    """Who served each flow: the backend's own name, else the connection table's."""
    own = flows["backend"].astype(object)
    table = flows["conn_backend"].astype(object)
    return own.where(own.notna(), table)


def parse_weights(text: str) -> list[tuple[str, int]]:
    """`rs1=4,rs2=3,rs3=2` (kernel list order) -> [(name, weight)]."""
    out: list[tuple[str, int]] = []
    for part in text.split(","):
        name, sep, weight = part.strip().partition("=")
        if not sep or not name or not weight.strip().lstrip("-").isdigit():
            raise AnalysisError(f"--weights: expected NAME=WEIGHT[,NAME=WEIGHT...], got {part!r}")
        out.append((name.strip(), int(weight)))
    return out


def host_of(address: str) -> str:
    """`A.B.C.D[:PORT]` or `[V6]:PORT` or a bare address -> the address alone."""
    text = address.strip()
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


def _backends_from_target(target: Mapping[str, Any]) -> dict[str, str]:
    """target.json's backends: name -> address (the replay allows ADDRESS[:PORT])."""
    raw = target.get("backends") or {}
    if isinstance(raw, Mapping):
        return {str(k): host_of(str(v)) for k, v in raw.items()}
    if isinstance(raw, list):
        return {
            str(b.get("name")): host_of(str(b.get("address"))) for b in raw if isinstance(b, dict)
        }
    return {}


def _snapshot_service(doc: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any] | None:
    """The service of a `lvsprobe status --json` document the run's target names."""
    services = doc.get("services") or []
    if not isinstance(services, list):
        return None
    for svc in services:
        if not isinstance(svc, dict):
            continue
        if target.get("fwmark") and svc.get("fwmark") == target.get("fwmark"):
            return svc
        if str(svc.get("address")) == str(target.get("address")) and svc.get("port") == target.get(
            "port"
        ):
            return svc
    return services[0] if len(services) == 1 and isinstance(services[0], dict) else None


def _flag_names(scheduler: str, flags: int) -> frozenset[str]:
    names = set()
    if flags & 0x8:  # IP_VS_SVC_F_SCHED1
        names.add(f"{scheduler}-fallback")
    if flags & 0x10:  # IP_VS_SVC_F_SCHED2
        names.add(f"{scheduler}-port")
    return frozenset(names)


def service_model(
    run: Run,
    scheduler: str | None = None,
    weights: Sequence[tuple[str, int]] | None = None,
    snapshot: Path | None = None,
    flags: Sequence[str] = (),
) -> ServiceModel:
    """What the scheduler had to work with: flags first, then a director snapshot in RUN/
    (or `snapshot`), then target.json. Backends keep the kernel's list order."""
    addresses = _backends_from_target(run.target)
    doc: dict[str, Any] | None = None
    paths = [snapshot] if snapshot else [run.path / n for n in DIRECTOR_FILES]
    for path in paths:
        if path is not None and path.is_file():
            doc = _read_json(path)
            break
    svc = _snapshot_service(doc, run.target) if doc else None
    by_address = {v: k for k, v in addresses.items()}
    backends: list[Backend] = []
    source = "flags"
    if weights:
        backends = [Backend(n, addresses.get(n, n), 0, w) for n, w in weights]
    elif svc is not None:
        source = "director snapshot"
        for b in svc.get("backends") or []:
            addr = str(b.get("address"))
            name = by_address.get(addr, f"{addr}:{b.get('port')}")
            backends.append(Backend(name, addr, int(b.get("port") or 0), int(b.get("weight", 1))))
    elif isinstance(run.target.get("weights"), Mapping):
        source = "target.json"
        for name, w in run.target["weights"].items():
            backends.append(Backend(str(name), addresses.get(str(name), str(name)), 0, int(w)))
    sched = scheduler or (svc or {}).get("scheduler") or run.target.get("scheduler")
    if not sched:
        raise AnalysisError(
            f"{run.path}: which scheduler? no director snapshot ({', '.join(DIRECTOR_FILES)}) "
            "or scheduler in target.json; pass --scheduler"
        )
    if sched not in KNOWN:
        raise AnalysisError(f"unknown scheduler {sched!r} (known: {', '.join(KNOWN)})")
    if not backends:
        raise AnalysisError(
            f"{run.path}: the real servers and weights are unknown: no director snapshot and "
            "no weights in target.json; pass --weights NAME=W,... in kernel list order"
        )
    flag_set = set(flags)
    persistence = None
    prefix = None
    if svc is not None:
        flag_set |= _flag_names(sched, int(svc.get("flags") or 0))
        p = svc.get("persistent")
        if isinstance(p, dict):
            persistence = p.get("timeout_s")
            prefix = p.get("prefix_len")
    return ServiceModel(
        scheduler=sched,
        backends=tuple(backends),
        flags=frozenset(flag_set),
        persistence_s=persistence,
        netmask_prefix=prefix,
        source=source,
    )


def read_conn_snapshots(run_dir: Path) -> list[tuple[float, list[Any]]]:
    """RUN/conn-snapshots: (t_s, [Conn, ...]) per capture, parsed by the procfs reader."""
    folder = run_dir / SNAPSHOT_DIR
    if not folder.is_dir():
        raise AnalysisError(f"{folder}: the run has no connection-table snapshots")
    index_path = folder / "index.json"
    times: dict[str, float] = {}
    if index_path.is_file():
        try:
            entries = json.loads(index_path.read_text())
            times = {str(e["file"]): float(e["t_s"]) for e in entries}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AnalysisError(f"{index_path}: malformed snapshot index: {exc}") from exc
    out: list[tuple[float, list[Any]]] = []
    for n, path in enumerate(sorted(folder.glob("*.txt"))):
        try:
            conns = list(iter_ip_vs_conn(path.read_bytes(), source=str(path)))
        except LvsprobeError as exc:
            raise AnalysisError(f"{path}: {exc}") from exc
        out.append((times.get(path.name, float(n)), conns))
    if not out:
        raise AnalysisError(f"{folder}: no snapshot files (*.txt)")
    return out


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address from the flow log, or an AnalysisError naming it."""
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise AnalysisError(f"flow log: {text!r} is not an IP address") from exc
