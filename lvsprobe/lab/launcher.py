"""Guest side of a cluster build: sysctls in every namespace, then the real servers' daemons.

Python starts slowly under TCG (~2 s, ~6 s with asyncio+ssl on a busy host), so ONE launcher
imports everything once and forks: one backend process per real server (its own session, in
its own namespace), plus vsftpd. It returns when every backend listens.

    python -m lvsprobe.lab.launcher < spec.json

spec: {"state": DIR, "cert": PEM, "key": PEM,
       "sysctls": {NS: {"net.ipv4.ip_forward": "1", ...}},
       "real_servers": ["rs1", ...], "vsftpd": true}
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lvsprobe.lab.agent import enter_netns
from lvsprobe.lab.backends import serve_forever

READY_TIMEOUT_S = 180.0


def write_sysctls(values: dict[str, str]) -> None:
    """Write sysctls of the current network namespace through /proc/sys."""
    for key, value in values.items():
        Path("/proc/sys", *key.split(".")).write_text(f"{value}\n")


def vsftpd_conf(state: Path, name: str) -> str:
    return f"""listen=YES
listen_ipv6=NO
background=NO
anonymous_enable=YES
local_enable=NO
anon_root={state}/{name}/ftp
secure_chroot_dir={state}/ftp-empty
connect_from_port_20=YES
pasv_enable=YES
pasv_min_port=30000
pasv_max_port=30100
seccomp_sandbox=NO
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file={state}/{name}/vsftpd.log
"""


def _daemonize(ns: str, log: Path) -> None:
    """In a forked child: own session, stdio to `log`, inside namespace `ns`."""
    os.setsid()
    enter_netns(ns)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def start(ns: str, log: Path, pid_file: Path, argv: list[str] | None, **serve: Any) -> int:
    """Fork a daemon in `ns`: exec `argv`, or run the backends (`serve` kwargs)."""
    pid = os.fork()
    if pid == 0:
        try:
            _daemonize(ns, log)
            if argv is not None:
                os.execvp(argv[0], argv)
            serve_forever(**serve)
        except BaseException as exc:
            print(f"launcher: {ns}: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            os._exit(1)
    pid_file.write_text(f"{pid}\n")
    return pid


def main() -> None:
    spec = json.load(sys.stdin)
    state = Path(spec["state"])
    for ns, values in spec.get("sysctls", {}).items():
        enter_netns(ns)
        write_sysctls(values)
    (state / "ftp-empty").mkdir(parents=True, exist_ok=True)
    pids = {}
    for name in spec["real_servers"]:
        rs_dir = state / name
        (rs_dir / "ftp").mkdir(parents=True, exist_ok=True)
        pids[name] = start(
            name,
            rs_dir / "backend.log",
            state / f"{name}-backend.pid",
            None,
            backend_id=name,
            state_dir=rs_dir,
            cert=spec.get("cert"),
            key=spec.get("key"),
        )
        if spec.get("vsftpd", True):
            conf = rs_dir / "vsftpd.conf"
            conf.write_text(vsftpd_conf(state, name))
            start(name, rs_dir / "vsftpd.out", state / f"{name}-vsftpd.pid", ["vsftpd", str(conf)])
    deadline = time.monotonic() + READY_TIMEOUT_S
    waiting = set(pids)
    while waiting and time.monotonic() < deadline:
        for name in list(waiting):
            if (state / name / "ready").exists():
                waiting.discard(name)
            elif os.waitpid(pids[name], os.WNOHANG)[0]:
                log = (state / name / "backend.log").read_text(errors="replace")[-500:]
                sys.exit(f"backend {name} died: {log}")
        time.sleep(0.05)
    if waiting:
        sys.exit(f"backends not ready after {READY_TIMEOUT_S:.0f} s: {sorted(waiting)}")
    print(f"launcher: {len(pids)} real servers up")


if __name__ == "__main__":
    main()
