"""docs/real-director.md cites only commands, flags and files the repository has."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from lvsprobe.cli import SUBCOMMANDS, cli

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs/real-director.md"


def _command_lines() -> list[str]:
    """`lvsprobe …` lines of code blocks, and inline code that starts with a subcommand."""
    text = DOC.read_text()
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", text, re.DOTALL)).replace("\\\n", " ")
    lines = [line.strip() for line in blocks.splitlines() if line.strip().startswith("lvsprobe ")]
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    for span in re.findall(r"`([^`]+)`", prose):
        if span.startswith("lvsprobe ") or span.split(" ")[0] in SUBCOMMANDS:
            lines.append(span if span.startswith("lvsprobe ") else f"lvsprobe {span}")
    return lines


def _resolve(words: list[str]) -> tuple[click.Command, list[str]]:
    command: click.Command = cli
    ctx = click.Context(cli)
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        sub = command.get_command(ctx, words[0])
        assert sub is not None, f"no command {words[0]!r}"
        command, words = sub, words[1:]
    return command, words


LINES = _command_lines()


def test_the_doc_shows_commands() -> None:
    assert any("replay attribute" in line for line in LINES)


@pytest.mark.parametrize("line", LINES)
def test_every_flag_exists(line: str) -> None:
    words = shlex.split(line.split(" > ")[0].split(" | ")[0])[1:]
    command, rest = _resolve(words)
    known = {opt for param in command.params for opt in getattr(param, "opts", ())}
    flags = {w.split("=")[0] for w in rest if w.startswith("--")}
    assert flags <= known, f"{line}: {sorted(flags - known)} not options of {command.name}"


def test_every_cited_file_exists() -> None:
    cited = re.findall(r"`((?:lvsprobe|exporters|replays|docs)/[\w./-]+)`", DOC.read_text())
    assert cited
    assert [c for c in cited if not (ROOT / c).exists()] == []
