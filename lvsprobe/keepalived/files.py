"""Where a keepalived keeps its pid files and writes its dumps: what the exporter's options
name, apart from the readers (dump.py), which the exporter loads only when it reads keepalived."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# SIGRTMIN + 2 (keepalived's lib/signals.h) where keepalived was built: 36 with glibc, 37 with
# musl. `keepalived --signum=JSON` prints it.
DEFAULT_JSON_SIGNAL = 36


@dataclass(frozen=True, slots=True)
class KeepalivedFiles:
    """Where one keepalived keeps its pid files and writes its dumps.

    The children's pid files are named as keepalived names them next to the main one:
    /run/keepalived.pid, /run/vrrp.pid, /run/checkers.pid; with `instance NAME`,
    keepalived_NAME.pid, vrrp_NAME.pid, checkers_NAME.pid in /run/keepalived/.
    """

    pid_file: Path
    dump_dir: Path
    json_signal: int = DEFAULT_JSON_SIGNAL
    proc: Path = Path("/proc")

    def child_pid_file(self, child: str) -> Path:
        name = self.pid_file.name
        rest = name.removeprefix("keepalived") if name.startswith("keepalived") else "." + name
        return self.pid_file.with_name(child + rest)
