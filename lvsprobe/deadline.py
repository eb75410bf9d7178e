"""When a scrape's reads must stop: checked between sources and between conn-table chunks, so a
scrape that Prometheus has given up on stops reading instead of running on unseen."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from lvsprobe.errors import DeadlineExceeded

# Prometheus' default scrape_timeout is 10 s: a scrape's reads stop a second before, leaving
# time to render and send what was read.
DEFAULT_READ_TIMEOUT_S = 9.0


@dataclass(frozen=True, slots=True)
class Deadline:
    """The clock value `at_s` after which reads stop; `budget_s` is what the caller granted."""

    at_s: float
    budget_s: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def after(cls, budget_s: float, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """A deadline `budget_s` seconds from now on `clock`."""
        return cls(clock() + budget_s, budget_s, clock)

    def expired(self) -> bool:
        return self.clock() >= self.at_s

    def reason(self) -> str:
        """The same words every time, so a failing source is logged once, not per scrape."""
        return f"the scrape deadline ({self.budget_s:g} s) passed"

    def check(self, what: str) -> None:
        """Raise `DeadlineExceeded` naming `what` was being read once the deadline passed."""
        if self.expired():
            raise DeadlineExceeded(f"{what}: stopped reading, {self.reason()}")
