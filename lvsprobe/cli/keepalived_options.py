"""`lvsprobe export --collector.keepalived` and the --keepalived.* options, folded into one
`keepalived` argument (a KeepalivedOptions, or None when the collector is off)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from lvsprobe.exporter.keepalived_options import NETNS_PLACEHOLDER, KeepalivedOptions

F = TypeVar("F", bound=Callable[..., Any])
_DEFAULTS = KeepalivedOptions()
_OPTIONS = (
    click.option(
        "--collector.keepalived/--no-collector.keepalived",
        "ka_enabled",
        default=False,
        help="Also read keepalived: VRRP states, priorities, VIPs and transitions, and its "
        "health checkers' verdict per real server (ipvs_keepalived_*). Each reading signals "
        "keepalived to dump its state (SIGRTMIN+2 to its VRRP process, SIGUSR1 to its checker "
        "process) and reads the dumps: needs its pid files, its processes (a shared PID "
        "namespace) and its TMPDIR, and root or CAP_KILL. keepalived not running is "
        "ipvs_keepalived_up 0, not an error.",
    ),
    click.option(
        "--keepalived.pid-file",
        "ka_pid_file",
        default=_DEFAULTS.pid_file,
        metavar="FILE",
        help="keepalived's main pid file (-p); its children's are found beside it by "
        "keepalived's names (vrrp.pid and checkers.pid for keepalived.pid; vrrp_NAME.pid for "
        "keepalived_NAME.pid). With net_namespace NS: /run/keepalived/NS/keepalived.pid. "
        f"'{NETNS_PLACEHOLDER}' is replaced by the namespace read (--netns NAME or --pid PID): "
        "one keepalived per namespace.",
    ),
    click.option(
        "--keepalived.dump-dir",
        "ka_dump_dir",
        default=_DEFAULTS.dump_dir,
        metavar="DIR",
        help="Where keepalived writes keepalived.json and keepalived_check.data: its TMPDIR. "
        "Several keepalived need one each (keepalived.json has a fixed name). "
        f"'{NETNS_PLACEHOLDER}' as in --keepalived.pid-file.",
    ),
    click.option(
        "--keepalived.json-signal",
        "ka_json_signal",
        type=click.IntRange(34, 37),
        default=_DEFAULTS.json_signal,
        metavar="SIGNUM",
        help="The number of keepalived's JSON dump signal, as `keepalived --signum=JSON` "
        "prints it (36 with glibc, 37 for a keepalived built with musl).",
    ),
    click.option(
        "--keepalived.min-interval",
        "ka_min_interval_s",
        type=click.FloatRange(min=0),
        default=_DEFAULTS.min_interval_s,
        metavar="SECONDS",
        help="Reuse a reading younger than this (scrapes within it ask keepalived nothing).",
    ),
    click.option(
        "--keepalived.dump-timeout",
        "ka_dump_timeout_s",
        type=click.FloatRange(min=0, min_open=True),
        default=_DEFAULTS.dump_timeout_s,
        metavar="SECONDS",
        help="How long to wait for keepalived to write its dumps (a stopped keepalived never "
        'does: ipvs_scrape_source_success{source="keepalived"} 0).',
    ),
)


def keepalived_options(func: F) -> F:
    """Add the options; the command gets `keepalived` (KeepalivedOptions | None)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in list(kwargs) if name.startswith("ka_")}
        options = KeepalivedOptions(
            pid_file=values["ka_pid_file"],
            dump_dir=values["ka_dump_dir"],
            json_signal=values["ka_json_signal"],
            min_interval_s=values["ka_min_interval_s"],
            dump_timeout_s=values["ka_dump_timeout_s"],
        )
        namespaces = len(set(kwargs.get("netns", ()))) + len(set(kwargs.get("pids", ())))
        if values["ka_enabled"] and namespaces > 1:
            for flag, path in (
                ("--keepalived.pid-file", options.pid_file),
                ("--keepalived.dump-dir", options.dump_dir),
            ):
                if NETNS_PLACEHOLDER not in path:
                    raise click.BadParameter(
                        f"several namespaces are read: put {NETNS_PLACEHOLDER} in it, one "
                        "keepalived per namespace",
                        param_hint=flag,
                    )
        return func(*args, keepalived=options if values["ka_enabled"] else None, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]
