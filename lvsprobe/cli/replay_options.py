"""`replay run`'s options checked before any traffic goes out: the target override, timed
commands, the snapshot interval, the metrics address and the thresholds. A bad one is a
usage error naming the option (exit 2), never a run that fails half-way."""

from __future__ import annotations

from typing import Any

import click


def override_target(scenario: Any, target: str | None) -> Any:
    """The scenario with --target's VIP[:PORT] as its target (a port kept if not given)."""
    import dataclasses
    import ipaddress

    if target is None:
        return scenario
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        host, port = target, str(scenario.target.port)
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise click.BadParameter(
            f"{target!r} is not ADDRESS[:PORT]", param_hint="--target"
        ) from None
    new_target = dataclasses.replace(scenario.target, address=host, port=int(port))
    return dataclasses.replace(scenario, target=new_target)


def timed_commands(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[Any, ...]:
    """--at's timed commands, parsed."""
    from lvsprobe.replay.hooks import parse_timed_command

    try:
        return tuple(parse_timed_command(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def snapshot_every(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    """The conn-table snapshot interval, if the run can keep to it."""
    from lvsprobe.replay.runparts import check_snapshot_every

    try:
        return check_snapshot_every(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def listen_address(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """--metrics-listen's (host, port), or None without it."""
    if value is None:  # click calls this without the flag too: no HTTP server imported then
        return None
    from lvsprobe.exporter.httpsettings import parse_listen_address

    try:
        return parse_listen_address(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def run_thresholds(scenario: Any, texts: tuple[str, ...]) -> tuple[Any, ...]:
    """The scenario's thresholds and --threshold's, each checked against the scenario."""
    from lvsprobe.replay.thresholds import parse_threshold

    extra = []
    for text in texts:
        try:
            threshold = parse_threshold(text)
            scenario.check_threshold(threshold)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--threshold") from None
        extra.append(threshold)
    return (*scenario.thresholds, *extra)
