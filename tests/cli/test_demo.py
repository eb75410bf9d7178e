"""`lvsprobe demo`'s "Director before traffic" step shows the director (it printed nothing:
the snapshot went to director.json only). Rendered from a captured snapshot, no VM."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from click.testing import CliRunner

from lvsprobe.cli import cli
from lvsprobe.cli.demo import director_text, show_director_before
from lvsprobe.errors import LabError
from lvsprobe.lab.guest import RunResult

GENL = Path(__file__).parents[1] / "fixtures/kernel-6.1/nat/genl/ipvs_conversation.hex"


def status(*args: str) -> tuple[str, str]:
    result = CliRunner().invoke(cli, ["status", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout, result.stderr


class FakeLab:
    """Answers `lab.run` with what `lvsprobe status --json` printed on the captured state."""

    def __init__(self, stdout: str) -> None:
        self.stdout = stdout
        self.ran: list[tuple[str, list[str]]] = []

    def run(self, ns: str, argv: list[str], timeout: float = 60.0) -> RunResult:
        self.ran.append((ns, argv))
        return RunResult(tuple(argv), 0, self.stdout, "")


@pytest.mark.parametrize("netlink", [True, False])
def test_director_text_is_what_status_prints(nat_proc: Path, netlink: bool) -> None:
    source = ["--procfs-root", str(nat_proc), "--hz", "250"]
    if netlink:
        source += ["--genl-capture", str(GENL)]
    as_json, _ = status(*source, "--json")
    text, warnings = status(*source)
    assert director_text(as_json) == text + warnings
    assert text.startswith("IP Virtual Server version 1.2.1 (size=4096)\n")


def test_before_step_shows_the_director_and_keeps_the_json(
    nat_proc: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    as_json, _ = status("--procfs-root", str(nat_proc), "--genl-capture", str(GENL), "--json")
    lab = FakeLab(as_json)
    show_director_before(cast(Any, lab), tmp_path / "run")
    shown = capsys.readouterr().out
    [(ns, argv)] = lab.ran
    assert ns == "lvs1" and argv[-2:] == ["status", "--json"]
    assert "TCP  198.18.1.100:80 rr" in shown
    assert "  -> 198.18.1.11:80               Masq" in shown
    assert "Connection table:" in shown
    assert (tmp_path / "run/director.json").read_text() == as_json


def test_no_json_from_the_guest_is_a_lab_error() -> None:
    with pytest.raises(LabError, match="printed no JSON"):
        director_text("Traceback (most recent call last):\n")
