"""The one error family: every failure a user can cause or meet is an LvsprobeError."""

from __future__ import annotations


class LvsprobeError(Exception):
    """Base of every error lvsprobe reports to a user (one line, no traceback)."""


class ParseError(LvsprobeError):
    """A kernel file, netlink message or project file did not have the expected form."""

    def __init__(self, source: str, line_no: int | None, line: str | bytes | None, reason: str):
        self.source = source
        self.line_no = line_no
        self.line = line
        self.reason = reason
        where = source if line_no is None else f"{source} line {line_no}"
        text = ""
        if line is not None:
            shown = line if isinstance(line, str) else line.decode("ascii", "backslashreplace")
            if len(shown) > 120:
                shown = shown[:117] + "..."
            text = f": {shown!r}"
        super().__init__(f"{where}: {reason}{text}")


class IPVSUnavailable(LvsprobeError):
    """IPVS is not loaded in the namespace that was read. A state, not a malfunction."""

    def __init__(self, where: str = "this network namespace"):
        super().__init__(f"IPVS is not loaded in {where}")


class NotPermitted(LvsprobeError):
    """The kernel refused: netlink IPVS needs CAP_NET_ADMIN in the initial user namespace."""


class NamespaceError(LvsprobeError):
    """A named network namespace or pid could not be entered."""


class ScenarioError(LvsprobeError):
    """A replay scenario file is invalid; the message names the file and line."""


class LabError(LvsprobeError):
    """The lab VM could not be prepared, booted or driven."""


class AnalysisError(LvsprobeError):
    """An analyzer lacks the data it needs (no flows, unknown service, foreign log)."""


class DeadlineExceeded(LvsprobeError):
    """A read stopped because its deadline (a scrape's time budget) passed."""
