"""Real-kernel lab: a throw-away qemu VM running Debian's kernel with an IPVS cluster inside.

`from lvsprobe.lab import Lab, Topology` loads lazily: the guest agent imports this package too,
and Python starts ~15x slower in the guest.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Lab": "lvsprobe.lab.lab",
    "RunResult": "lvsprobe.lab.lab",
    "Topology": "lvsprobe.lab.topology",
    "ServiceSpec": "lvsprobe.lab.topology",
    "Mode": "lvsprobe.lab.topology",
    "Ha": "lvsprobe.lab.topology",
    "KeepalivedSettings": "lvsprobe.lab.topology",
    "load_topology": "lvsprobe.lab.topology",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lvsprobe.lab' has no attribute {name!r}")
