"""A throw-away Prometheus server on loopback (the Debian `prometheus` binary) and its query API.

Used by the proof tests: start it with scrape targets, let it scrape, send every dashboard
query. Storage and config live in a directory the caller owns; `stop()` always ends it.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from lvsprobe.errors import LvsprobeError

DEFAULT_BINARY = "/usr/bin/prometheus"


class PrometheusError(LvsprobeError):
    """Prometheus did not start, or rejected a query (its own error text is kept)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Prometheus:
    """`prometheus` scraping `targets` ("host:port") every `scrape_interval_s`, on 127.0.0.1."""

    def __init__(
        self,
        targets: Sequence[str],
        workdir: Path,
        *,
        scrape_interval_s: int = 1,
        job: str = "lvsprobe",
        binary: str | None = None,
    ) -> None:
        self.targets = tuple(targets)
        self.workdir = workdir
        self.scrape_interval_s = scrape_interval_s
        self.job = job
        self.binary = binary or shutil.which("prometheus") or DEFAULT_BINARY
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        interval = f"{self.scrape_interval_s}s"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "scrape_timeout": interval,
                    "static_configs": [{"targets": list(self.targets)}],
                }
            ],
        }

    def start(self, timeout_s: float = 60.0) -> None:
        """Write the config, start the server, wait until /-/ready answers."""
        if not Path(self.binary).exists():
            raise PrometheusError(
                f"prometheus binary not found at {self.binary} (apt install prometheus)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config(), sort_keys=True))
        self.port = free_port()
        argv = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1d",
            "--log.level=warn",
        ]
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited {self._proc.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass  # not listening yet
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready after {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 800) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> Prometheus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self, path: str, params: dict[str, str]) -> Any:
        """GET /api/v1/<path>; the `data` field, or PrometheusError with Prometheus's message."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                raise PrometheusError(f"{path}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise PrometheusError(f"{path}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query now: the result series (a scalar result counts as one)."""
        data = self.api("query", {"query": expr})
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, seconds: int, step_s: int = 1) -> list[dict[str, Any]]:
        """Range query over the last `seconds` (what a Grafana time series panel sends)."""
        end = time.time()
        data = self.api(
            "query_range",
            {
                "query": expr,
                "start": f"{end - seconds:.3f}",
                "end": f"{end:.3f}",
                "step": f"{step_s}s",
            },
        )
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_until(
        self,
        expr: str,
        ok: Callable[[list[dict[str, Any]]], bool],
        *,
        attempts: int = 300,
        pause_s: float = 0.2,
    ) -> list[dict[str, Any]]:
        """Poll an instant query until `ok(result)`; bounded by `attempts`, not by a clock."""
        result: list[dict[str, Any]] = []
        for _ in range(attempts):
            try:
                result = self.query(expr)
            except PrometheusError:
                result = []
            if ok(result):
                return result
            time.sleep(pause_s)
        raise PrometheusError(f"{expr}: not satisfied after {attempts} polls; last {result}")

    def targets_up(self) -> dict[str, bool]:
        """Each target's health as Prometheus saw it in its last scrape."""
        return {instance: health == "up" for instance, (health, _) in self.target_health().items()}

    def target_health(self) -> dict[str, tuple[str, str]]:
        """instance -> (health, last scrape error) as Prometheus reports them."""
        data = self.api("targets", {"state": "active"})
        return {
            t["labels"]["instance"]: (t["health"], t.get("lastError", ""))
            for t in data["activeTargets"]
        }
