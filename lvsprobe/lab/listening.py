"""A server the tests start in a lab namespace, reached from the host once it listens.

Used for the exporters a lab test runs in the directors (`lvsprobe export` in lvs1 and lvs2):
start it with `Lab.spawn`, then `forward_when_listening` gives the host address to scrape.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lvsprobe.errors import LabError

if TYPE_CHECKING:
    from lvsprobe.lab.guest import Process
    from lvsprobe.lab.lab import Lab


def wait_listening_script(port: int, tries: int) -> str:
    """Bash: until something accepts on 127.0.0.1:`port` (`tries` probes, 1 s apart); exit 1
    if nothing ever does."""
    return (
        f"for i in $(seq {tries}); do\n"
        f"  (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && exit 0\n"
        "  sleep 1\n"
        "done\n"
        "exit 1\n"
    )


def forward_when_listening(lab: Lab, ns: str, port: int, proc: Process, bound_s: int = 120) -> str:
    """Wait (bounded by `bound_s`) until `proc` listens on 127.0.0.1:`port` in namespace `ns`,
    then the host's "address:port" forwarded to it. Probes in the guest, not through the
    forward: a forward to a port nobody listens on yet does not fail fast. LabError with the
    process's output if it never listens."""
    if lab.sh(ns, wait_listening_script(port, bound_s), timeout=bound_s + 60).returncode != 0:
        result = proc.poll()
        output = "still running" if result is None else f"exited: {result.stderr[-1500:]}"
        raise LabError(f"{' '.join(proc.argv[-8:])} in {ns}: not listening on {port} ({output})")
    host, forwarded = lab.forward(ns, port)
    return f"{host}:{forwarded}"
