"""Recorders: where the runner hands outcomes, without waiting for PostgreSQL.

:class:`BufferedRecorder` keeps outcomes in a bounded buffer and writes them in one
transaction per flush (every second, and on close). When PostgreSQL is down, the batch
is counted as lost and logged once per minute; the buffer never grows past its bound,
and the comparisons themselves (and the client) carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from shadow_compare.aggregate import tally
from shadow_compare.errors import ShadowError
from shadow_compare.model import Outcome
from shadow_compare.store import ResultStore

__all__ = ["BufferedRecorder", "MemoryRecorder", "Recorder"]

log = logging.getLogger(__name__)

DEFAULT_BUFFER = 10_000
DEFAULT_FLUSH_SECONDS = 1.0


class Recorder(Protocol):
    def record(self, outcome: Outcome) -> None:
        """Take an outcome; never blocks."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MemoryRecorder:
    """Keeps every outcome in a list (a replay without a database, and tests)."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def record(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class BufferedRecorder:
    def __init__(
        self,
        database_url: str,
        registry: CollectorRegistry | None = None,
        *,
        buffer_size: int = DEFAULT_BUFFER,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        store: ResultStore | None = None,
    ) -> None:
        self.store = store or ResultStore(database_url)
        self._buffer: deque[Outcome] = deque()
        self._buffer_size = buffer_size
        self._flush_seconds = flush_seconds
        self._task: asyncio.Task[None] | None = None
        self._last_warning = 0.0
        self.lost = (
            Counter(
                "strangler_shadow_results_lost",
                "Outcomes not stored (buffer full or PostgreSQL unavailable)",
                registry=registry,
            )
            if registry is not None
            else None
        )
        self.lost_count = 0

    def _lose(self, count: int) -> None:
        self.lost_count += count
        if self.lost is not None:
            self.lost.inc(count)

    def record(self, outcome: Outcome) -> None:
        if len(self._buffer) >= self._buffer_size:
            self._lose(1)
            return
        self._buffer.append(outcome)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever(), name="shadow-recorder")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        batch = list(self._buffer)
        self._buffer.clear()
        try:
            await self.store.write(tally(batch))
        except ShadowError as exc:  # unreachable or not migrated: counted, never raised
            self._lose(len(batch))
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                log.warning("shadow results not stored: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        await self.store.close()
