"""The `lvsprobe` command. Subcommands load lazily: start-up stays fast (the lab guest runs
Python about 15x slower than the host), and the sidecar never imports pandas or scapy.

`pip install lvsprobe` brings only what `status` and `export` need; the other commands need
an extra (pyproject.toml). A command whose extra is missing stays in --help, marked, and says
in one line what to install instead of failing with a traceback halfway through a run."""

from __future__ import annotations

import faulthandler
import gc
import importlib.util
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from lvsprobe import __version__
from lvsprobe.cli.exit import ExitCode
from lvsprobe.errors import LvsprobeError


@dataclass(frozen=True)
class Extra:
    """An optional-dependencies group of pyproject.toml, by the top-level modules it provides
    (tests/test_packaging.py checks the two lists agree)."""

    name: str
    modules: tuple[str, ...]

    def missing_module(self) -> str | None:
        """The first of its modules that cannot be imported, without importing any."""
        return next((m for m in self.modules if importlib.util.find_spec(m) is None), None)

    def install_hint(self) -> str:
        return f"pip install 'lvsprobe[{self.name}]'"


REPLAY = Extra("replay", ("pyarrow", "dpkt", "pyshark", "hdrh"))
ANALYZE = Extra("analyze", ("pandas", "pyarrow", "scipy", "plotly"))
DASHBOARDS = Extra("dashboards", ("grafana_foundation_sdk",))
# `replay run --workers`: a run spread over a Dask cluster (on top of [replay])
SCALE = Extra("scale", (*REPLAY.modules, "distributed"))
# The lab boots with the core alone; what it is for (replays, then their analyses) needs both.
LAB = Extra("lab", tuple(dict.fromkeys(REPLAY.modules + ANALYZE.modules)))
EXTRAS = (REPLAY, ANALYZE, DASHBOARDS, LAB, SCALE)


def _status() -> click.Command:
    from lvsprobe.cli.status import status

    return status


def _export() -> click.Command:
    from lvsprobe.cli.export import export

    return export


def _lab() -> click.Command:
    from lvsprobe.cli.lab import lab

    return lab


def _replay() -> click.Command:
    from lvsprobe.cli.replay import replay

    return replay


def _analyze() -> click.Command:
    from lvsprobe.cli.analyze import analyze

    return analyze


def _report() -> click.Command:
    from lvsprobe.cli.report import report

    return report


def _dashboards() -> click.Command:
    from lvsprobe.cli.dashboards import dashboards

    return dashboards


def _names() -> click.Command:
    from lvsprobe.cli.names import names

    return names


def _demo() -> click.Command:
    from lvsprobe.cli.demo import demo

    return demo


@dataclass(frozen=True)
class Subcommand:
    """A command, loaded only when used; `extra` is what it needs beyond the core install."""

    load: Callable[[], click.Command]
    help: str
    extra: Extra | None = None

    def missing(self) -> tuple[Extra, str] | None:
        """Its extra and the first module of it that is not installed, if any."""
        module = self.extra.missing_module() if self.extra else None
        return (self.extra, module) if self.extra and module else None


SUBCOMMANDS: dict[str, Subcommand] = {
    "status": Subcommand(_status, "Show IPVS services, real servers and stats."),
    "export": Subcommand(_export, "Serve Prometheus metrics (sidecar)."),
    "lab": Subcommand(_lab, "Boot a throw-away VM with a real IPVS cluster."),
    "replay": Subcommand(_replay, "Replay client traffic against a director.", REPLAY),
    "analyze": Subcommand(_analyze, "Check what a replay run shows.", ANALYZE),
    "report": Subcommand(_report, "Render a run's analyses as HTML.", ANALYZE),
    "dashboards": Subcommand(_dashboards, "Generate Grafana dashboards.", DASHBOARDS),
    "names": Subcommand(_names, "Write the exporter's names file (Kubernetes)."),
    "demo": Subcommand(_demo, "Boot the lab, drive traffic, show what happened.", LAB),
}


def needs_extra_message(command: str, extra: Extra, module: str) -> str:
    """The one line a command of a missing extra prints."""
    return (
        f"lvsprobe {command}: needs the [{extra.name}] extra: {extra.install_hint()} "
        f"(missing module {module})"
    )


def extra_providing(module: str, preferred: Extra | None = None) -> Extra | None:
    """The extra that installs a (dotted) module: `preferred` if it does, else the first."""
    top = module.partition(".")[0]
    candidates = [e for e in (preferred, *EXTRAS) if e is not None and top in e.modules]
    return candidates[0] if candidates else None


def _needs_extra(command: str, extra: Extra, module: str) -> click.Command:
    """A stand-in for a command whose extra is missing: any arguments, one line, exit 1."""

    @click.pass_context
    def explain(ctx: click.Context) -> None:
        click.echo(needs_extra_message(command, extra, module), err=True)
        ctx.exit(ExitCode.ERROR)

    return click.Command(
        command,
        callback=explain,
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        sub = SUBCOMMANDS.get(cmd_name)
        if sub is None:
            return None
        missing = sub.missing()
        return _needs_extra(cmd_name, *missing) if missing else sub.load()

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name, sub in SUBCOMMANDS.items():
            missing = sub.missing()
            note = f" (needs lvsprobe[{missing[0].name}])" if missing else ""
            rows.append((name, sub.help + note))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LvsprobeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"lvsprobe: {exc}", err=True)
            ctx.exit(ExitCode.ERROR)
        except ModuleNotFoundError as exc:
            # An extra's module found but broken (e.g. its own dependency gone): same one line.
            command = ctx.invoked_subcommand or ""
            sub = SUBCOMMANDS.get(command)
            extra = extra_providing(exc.name or "", sub.extra if sub else None)
            if extra is None:
                raise
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(needs_extra_message(command, extra, exc.name or ""), err=True)
            ctx.exit(ExitCode.ERROR)
        except KeyboardInterrupt:
            click.echo("lvsprobe: interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lvsprobe")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Observe, export and test Linux Virtual Server (IPVS) directors.

    \b
    Typical use:
      lvsprobe status                       what the kernel's IPVS holds now
      lvsprobe export                       Prometheus sidecar on :9954
      lvsprobe lab run -- lvsprobe status   the same against a throw-away real director
      lvsprobe replay run SCENARIO ...      drive client traffic and log every flow
      lvsprobe analyze fairness RUN/        check the scheduler did what it must
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def main() -> None:
    """Console-script entry point."""
    # A crash in native code (a C extension, or an emulator bug under it) prints the Python
    # stack on stderr: a long replay or the exporter dying without a word says nothing of where.
    faulthandler.enable()
    try:
        sys.exit(cli.main(prog_name="lvsprobe", standalone_mode=True))
    finally:
        # The process ends here: spare the interpreter's last full collection a walk over
        # every object a replay run kept (its flow records and plan; half a second and more
        # after a 10 s run). Reference counts still free them.
        gc.freeze()
