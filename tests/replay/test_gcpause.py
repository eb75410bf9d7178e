"""Collections paused over a run's big acyclic graphs, and with `promote` what survives goes
to the oldest generation unwalked, where a full collection still finds a cycle."""

from __future__ import annotations

import gc
import weakref

from lvsprobe.replay.gcpause import collections_paused


class _Node:
    def __init__(self) -> None:
        self.other: object = None


def test_survivors_are_promoted_and_a_cycle_among_them_is_still_collected() -> None:
    was_enabled = gc.isenabled()
    gc.enable()
    try:
        with collections_paused(promote=True):
            assert not gc.isenabled()
            kept = _Node()
            cycle = _Node()
            cycle.other = cycle
            dead = weakref.ref(cycle)
            del cycle
        assert gc.isenabled()
        assert not any(o is kept for o in gc.get_objects(generation=0))
        assert any(o is kept for o in gc.get_objects(generation=2))
        assert gc.get_freeze_count() == 0
        gc.collect()
        assert dead() is None
    finally:
        if not was_enabled:
            gc.disable()


def test_a_pause_inside_a_pause_leaves_collections_off() -> None:
    with collections_paused():
        with collections_paused(promote=True):
            pass
        assert not gc.isenabled()
