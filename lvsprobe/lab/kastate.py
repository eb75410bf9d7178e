"""Reading the lab's keepalived from the host: its notify log, its JSON dump, its files.

Paths are lvsprobe.lab.keepalived's. Each read is one bash in the guest (builtins where they
do: every exec costs under TCG).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from lvsprobe.analyze.vrrp import NotifyEvent, parse_vrrp_json, read_notify_log
from lvsprobe.errors import LabError, ParseError
from lvsprobe.lab import keepalived

if TYPE_CHECKING:
    from lvsprobe.lab.lab import Lab

KEEPALIVED_RUN_DIR = "keepalived"  # RUN/keepalived/: what the drill copies out of the guest
DUMP_WAIT_S = 10.0


def notify_text(lab: Lab, ns: str) -> str:
    path = f"{keepalived.director_dir(ns)}/events.jsonl"
    return lab.sh(None, f'[ -e {path} ] && echo "$(<{path})"; true').check().stdout


def notify_events(lab: Lab, ns: str, t0_unix: float = 0.0) -> list[NotifyEvent]:
    """`ns`'s notify log so far, times relative to `t0_unix` (0: Unix time)."""
    return read_notify_log(notify_text(lab, ns), ns, t0_unix, f"{ns} events.jsonl")


def wait_event(
    lab: Lab,
    ns: str,
    found: Callable[[list[NotifyEvent]], NotifyEvent | None],
    bound_s: float,
    poll_s: float = 0.3,
) -> NotifyEvent | None:
    """Poll `ns`'s notify log (Unix times) until `found` returns an event, at most `bound_s`."""
    deadline = time.monotonic() + bound_s
    while True:
        event = found(notify_events(lab, ns))
        if event is not None or time.monotonic() >= deadline:
            return event
        time.sleep(poll_s)


def vrrp_dump(lab: Lab, ns: str) -> dict[str, tuple[str, float]]:
    """Ask `ns`'s keepalived for its JSON dump (`--signum=JSON`, written to its own /tmp):
    instance -> (state, last_transition Unix s), keepalived's own record of the change."""
    home = keepalived.director_dir(ns)
    path = f"{home}/tmp/keepalived.json"
    tries = int(DUMP_WAIT_S * 10)
    script = (
        f"rm -f {path}\n"
        f"kill -s $(keepalived --signum=JSON) $(cat {home}/keepalived.pid)\n"
        f"for i in $(seq {tries}); do [ -s {path} ] && break; sleep 0.1; done\n"
        f'sleep 0.2; echo "$(<{path})"\n'
    )
    last: ParseError | None = None
    for _ in range(3):  # the dump may be caught half-written: read again
        out = lab.sh(None, script, timeout=60).check().stdout
        try:
            return parse_vrrp_json(out, f"{path} ({ns})")
        except ParseError as exc:
            last = exc
    raise LabError(f"lab: no keepalived JSON dump from {ns}: {last}")


def save_files(lab: Lab, run_dir: Path) -> list[str]:
    """Copy both directors' keepalived config, notify log and own log into RUN/keepalived/."""
    out = run_dir / KEEPALIVED_RUN_DIR
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for ns in keepalived.DIRECTORS:
        home = keepalived.director_dir(ns)
        for name, dest in (
            ("keepalived.conf", f"{ns}.conf"),
            ("events.jsonl", f"{ns}-events.jsonl"),
            ("keepalived.log", f"{ns}.log"),
        ):
            try:
                (out / dest).write_bytes(lab.read_file(f"{home}/{name}"))
            except LabError:
                continue  # a log that was never written (keepalived never started there)
            saved.append(f"{KEEPALIVED_RUN_DIR}/{dest}")
    return saved
