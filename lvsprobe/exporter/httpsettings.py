"""What the exporter's HTTP server is told before it starts: where it listens, the metrics
path, its deadlines and caps. Checked by the commands that start one (`export`, and `replay
run --metrics-listen`) without loading the server itself."""

from __future__ import annotations

from dataclasses import dataclass

HEALTH_PATHS = ("/healthz", "/-/healthy")
READY_PATH = "/-/ready"


@dataclass(frozen=True)
class HTTPLimits:
    """Deadlines per connection and the caps; the defaults suit scrape intervals of 15-60 s."""

    read_timeout_s: float = 10.0
    write_timeout_s: float = 30.0
    idle_timeout_s: float = 90.0
    max_connections: int = 512
    max_scrapes: int = 40  # worker threads reading and rendering (--web.max-requests)


def parse_listen_address(text: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` (all interfaces) or `[V6]:PORT`; ValueError says what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"{text!r}: expected HOST:PORT or :PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{text!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r}: port out of range")
    return host, port


def check_telemetry_path(path: str) -> str:
    """The metrics path, if a request can reach it; ValueError says why not."""
    if not path.startswith("/"):
        raise ValueError(f"{path!r} must start with '/' (e.g. /metrics)")
    if any(c in path for c in "?# ") or not path.isprintable():
        raise ValueError(f"{path!r}: a path has no '?', '#', spaces or control characters")
    if path in (*HEALTH_PATHS, READY_PATH, "/"):
        raise ValueError(f"{path!r} is taken by the landing page or a health endpoint")
    return path
