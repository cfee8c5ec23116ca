"""The routing table in force, and its safe replacement.

A reload reads and validates the file off the event loop, compiles a new immutable table
and swaps one reference. Requests and WebSockets already running keep the table they
started with; nothing is closed or drained. An invalid file is refused: the last good table
stays, and the refusal is logged, counted and kept for ``/admin/status``.

Triggers: a change of the file (polled: size, mtime and inode, so an editor's atomic
rename is seen too), SIGHUP, and ``POST /admin/reload``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.errors import RulesError
from proxy.metrics import ProxyMetrics
from proxy.registry import HandlerRegistry
from proxy.rules import load_rules
from proxy.table import RoutingTable, compile_table

__all__ = ["Refusal", "TableHolder"]

log = logging.getLogger("proxy.reload")


@dataclass(frozen=True)
class Refusal:
    at: float  # Unix time
    error: str
    trigger: str


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None  # mid-rename; the next poll sees the new file
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TableHolder:
    def __init__(
        self,
        path: str,
        registry: HandlerRegistry,
        metrics: ProxyMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._registry = registry
        self._metrics = metrics
        self._clock = clock
        self._lock = asyncio.Lock()
        self._table: RoutingTable | None = None
        self.loaded_at = 0.0
        self.last_refusal: Refusal | None = None
        self.applied = 0
        self.refused = 0
        self._signature: tuple[int, int, int] | None = None

    @property
    def current(self) -> RoutingTable:
        table = self._table
        if table is None:
            raise RuntimeError("TableHolder.load_initial() was not called")
        return table

    @property
    def ready(self) -> bool:
        return self._table is not None

    def _build(self) -> RoutingTable:
        loaded = load_rules(self.path, self._registry.has)
        return compile_table(loaded, self._registry.get)

    def load_initial(self) -> RoutingTable:
        """Load the table at start; an invalid file stops the start (raises RulesError)."""
        self._signature = _signature(self.path)
        table = self._build()
        self._apply(table, "start")
        return table

    def _apply(self, table: RoutingTable, trigger: str) -> None:
        old = self._table
        self._table = table
        self.loaded_at = self._clock()
        self.applied += 1
        self._metrics.table_applied(
            old.table_hash if old else None, table.table_hash, self.loaded_at
        )
        log.info(
            "routing table %s applied from %s (%s): %s",
            table.table_hash,
            self.path,
            trigger,
            ", ".join(f"{name}={plan.mode}" for name, plan in table.entities.items()),
        )

    async def reload(self, trigger: str) -> bool:
        """Reload now; True when a new table was applied, False if unchanged or refused."""
        async with self._lock:
            self._signature = _signature(self.path)
            try:
                table = await asyncio.to_thread(self._build)
            except RulesError as exc:
                self.refused += 1
                self.last_refusal = Refusal(self._clock(), str(exc), trigger)
                self._metrics.reloads.labels("refused").inc()
                log.error(
                    "routing rules refused (%s), keeping table %s:\n%s",
                    trigger,
                    self.current.table_hash,
                    exc,
                )
                return False
            if (
                table.table_hash == self.current.table_hash
                and table.file_sha256 == self.current.file_sha256
            ):
                self._metrics.reloads.labels("unchanged").inc()
                return False
            self._apply(table, trigger)
            self._metrics.reloads.labels("applied").inc()
            return True

    async def watch(self, interval: float) -> None:
        """Poll the file and reload when it changes; runs until cancelled."""
        while True:
            await asyncio.sleep(interval)
            signature = _signature(self.path)
            if signature is not None and signature != self._signature:
                await self.reload("file change")
