"""The flows of a run spread over Dask workers, merged into one flow log as they arrive.

Workers send their finished flows in chunks (`encode_rows`: an Arrow IPC stream of flow-log
rows) while they run, then a `done` message with how many rows they sent. The merge keeps
each planned flow once: a row whose flow id is not its shard's, or was already taken, is
dropped and counted, never written. A shard whose worker is lost before its `done` is
failed, and the flows it did not deliver are counted as lost.

Messages (msgpack-able dicts, what a Dask queue carries), each with `shard` and `kind`:
    ready  {worker}                     the shard's plan is rebuilt and checked
    rows   {rows: bytes, started: int}  a chunk; `started` = flows its engine began so far
    done   {sent, stop_reason, cpu_s: {engine, process}}
The first `rows` (or the `done` of a shard that sent none) also says when its engine started:
`start_unix` on its worker's clock, `late_s` after the run's start instant.
    error  {message}                    the shard could not run
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lvsprobe.errors import LvsprobeError
from lvsprobe.replay import flowlog
from lvsprobe.replay.flowlog import FlowRecord
from lvsprobe.replay.shard import Shard


def encode_rows(records: Sequence[FlowRecord]) -> bytes:
    """Flow-log rows as one Arrow IPC stream (what a worker sends)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, flowlog.flow_schema()) as writer:
        writer.write_table(flowlog.records_to_table(records))
    return bytes(sink.getvalue().to_pybytes())


def decode_rows(data: bytes, source: str) -> list[FlowRecord]:
    """The rows `encode_rows` wrote; LvsprobeError naming `source` if they are not that."""
    import pyarrow as pa

    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, OSError, TypeError) as exc:
        raise LvsprobeError(f"{source}: not a chunk of flow-log rows: {exc}") from exc
    if not table.schema.remove_metadata().equals(flowlog.flow_schema().remove_metadata()):
        raise LvsprobeError(f"{source}: rows of another flow-log schema (another lvsprobe?)")
    return flowlog.records_from_table(table)


class ShardStatus(enum.Enum):
    PLANNED = "planned"  # submitted, not ready yet
    READY = "ready"  # plan rebuilt, waiting for the start instant
    DONE = "done"
    FAILED = "failed"


@dataclass
class ShardState:
    """One shard's accounting on the client."""

    shard: Shard
    status: ShardStatus = ShardStatus.PLANNED
    received: int = 0
    started: int = 0
    dropped: int = 0  # rows not of this shard's plan, or already taken
    reason: str | None = None
    stop_reason: str | None = None
    start_unix: float | None = None  # when its engine started, on its worker's clock
    late_s: float | None = None  # how long after the run's start instant that was
    cpu_s: Mapping[str, float] | None = None  # its engine thread's, its worker process's

    @property
    def lost(self) -> int:
        """Planned flows of a failed shard that are not in the log."""
        return self.shard.flows - self.received if self.status is ShardStatus.FAILED else 0

    @property
    def finished(self) -> bool:
        return self.status in (ShardStatus.DONE, ShardStatus.FAILED)

    def describe(self) -> dict[str, Any]:
        """The shard as summary.json records it."""
        return {
            "index": self.shard.index,
            "worker": self.shard.worker_name,
            "address": self.shard.worker_address,
            "clients": len(self.shard.clients),
            "planned": self.shard.flows,
            "flows": self.received,
            "lost": self.lost,
            "dropped": self.dropped,
            "status": self.status.value,
            "reason": self.reason,
            "stopped": self.stop_reason,
            "start_unix": self.start_unix,
            "start_late_s": None if self.late_s is None else round(self.late_s, 6),
            "cpu_s": self.cpu_s,
        }


class Merge:
    """Takes the workers' messages; holds the merged records and each shard's state."""

    def __init__(self, shards: Iterable[Shard]) -> None:
        self.states = {s.index: ShardState(s) for s in shards}
        self.records: list[FlowRecord] = []
        self._seen: set[int] = set()

    def take(self, message: Mapping[str, Any]) -> list[FlowRecord]:
        """Apply one message; returns the records it added (new, planned, of its shard)."""
        try:
            state = self.states[int(message["shard"])]
            kind = str(message["kind"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LvsprobeError(f"a worker sent a message lvsprobe does not know: {exc}") from exc
        if state.finished:
            return []  # a late message of a shard already failed or done
        if message.get("start_unix") is not None:
            state.start_unix = float(message["start_unix"])
            state.late_s = float(message.get("late_s") or 0.0)
        if kind == "ready":
            state.status = ShardStatus.READY
        elif kind == "rows":
            return self._rows(state, message)
        elif kind == "done":
            state.stop_reason = message.get("stop_reason")
            state.cpu_s = message.get("cpu_s")
            missing = int(message.get("sent", 0)) - state.received - state.dropped
            state.status = ShardStatus.DONE
            if missing > 0:  # one worker's messages arrive in order: these never will
                state.status, state.reason = ShardStatus.FAILED, f"{missing} rows lost in transit"
        elif kind == "error":
            self.fail(state.shard.index, str(message.get("message")))
        return []

    def _rows(self, state: ShardState, message: Mapping[str, Any]) -> list[FlowRecord]:
        shard = state.shard
        source = f"shard {shard.index} (worker {shard.worker_name!r})"
        late_s = state.late_s or 0.0
        added = []
        for record in decode_rows(message["rows"], source):
            if record.flow_id not in shard.flow_ids or record.flow_id in self._seen:
                state.dropped += 1
                continue
            self._seen.add(record.flow_id)
            record.worker = shard.worker_name
            # the engine timed its flows from its own start, late_s after the run's start
            # instant: moved onto the run's timeline (the client's start instant, which the
            # conn-table snapshots and scheduled_s count from)
            record.start_s += late_s
            record.end_s += late_s
            added.append(record)
        state.received += len(added)
        state.started = max(state.started, int(message.get("started", 0)))
        self.records.extend(added)
        return added

    def fail(self, index: int, reason: str) -> None:
        """Mark shard `index` failed (its undelivered flows are lost), unless it ended."""
        state = self.states[index]
        if not state.finished:
            state.status, state.reason = ShardStatus.FAILED, reason

    @property
    def failed(self) -> list[ShardState]:
        return [s for s in self.states.values() if s.status is ShardStatus.FAILED]

    def failure_line(self) -> str | None:
        """The one line a run with failed shards ends with, None if none failed."""
        failed = self.failed
        if not failed:
            return None
        parts = [
            f"shard {s.shard.index} on worker {s.shard.worker_name!r} "
            f"({s.shard.worker_address}) failed: {s.reason}; {s.lost} of its "
            f"{s.shard.flows} flows lost, {s.received} in the log"
            for s in failed
        ]
        return "; ".join(parts)


def skew_summary(states: Iterable[ShardState], time_delay_s: Mapping[str, float]) -> dict[str, Any]:
    """How far apart the shards started. `start_skew_s`: the spread of their engines' start
    instants, each read on its worker's clock (right when the hosts' clocks agree, as on one
    host or with NTP). `dask_time_delay_s`: each worker's clock offset from the scheduler's
    as Dask measured it (by worker address), and `dask_start_skew_s` the spread of the start
    instants corrected by it (right when the clocks disagree; noisy on a loaded host)."""
    known = [(s.start_unix, s.shard.worker_address) for s in states if s.start_unix is not None]
    starts = [start for start, _ in known]
    corrected = [start + time_delay_s.get(address, 0.0) for start, address in known]

    def spread(values: list[float]) -> float | None:
        return round(max(values) - min(values), 6) if values else None

    return {
        "start_skew_s": spread(starts),
        "dask_start_skew_s": spread(corrected),
        "dask_time_delay_s": {k: round(v, 6) for k, v in sorted(time_delay_s.items())},
    }
