"""`Guest`: commands, files and forwarded ports in the lab VM, through its agent.

Everything here is a request over the agent's two channels (`Control` for commands and
files, `Mux` for TCP forwarded to a namespace); booting the VM and building the cluster
are `Lab`'s, which is a `Guest` once it has booted.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lvsprobe.errors import LabError
from lvsprobe.lab import protocol
from lvsprobe.lab.channel import Control, Mux


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a command in the guest returned (text decoded as UTF-8, undecodable bytes replaced)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> RunResult:
        """Self if the command succeeded, else LabError with its stderr."""
        if self.returncode != 0:
            raise LabError(
                f"lab: `{shlex.join(self.argv)}` exited {self.returncode}: "
                f"{(self.stderr or self.stdout).strip()[-500:]}"
            )
        return self


def _result(argv: Sequence[str], reply: dict[str, Any]) -> RunResult:
    return RunResult(
        tuple(argv),
        int(reply["returncode"]),
        protocol.unb64(reply["stdout"]).decode("utf-8", "replace"),
        protocol.unb64(reply["stderr"]).decode("utf-8", "replace"),
    )


class Process:
    """A background process in the guest (`Guest.spawn`)."""

    def __init__(self, guest: Guest, handle: int, pid: int, argv: Sequence[str]) -> None:
        self._guest, self.handle, self.pid, self.argv = guest, handle, pid, tuple(argv)
        self.result: RunResult | None = None

    def poll(self) -> RunResult | None:
        """The result if it has exited (output so far is in the guest's files), else None."""
        reply = self._guest.control.request("poll", 30, handle=self.handle)
        if reply["returncode"] is None:
            return None
        return _result(self.argv, reply)

    def output(self) -> tuple[str, str]:
        """Its stdout and stderr so far (it may still be running)."""
        reply = self._guest.control.request("poll", 30, handle=self.handle)
        return (
            protocol.unb64(reply["stdout"]).decode("utf-8", "replace"),
            protocol.unb64(reply["stderr"]).decode("utf-8", "replace"),
        )

    def stop(self, timeout_s: float = 5.0) -> RunResult:
        """SIGTERM its process group, SIGKILL after `timeout_s`; its exit status and output."""
        if self.result is None:
            reply = self._guest.control.request(
                "stop", timeout_s + 30, handle=self.handle, timeout=timeout_s
            )
            self.result = _result(self.argv, reply)
        return self.result


class Guest:
    """The lab VM's agent, once connected: run commands, read and write files, reach ports."""

    def __init__(self) -> None:
        self._control: Control | None = None
        self._mux: Mux | None = None

    def close(self) -> None:
        """Ask the guest to power off, and drop both channels."""
        if self._control is not None and not self._control.closed:
            with contextlib.suppress(LabError, TimeoutError):  # Lab.close kills the VM after
                self._control.request("shutdown", 10)
        for channel in (self._mux, self._control):
            if channel is not None:
                channel.close()
        self._control = self._mux = None

    @property
    def control(self) -> Control:
        if self._control is None:
            raise LabError("the lab VM is not running (use `with Lab(...) as lab:`)")
        return self._control

    def run(
        self,
        ns: str | None,
        argv: Sequence[str],
        timeout: float = 60.0,
        input: str | bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> RunResult:
        """Run `argv` in guest namespace `ns` (None: the VM's own); kill it after `timeout` s.

        A command that times out returns status 124 (like timeout(1)). If the guest does not
        answer at all, the VM is killed and LabError raised.
        """
        data = input.encode() if isinstance(input, str) else input
        fields: dict[str, Any] = {"ns": ns, "argv": list(argv), "timeout": timeout}
        if data is not None:
            fields["input"] = protocol.b64(data)
        if env:
            fields["env"] = env
        try:
            reply = self.control.request("run", timeout + 60, **fields)
        except TimeoutError as exc:
            self.close()
            raise LabError(f"lab VM unresponsive, killed: {exc}") from exc
        result = _result(argv, reply)
        if reply.get("timed_out"):
            return RunResult(result.argv, 124, result.stdout, result.stderr)
        return result

    def sh(self, ns: str | None, script: str, timeout: float = 60.0) -> RunResult:
        """Run a bash script in namespace `ns` (one exec: cheap under TCG)."""
        return self.run(ns, ["bash", "-s"], timeout=timeout, input=script)

    def spawn(
        self, ns: str | None, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> Process:
        """Start `argv` in the background in namespace `ns`; `.stop()` it when done."""
        reply = self.control.request("spawn", 60, ns=ns, argv=list(argv), env=env or {})
        return Process(self, int(reply["handle"]), int(reply["pid"]), argv)

    def read_file(self, path: str) -> bytes:
        return protocol.unb64(self.control.request("read_file", 60, path=path)["data"])

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.control.request("write_file", 60, path=path, data=protocol.b64(raw), mode=mode)

    def ipvsadm(self, *args: str, ns: str = "lvs1") -> str:
        """`ipvsadm ARGS` in a director namespace; its stdout (LabError if it failed)."""
        return self.run(ns, ["ipvsadm", *args]).check().stdout

    def forward(self, ns: str, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """A host loopback (address, port) that reaches TCP `host`:`port` in namespace `ns`."""
        if self._mux is None:
            raise LabError("the lab VM is not running")
        return self._mux.forward(ns, port, host)
