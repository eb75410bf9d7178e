"""The cyclic garbage collector paused while a run makes or walks its big, acyclic object
graphs: the plan (a tuple per flow), the flow records, the summary's columns.

Collections are triggered by allocation counts, and each older-generation one walks every
tracked object alive: building a plan of 150k flows paid more in collections walking the
growing list than in building it, and a run's finish the same over its records. What these
steps make dies by reference count, or lives on without cycles.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """The cyclic collector off for the block, on again after (if it was on)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
