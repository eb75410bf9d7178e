"""Real-kernel lab: a throw-away qemu VM running Debian's kernel with an IPVS cluster inside.

`from lvsprobe.lab import Lab, Topology` loads lazily: the guest agent imports this package too,
and Python starts ~15x slower in the guest.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab", "Mode", "RunResult", "ServiceSpec", "Topology", "load_topology"]


def __getattr__(name: str) -> Any:
    if name == "Lab":
        from lvsprobe.lab import lab

        return lab.Lab
    if name == "RunResult":
        from lvsprobe.lab import guest

        return guest.RunResult
    if name in ("Topology", "ServiceSpec", "Mode", "load_topology"):
        from lvsprobe.lab import topology

        return getattr(topology, name)
    raise AttributeError(f"module 'lvsprobe.lab' has no attribute {name!r}")
