"""What a reader decoded last time, kept by its caller for the next read of the same file.

A scrape reads the same tables again and again, and most of what it decodes (a connection
table's keys, /proc/net/ip_vs's service lines) is what the scrape before decoded. The
object that reads repeatedly (the exporter's `Scraper`) owns one `ParseCache` per
namespace and passes it to the readers; a one-off read passes none.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Mapping
from typing import Any


class ParseCache:
    """Decoded values by kind (which file, which key), one generation each: a read takes
    the last one (`previous`) and hands back what it decoded (`keep`), which replaces it,
    so the cache holds one table's distinct values, never more. Safe to share between
    threads: a generation is never changed once kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[Hashable, Mapping[Any, Any]] = {}

    def previous(self, kind: Hashable) -> Mapping[Any, Any]:
        """What the last read of `kind` decoded (empty at first)."""
        with self._lock:
            return self._kept.get(kind, {})

    def keep(self, kind: Hashable, decoded: Mapping[Any, Any]) -> None:
        """Keep what this read decoded for the next (the caller no longer changes it)."""
        with self._lock:
            self._kept[kind] = decoded
