"""When the epoll engine (fastloop.py) starts each planned flow, and when its timers fire:
open flows at their time (the pool model also waits for a free connection), closed-stage
flows as their stage's slots free (after the flow's think time), inside the stage's window.
No I/O: the loop passes `now` in and starts what this says is due.
"""

from __future__ import annotations

import bisect
import heapq
import math
import operator
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from lvsprobe.replay.plan import PlannedFlow
from lvsprobe.replay.profile import Stage, windows

Item = TypeVar("Item")
_STAGE = operator.attrgetter("stage")


class Arrivals:
    """The plan's next flow and the closed stages' free slots; `skipped` counts the flows
    of closed stages that ended before a slot freed for them. `stopped`, once set, starts
    nothing more.

    The plan lists its flows stage by stage (make_plan's order, kept by a shard's subset), so
    the flows of a closed stage left when it ends are one run of the plan: skipped in one
    count, found by bisection, not walked one by one inside the loop."""

    def __init__(self, plan: Sequence[PlannedFlow], stages: tuple[Stage, ...]) -> None:
        self._plan = plan
        self._at = 0  # the plan's index of `next`
        self.next: PlannedFlow | None = plan[0] if plan else None
        self._stages = stages
        self._windows = windows(stages)
        self._free: dict[int, int] = {}  # closed stages: slots ready for their next flow
        self._thinking: list[tuple[float, int]] = []  # (when a slot in think time frees, stage)
        self.skipped = 0
        self.stopped = False

    def freed(self, planned: PlannedFlow, now: float) -> None:
        """A flow ended: its closed-stage slot frees, now or after its think time."""
        if planned.at_s is not None:
            return
        if planned.mix.think_s > 0:
            heapq.heappush(self._thinking, (now + planned.mix.think_s, planned.stage))
        else:
            self._free[planned.stage] = self._free.get(planned.stage, 0) + 1

    def _skip_stage(self, stage: int) -> None:
        """Skip the rest of ended closed stage `stage` (from `next` on)."""
        past = bisect.bisect_right(self._plan, stage, self._at, key=_STAGE)
        self.skipped += past - self._at
        self._move(past)

    def _move(self, at: int) -> None:
        self._at = at
        self.next = self._plan[at] if at < len(self._plan) else None

    def start_due(
        self,
        now: float,
        clock: Callable[[], float],
        start: Callable[[PlannedFlow, float], None],
        pool_free: Callable[[], bool],
    ) -> None:
        """Start (`start(planned, start_s)`) every flow due at `now`, in plan order."""
        while self._thinking and self._thinking[0][0] <= now:
            stage = heapq.heappop(self._thinking)[1]
            self._free[stage] = self._free.get(stage, 0) + 1
        free, windows_s = self._free, self._windows
        while (nxt := self.next) is not None and not self.stopped:
            if nxt.at_s is not None:  # open: when due (pool: and a connection is free)
                if nxt.at_s > now or not pool_free():
                    break
                start(nxt, clock())
            else:
                # A closed-stage flow is judged on a fresh reading, recorded as its start:
                # the batch's `now` may be stale by the flows started before it in this batch.
                fresh = clock()
                stage = nxt.stage
                opens_s, ends_s = windows_s[stage]
                if fresh >= ends_s:
                    self._skip_stage(stage)
                    continue
                slots = free.get(stage)
                if slots is None:
                    slots = self._stages[stage].concurrency
                if fresh < opens_s or slots <= 0:
                    free[stage] = slots
                    break
                free[stage] = slots - 1
                start(nxt, fresh)
            self._move(self._at + 1)

    def wait_s(self, now: float, until: float) -> float:
        """How long the loop may wait for events before a flow is due (at most `until`)."""
        wait = until - now
        if self._thinking:
            wait = min(wait, self._thinking[0][0] - now)
        nxt = self.next
        if nxt is not None and nxt.at_s is not None and nxt.at_s > now:
            wait = min(wait, nxt.at_s - now)  # (due but no free connection: events decide)
        elif nxt is not None and nxt.at_s is None:  # its stage's start, or end (to skip)
            start, end = self._windows[nxt.stage]
            wait = min(wait, (start if now < start else end) - now)
        return max(0.0, wait)


class Timers(Generic[Item]):
    """The engine's timers: each flow's deadline and the wake-ups its flow asks for.

    Deadlines sit in one FIFO per span (hold + flow timeout): flows start in clock order, so
    each FIFO is in deadline order and arming one costs an append, not a heap push. An item
    may come due after it stopped caring (closed, or given a later deadline): the caller
    checks.
    """

    def __init__(self) -> None:
        self._wakeups: list[tuple[float, int, Item]] = []
        self._deadlines: dict[float, deque[tuple[float, Item]]] = {}
        self._seq = 0

    def deadline(self, span_s: float, at_s: float, item: Item) -> None:
        fifo = self._deadlines.get(span_s)
        if fifo is None:
            fifo = self._deadlines[span_s] = deque()
        fifo.append((at_s, item))

    def wake(self, at_s: float, item: Item) -> None:
        self._seq += 1
        heapq.heappush(self._wakeups, (at_s, self._seq, item))

    def next_s(self) -> float:
        """The earliest time anything is due (inf: nothing armed)."""
        first = self._wakeups[0][0] if self._wakeups else math.inf
        for fifo in self._deadlines.values():
            if fifo and fifo[0][0] < first:
                first = fifo[0][0]
        return first

    def due(self, now: float) -> list[Item]:
        """Everything due at `now`, taken off: wake-ups first, then deadlines."""
        out = []
        while self._wakeups and self._wakeups[0][0] <= now:
            out.append(heapq.heappop(self._wakeups)[2])
        for fifo in self._deadlines.values():
            while fifo and fifo[0][0] <= now:
                out.append(fifo.popleft()[1])
        return out
