"""keepalived's side of a drill: its notify lines and JSON dumps parsed, and what its timers
predict for a VRRP takeover and for a health checker's verdicts.

VRRPv3 (RFC 5798), which keepalived follows: a backup takes over when no advert came for
Master_Down_Interval = 3 x Master_Adver_Interval + Skew_Time, Skew_Time = (256 - priority) x
Master_Adver_Interval / 256; on a priority-0 advert (a master stopping cleanly) it waits
Skew_Time alone. A fault lands anywhere between two adverts, so a silent master (frozen, link
cut) is replaced between Master_Down_Interval - advert_int and Master_Down_Interval after it.

keepalived's checkers (check_tcp.c, check_http.c): a real server is declared down after
retry + 1 failed attempts, delay_before_retry apart, the first at the next check (delay_loop
after the last one); each attempt fails at once when refused, after connect_timeout when it
times out. A down server is checked every max(delay_loop, delay_before_retry) and is up again
at the first success.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lvsprobe.errors import ParseError

VRRP_STATES = {0: "INIT", 1: "BACKUP", 2: "MASTER", 3: "FAULT"}  # keepalived's vrrp->state
_INSTANCE = re.compile(r'^(INSTANCE|GROUP) "([^"]+)" ([A-Z_]+) (\d+)$')
_RS = re.compile(r"^RS (\[[^\]]+\]:\w+:\d+) (\[[^\]]+\]:\w+:\d+|FWM \d+) (UP|DOWN)$")
_VS = re.compile(r"^VS (\[[^\]]+\]:\w+:\d+|FWM \d+) (UP|DOWN)$")


@dataclass(frozen=True, slots=True)
class NotifyEvent:
    """One line keepalived wrote to its notify FIFO, with when it was read (s since the run's
    start) and on which director. kind: instance, group, rs or vs."""

    t_s: float
    ns: str
    kind: str
    name: str  # the instance or group; the real server `[addr]:proto:port`; the virtual server
    state: str  # MASTER, BACKUP, FAULT, STOP, MASTER_RX_LOWER_PRI...; UP or DOWN
    priority: int | None = None
    vs: str | None = None  # rs: its virtual server
    line: str = ""  # as keepalived wrote it

    def to_json(self) -> dict[str, Any]:
        """As RUN/events.json keeps it: the raw line, parsed again on reading."""
        return {"ns": self.ns, "t_s": self.t_s, "line": self.line}


def parse_notify_line(line: str, t_s: float, ns: str, source: str = "notify") -> NotifyEvent:
    """One notify FIFO line (keepalived.conf(5), notify_fifo); ParseError for any other."""
    if m := _INSTANCE.match(line):
        return NotifyEvent(t_s, ns, m[1].lower(), m[2], m[3], int(m[4]), line=line)
    if m := _RS.match(line):
        return NotifyEvent(t_s, ns, "rs", m[1], m[3], vs=m[2], line=line)
    if m := _VS.match(line):
        return NotifyEvent(t_s, ns, "vs", m[1], m[2], line=line)
    raise ParseError(source, None, line, "not a keepalived notify line")


def read_notify_log(text: str, ns: str, t0_unix: float, source: str) -> list[NotifyEvent]:
    """RUN/keepalived/NS-events.jsonl (`{"unix": T, "line": L}` per line, written by the lab's
    notify reader): events with times relative to `t0_unix`."""
    events = []
    for no, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)
            unix, line = float(doc["unix"]), str(doc["line"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ParseError(source, no, raw, f"expected {{unix, line}}: {exc}") from None
        events.append(parse_notify_line(line, round(unix - t0_unix, 6), ns, f"{source} line {no}"))
    return events


def parse_vrrp_json(text: str, source: str) -> dict[str, tuple[str, float]]:
    """`keepalived --signum=JSON`'s dump: instance -> (state, last_transition in Unix s)."""
    try:
        doc = json.loads(text)
        out = {}
        for item in doc:
            data = item["data"]
            state = VRRP_STATES.get(int(data["state"]), f"STATE_{data['state']}")
            out[str(data["iname"])] = (state, float(data["last_transition"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ParseError(source, None, None, f"not a keepalived JSON dump: {exc}") from None
    return out


@dataclass(frozen=True, slots=True)
class Timers:
    """keepalived's settings as a drill records them (RUN/events.json "keepalived")."""

    advert_int_s: float
    priorities: Mapping[str, int]
    preempt: bool
    delay_loop_s: float
    connect_timeout_s: float
    retry: int
    delay_before_retry_s: float
    inhibit_on_failure: bool

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], source: str) -> Timers:
        try:
            return cls(
                float(doc["advert_int_s"]),
                {str(k): int(v) for k, v in doc["priorities"].items()},
                bool(doc["preempt"]),
                float(doc["delay_loop_s"]),
                float(doc["connect_timeout_s"]),
                int(doc["retry"]),
                float(doc["delay_before_retry_s"]),
                bool(doc["inhibit_on_failure"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ParseError(source, None, None, f"keepalived settings: {exc}") from None

    def skew_s(self, director: str) -> float:
        return (256 - self.priorities[director]) * self.advert_int_s / 256

    def master_down_s(self, director: str) -> float:
        return 3 * self.advert_int_s + self.skew_s(director)

    def takeover_window(self, fault: str, backup: str) -> tuple[float, float]:
        """When `backup` becomes MASTER after `fault` on the master: s after the fault."""
        if fault == "stop":  # a clean stop sends a priority-0 advert: Skew_Time
            return self.skew_s(backup), self.skew_s(backup)
        down = self.master_down_s(backup)
        return down - self.advert_int_s, down

    def checker_down_window(self, timed_out: bool) -> tuple[float, float]:
        """When a real server is declared down after it failed: refused attempts fail at
        once, timed-out ones after connect_timeout (s after the failure)."""
        attempt = self.connect_timeout_s if timed_out else 0.0
        base = (self.retry + 1) * attempt + self.retry * self.delay_before_retry_s
        return base, base + self.delay_loop_s

    def checker_up_bound(self, timed_out: bool) -> float:
        """Latest a recovered server is up again: the attempt in flight (timing out), the
        wait of a down server's check, then one quick success."""
        attempt = self.connect_timeout_s if timed_out else 0.0
        return attempt + max(self.delay_loop_s, self.delay_before_retry_s)


def master_intervals(
    events: Sequence[NotifyEvent], ns: str, end_s: float
) -> list[tuple[float, float]]:
    """When `ns` said it was MASTER: [(from, to)], from its instance notify lines (keepalived
    repeats MASTER_RX_LOWER_PRI while master: not a change of state)."""
    out: list[tuple[float, float]] = []
    since: float | None = None
    for e in events:
        if e.ns != ns or e.kind != "instance" or e.state == "MASTER_RX_LOWER_PRI":
            continue
        if e.state == "MASTER" and since is None:
            since = e.t_s
        elif e.state != "MASTER" and since is not None:
            out.append((since, e.t_s))
            since = None
    if since is not None:
        out.append((since, end_s))
    return out


def overlap_s(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> float:
    """Total time two sets of intervals overlap (two MASTERs: split brain)."""
    return sum(max(0.0, min(x1, y1) - max(x0, y0)) for x0, x1 in a for y0, y1 in b)


def this_run(intervals: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The part of each interval from the run's start (0) on: a notify log kept across drills
    on one cluster also holds the earlier drills' transitions (negative times)."""
    return [(max(a, 0.0), b) for a, b in intervals if b > 0.0]


def first_after(
    events: Sequence[NotifyEvent], t_s: float, ns: str, kind: str, state: str, name: str = ""
) -> NotifyEvent | None:
    """The first event of `ns` at or after `t_s` with this kind, state (and name)."""
    return next(
        (
            e
            for e in events
            if e.t_s >= t_s
            and e.ns == ns
            and e.kind == kind
            and e.state == state
            and (not name or e.name == name)
        ),
        None,
    )


def within(measured: float, window: tuple[float, float], tolerance_s: float) -> bool:
    return window[0] - tolerance_s <= measured <= window[1] + tolerance_s


@dataclass(frozen=True)
class KeepalivedRecord:
    """The keepalived part of a drill's RUN/events.json (lvsprobe.lab.drill, healthdrill)."""

    timers: Timers
    faults: list[dict[str, Any]]
    notify: list[NotifyEvent]
    dumps: list[dict[str, Any]]
    victim: dict[str, Any] | None = None
    active: str = "lvs1"
    directors: list[dict[str, Any]] | None = None
    victim_conns: str | None = None


def read_keepalived_record(doc: Any, source: str) -> KeepalivedRecord | None:
    """None when the drill ran without keepalived; ParseError naming what is malformed."""
    if not isinstance(doc, dict) or doc.get("ha") != "keepalived":
        return None
    try:
        faults = [dict(f) for f in doc.get("faults", [])]
        for f in faults:
            f["t_s"] = float(f["t_s"])
            str(f["fault"]), str(f["target"])
        notify = [
            parse_notify_line(str(n["line"]), float(n["t_s"]), str(n["ns"]), f"{source} notify")
            for n in doc.get("notify", [])
        ]
        return KeepalivedRecord(
            Timers.from_json(doc["keepalived"], source),
            faults,
            sorted(notify, key=lambda e: e.t_s),
            [dict(d) for d in doc.get("vrrp_dumps", [])],
            dict(doc["victim"]) if doc.get("victim") else None,
            str(doc.get("active_director", "lvs1")),
            [dict(d) for d in doc.get("directors", [])],
            doc.get("victim_conns"),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ParseError(source, None, None, f"malformed keepalived record: {exc!r}") from None


def master_at(
    dumps: Sequence[Mapping[str, Any]],
    notify: Sequence[NotifyEvent],
    ns: str,
    after: str,
    since: float,
) -> tuple[float, str] | None:
    """When `ns` became MASTER at or after `since`: keepalived's own time (the drill's JSON
    dump taken `after` the takeover or fail-back), else when its notify line was read."""
    for d in dumps:
        exact = d.get("ns") == ns and d.get("after") == after and d.get("state") == "MASTER"
        if exact and float(d["last_transition_s"]) >= since - 0.5:
            return float(d["last_transition_s"]), "keepalived-json"
    seen = first_after(notify, since, ns, "instance", "MASTER")
    return None if seen is None else (seen.t_s, "notify")


def _other(ns: str) -> str:
    return "lvs2" if ns == "lvs1" else "lvs1"


def vrrp_timing(rec: KeepalivedRecord, end_s: float, tolerance_s: float) -> dict[str, Any]:
    """The takeover after the drill's director fault against VRRP's prediction, the fail-back
    (expected with preempt, or after a freeze: the frozen master never left MASTER), and how
    long both directors said MASTER."""
    fault = next((f for f in rec.faults if f["fault"] in ("stop", "freeze", "link")), None)
    if fault is None:
        return {"passed": None, "detail": "no director fault in the record"}
    kind, master = fault["fault"], fault["target"]
    backup, t_fault = _other(master), fault["t_s"]
    since = float(fault.get("started_s") or t_fault)
    window = rec.timers.takeover_window(kind, backup)
    doc: dict[str, Any] = {
        "fault": kind,
        "master": master,
        "backup": backup,
        "fault_s": t_fault,
        "predicted_s": list(window),
        "tolerance_s": tolerance_s,
    }
    checks: list[tuple[str, bool | None, str]] = []
    took = master_at(rec.dumps, rec.notify, backup, "takeover", since)
    if took is None:
        checks.append(("takeover", False, f"{backup} never became MASTER"))
    else:
        doc["takeover_s"], doc["takeover_evidence"] = round(took[0] - t_fault, 4), took[1]
        seen = first_after(rec.notify, since, backup, "instance", "MASTER")
        if seen is not None and took[1] == "keepalived-json":
            doc["notify_latency_s"] = round(seen.t_s - took[0], 4)
        ok = within(took[0] - t_fault, window, tolerance_s)
        checks.append(
            (
                "takeover",
                ok,
                f"{backup} MASTER {took[0] - t_fault:.3f} s after the "
                f"{kind} ({took[1]}); predicted {window[0]:.3f}..{window[1]:.3f} s",
            )
        )
    checks.append(_failback(rec, fault, doc, tolerance_s))
    ends = [
        (a, min(b, t_fault)) if kind == "stop" and a < t_fault else (a, b)
        for a, b in master_intervals(rec.notify, master, end_s)
    ]
    both = overlap_s(this_run(ends), this_run(master_intervals(rec.notify, backup, end_s)))
    doc["both_master_s"] = round(both, 3)
    if kind == "freeze":  # the frozen one still holds the VIPs and cannot know: expected
        checks.append(
            (
                "split brain",
                None,
                f"both MASTER for {both:.2f} s (a frozen master "
                "keeps its VIPs until it runs again)",
            )
        )
    else:
        limit = rec.timers.advert_int_s + tolerance_s
        checks.append(
            ("split brain", both <= limit, f"both MASTER for {both:.2f} s (allowed {limit:.2f} s)")
        )
    doc["checks"] = [{"check": c, "passed": p, "detail": d} for c, p, d in checks]
    decided = [p for _, p, _ in checks if p is not None]
    doc["passed"] = all(decided) if decided else None
    doc["detail"] = "; ".join(d for _, _, d in checks)
    return doc


def _failback(
    rec: KeepalivedRecord, fault: Mapping[str, Any], doc: dict[str, Any], tolerance_s: float
) -> tuple[str, bool | None, str]:
    kind, master, undo = fault["fault"], fault["target"], fault.get("undo_s")
    if undo is None:
        return "fail-back", None, "the fault was never undone"
    expected = kind == "freeze" or rec.timers.preempt
    doc["failback_expected"] = expected
    since = float(fault.get("undo_started_s") or undo)
    if kind == "freeze":  # it resumes as MASTER (it never left): the backup must step down
        bound = rec.timers.advert_int_s
        down = first_after(rec.notify, since, _other(master), "instance", "BACKUP")
        if down is None:
            return "fail-back", False, f"{_other(master)} stayed MASTER after {master} resumed"
        doc["failback_s"] = round(down.t_s - undo, 4)
        return (
            "fail-back",
            down.t_s - undo <= bound + tolerance_s,
            (
                f"{_other(master)} BACKUP again {down.t_s - undo:.3f} s after {master} resumed "
                f"(SIGCONT; its overdue advert: ≤ {bound:.3f} s)"
            ),
        )
    back = master_at(rec.dumps, rec.notify, master, "failback", since)
    if back is None:
        return (
            "fail-back",
            not expected,
            (
                f"{master} stayed BACKUP after the undo"
                + (" (nopreempt: as configured)" if not expected else ": expected it to preempt")
            ),
        )
    doc["failback_s"] = round(back[0] - undo, 4)
    if not expected:
        return "fail-back", False, f"{master} took the VIPs back though nopreempt"
    rejoin = first_after(rec.notify, undo, master, "instance", "BACKUP")
    if rejoin is None or rejoin.t_s > back[0]:
        return "fail-back", True, f"{master} MASTER again {back[0] - undo:.3f} s after the undo"
    doc["rejoin_s"] = round(rejoin.t_s - undo, 4)
    down_s = rec.timers.master_down_s(master)
    preempted = back[0] - rejoin.t_s
    return (
        "fail-back",
        preempted <= down_s + tolerance_s,
        (
            f"{master} back as BACKUP {rejoin.t_s - undo:.3f} s after the undo (keepalived's "
            f"start), MASTER {preempted:.3f} s later (preempt; ≤ {down_s:.3f} s)"
        ),
    )
