"""What --collector.keepalived and the --keepalived.* options say, apart from the collector:
the command line builds it without loading keepalived's readers (keepalived.py), which the
exporter imports only when the collector is on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lvsprobe.keepalived.files import DEFAULT_JSON_SIGNAL, KeepalivedFiles

NETNS_PLACEHOLDER = "{netns}"


@dataclass(frozen=True)
class KeepalivedOptions:
    """Where keepalived is, and how often it may be asked. Paths may hold `{netns}`, the name
    of the namespace read (its --netns name or --pid number), for one keepalived per netns."""

    pid_file: str = "/run/keepalived.pid"
    dump_dir: str = "/tmp"
    json_signal: int = DEFAULT_JSON_SIGNAL
    min_interval_s: float = 5.0
    dump_timeout_s: float = 2.0

    def files(self, netns: str) -> KeepalivedFiles:
        return KeepalivedFiles(
            pid_file=Path(self.pid_file.replace(NETNS_PLACEHOLDER, netns)),
            dump_dir=Path(self.dump_dir.replace(NETNS_PLACEHOLDER, netns)),
            json_signal=self.json_signal,
        )
