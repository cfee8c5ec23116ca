"""The simulated life of a job run started by ``runNow``: queued -> running -> completed|failed.

Legacy ran workflows in background tasks of the API process itself; the
emulator does the same with a short, configurable pause between the steps.
The outcome is decided by the workflow as it was when the run started
(:func:`strangler.runs.run_outcome`, which the new side's run worker shares).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from legacy_emulator.realtime import Hub
from strangler.mongo import Database
from strangler.runs import run_outcome, status_message

__all__ = ["RunSimulator", "run_outcome", "status_message"]

logger = logging.getLogger(__name__)


class RunSimulator:
    def __init__(
        self, db: Database, hub: Hub, step_seconds: float, clock: Callable[[], datetime]
    ) -> None:
        self._runs = db["jobRun"]
        self._hub = hub
        self._step = step_seconds
        self._clock = clock
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, run: dict[str, Any], diagram: Any) -> None:
        """Announce the queued run and carry it on in the background."""
        self._hub.publish_run(
            run["subscription_id"],
            run["workflow_id"],
            status_message(run, "queued", run["created_at"]),
        )
        task = asyncio.create_task(self._simulate(run, diagram), name=run["job_run_id"])
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for every run in flight to finish."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stop the runs in flight (at shutdown; they stay in the state they reached)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _set_status(
        self, run: dict[str, Any], status: str, fields: dict[str, Any], message: str, level: str
    ) -> datetime:
        moment = self._clock()
        await self._runs.update_one(
            {"job_run_id": run["job_run_id"]},
            {
                "$set": {"status": status, **fields},
                "$push": {"logs": {"ts": moment, "level": level, "message": message}},
            },
        )
        self._hub.publish_run(
            run["subscription_id"], run["workflow_id"], status_message(run, status, moment)
        )
        return moment

    async def _simulate(self, run: dict[str, Any], diagram: Any) -> None:
        try:
            await asyncio.sleep(self._step)
            await self._set_status(run, "running", {}, "Run started", "INFO")
            await asyncio.sleep(self._step)
            status, rows, error = run_outcome(run["job_run_id"], diagram)
            finished = self._clock()
            elapsed = finished - run["created_at"]
            fields = {
                "completed_at": finished,
                "duration_ms": int(elapsed.total_seconds() * 1000),
                "rows_processed": rows,
                "error_message": error,
            }
            if status == "completed":
                text, level = f"Run completed: {rows} rows processed", "INFO"
            else:
                text, level = f"Run failed: {error}", "ERROR"
            await self._set_status(run, status, fields, text, level)
        except asyncio.CancelledError:
            raise
        except Exception:  # a background run has no caller to answer; legacy only logged it
            logger.exception("job run %s stopped", run["job_run_id"])
