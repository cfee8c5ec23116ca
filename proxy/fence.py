"""Write fences: while an entity's source of truth is being switched, its writes wait.

A fence comes from either of two places, and either one fences:

- the rules file (``fenced: true``), so that every instance reading it agrees;
- this instance's admin port (``POST /admin/fence/{entity}?seconds=N``), bounded in time so a
  forgotten fence lifts itself; ``proxy.fence_client`` sets it on many instances at once.

A fenced write gets 503 with ``Retry-After``: the rules' ``fence_retry_after``, or the time
left on an admin fence if that is shorter (at least 1 s), so clients retry soon.

A write that passed before the fence was set may still be on its way to its store: the
board counts each write from the moment it passes until its answer is sent (both engines),
and a switch waits until every proxy reports none in flight for the entity
(``GET /admin/fence/{entity}``) before it drains the sync. A fixed settling time alone
would be a guess: a legacy write hashing a password on a busy machine outlasts it, lands
after the drain, and the sync that rests once PostgreSQL is the truth never carries it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from proxy.table import EntityPlan

__all__ = ["MAX_FENCE_SECONDS", "FenceBoard"]

MAX_FENCE_SECONDS = 600.0


class FenceBoard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}

    # Called with no await between the fence check and write_started, so a write either
    # met the fence or is counted before a switch can ask.
    def write_started(self, entity: str) -> None:
        self._in_flight[entity] = self._in_flight.get(entity, 0) + 1

    def write_ended(self, entity: str) -> None:
        left = self._in_flight.get(entity, 0) - 1
        if left > 0:
            self._in_flight[entity] = left
        else:
            self._in_flight.pop(entity, None)

    def in_flight(self, entity: str) -> int:
        """Writes of ``entity`` that passed the fence check and are not answered yet."""
        return self._in_flight.get(entity, 0)

    def set(self, entity: str, seconds: float) -> float:
        """Fence ``entity`` for ``seconds`` (0 < seconds <= MAX_FENCE_SECONDS)."""
        if not 0 < seconds <= MAX_FENCE_SECONDS:
            raise ValueError(f"a fence lasts more than 0 and at most {MAX_FENCE_SECONDS:g} s")
        until = self._clock() + seconds
        self._until[entity] = until
        return until

    def lift(self, entity: str) -> bool:
        return self._until.pop(entity, None) is not None

    def remaining(self, entity: str) -> float | None:
        until = self._until.get(entity)
        if until is None:
            return None
        left = until - self._clock()
        if left <= 0:
            del self._until[entity]
            return None
        return left

    def retry_after(self, plan: EntityPlan, default: int) -> int | None:
        """None when writes of ``plan``'s entity may pass; else the Retry-After seconds."""
        if not self._until and not plan.fenced:
            return None  # the common case: one attribute check
        left = self.remaining(plan.name)
        if left is None:
            return default if plan.fenced else None
        bounded = min(float(default), left) if not plan.fenced else float(default)
        return max(1, math.ceil(bounded))

    def snapshot(self) -> dict[str, float]:
        """Seconds left on each admin fence in force."""
        return {
            entity: round(left, 3)
            for entity in list(self._until)
            if (left := self.remaining(entity)) is not None
        }
