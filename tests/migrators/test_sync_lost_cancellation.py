"""A sync worker stops when cancelled, even if a library call swallowed the cancellation.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result instead of raising
when the cancellation arrives just as the awaited operation completes (CPython
gh-86296); redis-py writes every command through it. A polling worker cancelled
at that moment used to go on polling for ever, and its caller waited for ever.
These tests make a real call lose the cancellation the same way, at a chosen
point, and check that the worker still ends, cancelled, within a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sync_fixtures import CONNECTORS, connector_doc, connector_id, differences, seed_tenants

from migrators.feeds import Feed
from migrators.feeds.leadership import hold_leadership, release_leadership, try_lead
from migrators.feeds.polling import PollingFeed
from migrators.spec import MappingContext
from migrators.sync import SyncOptions, SyncWorker
from migrators.touched import TouchedEntry, TouchedReader, record_touched, stream_key
from strangler.mongo import Collection, Database

STOP_WITHIN_SECONDS = 5.0


class CancelLosingReader(TouchedReader):
    """Reads the real stream, but loses the first cancellation that arrives during a read
    and hands back the read's result instead, as ``asyncio.wait_for`` does on 3.11."""

    def __init__(self, redis: aioredis.Redis, entity: str, *, prefix: str) -> None:
        super().__init__(redis, entity, prefix=prefix)
        self.reading = asyncio.Event()
        self.lost = 0

    async def read(self, count: int, block_ms: int) -> list[TouchedEntry]:
        pending = asyncio.ensure_future(super().read(count, block_ms))
        self.reading.set()
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if self.lost:
                raise
            self.lost += 1
            return await pending
        finally:
            self.reading.clear()


@pytest.fixture
async def touched_redis() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"test:{secrets.token_hex(4)}:"
    try:
        yield client, prefix
    finally:
        await client.delete(stream_key("connectors", prefix))
        await client.aclose()


async def _ends_cancelled(task: asyncio.Task[Any]) -> bool:
    done, _ = await asyncio.wait({task}, timeout=STOP_WITHIN_SECONDS)
    return task in done and task.cancelled()


async def test_a_polling_worker_stops_although_a_read_lost_its_cancellation(
    pg: asyncpg.Connection,
    legacy_db: Database,
    migrated_database_url: str,
    ctx: MappingContext,
    touched_redis: tuple[aioredis.Redis, str],
) -> None:
    await seed_tenants(pg)
    redis, prefix = touched_redis
    collection: Collection = legacy_db["connectors"]
    reader = CancelLosingReader(redis, "connectors", prefix=prefix)

    def make_feed(conn: asyncpg.Connection) -> Feed:
        return PollingFeed(CONNECTORS, collection, reader, None, conn, block_ms=50)

    worker = SyncWorker(
        CONNECTORS, make_feed, migrated_database_url, ctx,
        options=SyncOptions(reconnect_wait_seconds=0.05),
    )  # fmt: skip
    task = asyncio.create_task(worker.run())
    try:
        await collection.insert_one(connector_doc(1))
        await record_touched(redis, "connectors", [connector_id(1)], prefix=prefix)
        await asyncio.wait_for(reader.reading.wait(), STOP_WITHIN_SECONDS)
        task.cancel()
        assert await _ends_cancelled(task), "the worker went on after it was cancelled"
        assert reader.lost == 1  # the cancellation really was swallowed by the read
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # It stopped cleanly: its leadership is free, and what it read before stopping is not
    # lost (applied, or still pending for the next leader).
    assert await try_lead(pg, "connectors")
    await release_leadership(pg, "connectors")
    await SyncWorker(CONNECTORS, make_feed, migrated_database_url, ctx).run(once=True)
    assert await differences(pg, collection, ctx) == []
    assert await reader.pending_count() == 0


async def test_a_standby_stops_although_its_wait_lost_the_cancellation(
    pg: asyncpg.Connection, migrated_database_url: str
) -> None:
    assert await try_lead(pg, "connectors")  # another worker leads, for as long as we like
    standby = await asyncpg.connect(migrated_database_url)
    standing_by = asyncio.Event()

    async def losing_standby() -> None:
        standing_by.set()
        with contextlib.suppress(asyncio.CancelledError):  # lost, as wait_for loses it on 3.11
            await asyncio.sleep(STOP_WITHIN_SECONDS * 2)

    task = asyncio.create_task(
        hold_leadership(standby, "connectors", poll_seconds=0.05, on_standby=losing_standby)
    )
    try:
        await asyncio.wait_for(standing_by.wait(), STOP_WITHIN_SECONDS)
        task.cancel()
        assert await _ends_cancelled(task), "the standby kept waiting after it was cancelled"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await standby.close()
        await release_leadership(pg, "connectors")
