"""Write fences: while an entity's source of truth is being switched, its writes wait.

A fence comes from either of two places, and either one fences:

- the rules file (``fenced: true``), so that every instance reading it agrees;
- this instance's admin port (``POST /admin/fence/{entity}?seconds=N``), bounded in time so a
  forgotten fence lifts itself; ``proxy.fence_client`` sets it on many instances at once.

A fenced write gets 503 with ``Retry-After``: the rules' ``fence_retry_after``, or the time
left on an admin fence if that is shorter (at least 1 s), so clients retry soon.
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
