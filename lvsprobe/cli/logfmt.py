"""The exporter's log lines in logfmt (`ts=… level=… msg="…"`), as node_exporter and
Prometheus write theirs, so the same log pipelines parse both."""

from __future__ import annotations

import logging
import sys

LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


class Logfmt(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage().replace('"', '\\"')
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        line = f'ts={ts} level={record.levelname.lower()} msg="{msg}"'
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str) -> None:
    """The `lvsprobe` logger at `level` (one of LOG_LEVELS), to stderr, once."""
    logger = logging.getLogger("lvsprobe")
    if not any(getattr(h, "_lvsprobe", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(Logfmt())
        handler._lvsprobe = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(LOG_LEVELS[level])
