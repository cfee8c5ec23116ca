"""One active applier per entity: a PostgreSQL session advisory lock.

Every worker of an entity tries ``pg_try_advisory_lock`` on the connection it
writes with; the one that gets it leads, the others stand by and try again
every ``poll_seconds``. The lock belongs to the leader's session, so when that
process dies, is killed, or loses its connection, PostgreSQL releases the lock
at once and the next standby's try succeeds. Because the leader writes on the
very connection that holds the lock, a leader cut off from the database can
commit nothing more: there is never a moment when two workers both apply.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable, Callable

import asyncpg

from migrators.feeds.cancellation import raise_if_cancel_requested

__all__ = ["LOCK_CLASS", "hold_leadership", "lock_ids", "release_leadership", "try_lead"]

# The first half of the two-key advisory lock: "sync" in ASCII, so that pg_locks rows of
# the forward sync are recognizable (classid) and never collide with other lock users.
LOCK_CLASS = 0x73796E63


def lock_ids(entity: str) -> tuple[int, int]:
    """(classid, objid) of the entity's lock, both as signed 32-bit ints."""
    objid = zlib.crc32(entity.encode())
    return LOCK_CLASS, objid - (1 << 32) if objid >= 1 << 31 else objid


async def try_lead(conn: asyncpg.Connection, entity: str) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", *lock_ids(entity)))


async def release_leadership(conn: asyncpg.Connection, entity: str) -> None:
    await conn.fetchval("SELECT pg_advisory_unlock($1, $2)", *lock_ids(entity))


async def hold_leadership(
    conn: asyncpg.Connection,
    entity: str,
    *,
    poll_seconds: float,
    on_standby: Callable[[], Awaitable[None]] | None = None,
    give_up: Callable[[], bool] = lambda: False,
) -> bool:
    """Wait until this connection leads ``entity``; False if ``give_up()`` said stop first."""
    announced = False
    while True:
        raise_if_cancel_requested()  # a standby asked to stop must not stand by for ever
        if await try_lead(conn, entity):
            return True
        if give_up():
            return False
        if not announced and on_standby is not None:
            await on_standby()
            announced = True
        await asyncio.sleep(poll_seconds)
