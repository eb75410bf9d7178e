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
def collections_paused(promote: bool = False) -> Iterator[None]:
    """The cyclic collector off for the block, on again after (if it was on).

    With `promote`, what the block leaves alive is moved to the oldest generation on the way
    out, unwalked (gc.freeze then gc.unfreeze: list splices), where a full collection still
    finds any cycle: else the first young collection after the block walks all of it (a
    run's flow records, 60 ms at 100k flows). It also thaws what anything else had frozen.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if promote:
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()
