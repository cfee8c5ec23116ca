"""Whether an entity's forward sync is running and how far behind it is.

For ``strangler flags plan`` (its gates "sync running" into ``shadow`` and
"lag small" into ``new``)::

    status = await sync_status(conn, "connectors")
    status.running        # a worker leads the entity now and beat within STALE_AFTER
    status.lag_seconds    # seconds between a change in MongoDB and its commit in
                          # PostgreSQL, last batch; 0.0 when caught up; None if unknown
    status.last_heartbeat # when the leader last wrote its row (None: never ran)

"Running" needs both: the entity's advisory lock is held right now (see
:mod:`migrators.feeds.leadership`), and the leader's heartbeat is fresh. A
crashed worker's lock disappears with its session at once; a hung one keeps the
lock but stops beating, and turns "not running" after ``STALE_AFTER``.

The leader writes its row (:func:`beat`) when it takes over, after every batch
and at least every heartbeat interval while idle, in table
``migration_sync_status`` (migration 0013).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from migrators.feeds.leadership import lock_ids

__all__ = ["STALE_AFTER", "SyncStatus", "beat", "sync_status"]

# Three missed heartbeats (the worker beats every 5 s at most) make a leader stale.
STALE_AFTER = timedelta(seconds=15)


@dataclass(frozen=True)
class SyncStatus:
    running: bool
    lag_seconds: float | None
    last_heartbeat: datetime | None
    feed: str | None = None
    worker: str | None = None
    events_applied: int = 0


async def sync_status(conn: asyncpg.Connection, entity: str) -> SyncStatus:
    """The forward sync's state for ``entity`` (works as the owner or strangler_sync)."""
    classid, objid = lock_ids(entity)
    row = await conn.fetchrow(
        """SELECT s.feed, s.worker, s.heartbeat_at, s.lag_seconds, s.events_applied,
                  now() - s.heartbeat_at AS age
           FROM migration_sync_status AS s WHERE s.entity = $1""",
        entity,
    )
    locked = await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                          AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 2
                          AND database = (SELECT oid FROM pg_database
                                          WHERE datname = current_database()))""",
        classid,
        objid % (1 << 32),
    )
    if row is None:
        return SyncStatus(running=False, lag_seconds=None, last_heartbeat=None)
    return SyncStatus(
        running=bool(locked) and row["age"] <= STALE_AFTER,
        lag_seconds=row["lag_seconds"],
        last_heartbeat=row["heartbeat_at"],
        feed=row["feed"],
        worker=row["worker"],
        events_applied=row["events_applied"],
    )


async def beat(
    conn: asyncpg.Connection,
    entity: str,
    *,
    feed: str,
    worker: str,
    lag_seconds: float | None,
    applied: int = 0,
    new_leader: bool = False,
) -> None:
    """Record the leader's heartbeat (and lag, and events applied since the last beat)."""
    await conn.execute(
        """INSERT INTO migration_sync_status AS s
               (entity, feed, worker, leader_since, heartbeat_at, lag_seconds, events_applied,
                last_applied_at)
           VALUES ($1, $2, $3, now(), now(), $4, $5::bigint,
                   CASE WHEN $5::bigint > 0 THEN now() END)
           ON CONFLICT (entity) DO UPDATE SET
               feed = EXCLUDED.feed,
               worker = EXCLUDED.worker,
               leader_since = CASE WHEN $6::boolean THEN now() ELSE s.leader_since END,
               heartbeat_at = now(),
               -- a new leader's lag is unknown until its first batch
               lag_seconds = CASE WHEN $6::boolean THEN EXCLUDED.lag_seconds
                                  ELSE coalesce(EXCLUDED.lag_seconds, s.lag_seconds) END,
               events_applied = s.events_applied + EXCLUDED.events_applied,
               last_applied_at = CASE WHEN $5::bigint > 0 THEN now() ELSE s.last_applied_at END""",
        entity,
        feed,
        worker,
        lag_seconds,
        applied,
        new_leader,
    )
