"""The sync worker killed at random points of a 10,000-event stream, twenty times.

After every kill a new worker starts from the stored position; at the end
PostgreSQL must equal what the mapping makes of MongoDB, every event must have
been consumed, and no event may have been applied twice or out of order: a
trigger logs every row write with its version, and no (row, version) pair may
appear twice, nor a version lower than the row's previous one.

Kills, drawn from a seeded generator: cancelling the worker task at a random
moment; cancelling it at a chosen step of a batch (before the write, between
the commit and the acknowledgement of the feed, after the acknowledgement);
and terminating its PostgreSQL session from outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sync_fixtures import CONNECTORS, connector_doc, connector_id, differences, seed_tenants

from migrators.feeds import Feed
from migrators.feeds.change_stream import ChangeStreamFeed
from migrators.feeds.event_log import EventLog
from migrators.feeds.polling import PollingFeed
from migrators.spec import MappingContext
from migrators.sync import SyncOptions, SyncWorker
from migrators.touched import TouchedReader, record_touched, stream_key
from strangler.mongo import Collection, Database

EVENTS = 10_000
KILLS = 20
DOCUMENTS = 100
SEED = 20261125
STEPS = ("before-write", "committed", "acknowledged")

APPLIED_LOG = """
CREATE TABLE applied_log (n bigserial PRIMARY KEY, legacy_id text, version bigint);
CREATE FUNCTION log_applied() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    INSERT INTO applied_log (legacy_id, version) VALUES (NEW.connector_id, NEW.source_version);
    RETURN NEW;
END $$;
CREATE TRIGGER log_applied AFTER INSERT OR UPDATE ON connectors
    FOR EACH ROW EXECUTE FUNCTION log_applied();
"""


class Producer:
    """Writes a deterministic mix of inserts, updates, replaces, deletes and re-creations."""

    def __init__(self, rng: random.Random, write: Callable[[str, int, int], Awaitable[None]]):
        self._rng = rng
        self._write = write
        self._live: set[int] = set()
        self._gone: set[int] = set()
        self._rev: dict[int, int] = {}
        self.produced = 0

    async def produce(self, count: int) -> None:
        for _ in range(count):
            n, op = self._choose()
            self._rev[n] = self._rev.get(n, 0) + 1
            await self._write(op, n, self._rev[n])
            self.produced += 1
            if self.produced % 50 == 0:
                await asyncio.sleep(0)  # let the worker run between writes

    def _choose(self) -> tuple[int, str]:
        fresh = [n for n in range(DOCUMENTS) if n not in self._live and n not in self._gone]
        if fresh and (not self._live or self._rng.random() < 0.1):
            n = fresh[0]
            self._live.add(n)
            return n, "insert"
        roll = self._rng.random()
        if roll < 0.04 and self._gone:
            n = self._rng.choice(sorted(self._gone))
            self._gone.discard(n)
            self._live.add(n)
            return n, "insert"  # a re-creation after a delete
        n = self._rng.choice(sorted(self._live))
        if roll < 0.09 and len(self._live) > 1:
            self._live.discard(n)
            self._gone.add(n)
            return n, "delete"
        return n, "replace" if roll < 0.2 else "update"


class KillSwitch:
    """Cancels the running worker task at the ``at``-th passage through step ``target``."""

    def __init__(self, armed: bool, target: str, at: int, killed_at: dict[str, int]) -> None:
        self._armed, self._target, self._at = armed, target, at
        self._killed_at = killed_at
        self._count = 0

    async def hook(self, step: str) -> None:
        if not self._armed or step != self._target:
            return
        self._count += 1
        if self._count == self._at:
            self._killed_at[step] += 1
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)


def _change(n: int, rev: int) -> dict[str, Any]:
    return {"description": f"revision {rev}", "connection_detail": connector_doc(n, rev=rev)[
        "connection_detail"]}  # fmt: skip


@pytest.fixture
async def applied_log(pg: asyncpg.Connection) -> asyncpg.Connection:
    await seed_tenants(pg)
    await pg.execute(APPLIED_LOG)
    return pg


@pytest.fixture
async def redis_prefix_client() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"test:{secrets.token_hex(4)}:"
    try:
        yield client, prefix
    finally:
        await client.delete(stream_key("connectors", prefix))
        await client.aclose()


async def _kill_restart(
    pg: asyncpg.Connection,
    url: str,
    ctx: MappingContext,
    make_feed: Callable[[asyncpg.Connection], Feed],
    producer: Producer,
) -> dict[str, int]:
    rng = random.Random(SEED)
    kinds = {"timer": 0, "step": 0, "terminate": 0}
    killed_at: dict[str, int] = dict.fromkeys(STEPS, 0)
    # As in production: the sync stores its starting position before writes are expected.
    await SyncWorker(CONNECTORS, make_feed, url, ctx).run(once=True)
    per_round = EVENTS // KILLS
    for _ in range(KILLS):
        kind = rng.choice(sorted(kinds))
        kinds[kind] += 1
        target_step, target_count = rng.choice(STEPS), rng.randint(1, 2)
        switch = KillSwitch(kind == "step", target_step, target_count, killed_at)
        worker = SyncWorker(
            CONNECTORS,
            make_feed,
            url,
            ctx,
            options=SyncOptions(batch_size=rng.choice((50, 120, 300)), reconnect_wait_seconds=0.05),
            step_hook=switch.hook,
        )
        task = asyncio.create_task(worker.run())
        await producer.produce(per_round)
        if kind == "timer":
            await asyncio.sleep(rng.uniform(0.0, 0.3))
        elif kind == "terminate":
            await asyncio.sleep(rng.uniform(0.05, 0.3))
            if worker.connection_pid is not None:
                await pg.execute("SELECT pg_terminate_backend($1)", worker.connection_pid)
            await asyncio.sleep(0.1)
        else:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert producer.produced == EVENTS
    # The last worker runs to the end of the stream.
    final = SyncWorker(CONNECTORS, make_feed, url, ctx, options=SyncOptions(batch_size=500))
    await asyncio.wait_for(final.run(once=True), 60)
    # Every kind of kill happened, including between a commit and its acknowledgement.
    assert min(kinds.values()) >= 3 and killed_at["committed"] >= 1, (kinds, killed_at)
    return {**kinds, **killed_at}


async def _assert_applied_once_in_order(pg: asyncpg.Connection) -> int:
    duplicates = await pg.fetchval(
        "SELECT count(*) FROM (SELECT legacy_id, version FROM applied_log "
        "GROUP BY 1, 2 HAVING count(*) > 1) AS d"
    )
    backwards = await pg.fetchval(
        """SELECT count(*) FROM (
               SELECT version < lag(version) OVER (PARTITION BY legacy_id ORDER BY n) AS back
               FROM applied_log) AS w WHERE back"""
    )
    assert (duplicates, backwards) == (0, 0)
    applied: int = await pg.fetchval("SELECT count(*) FROM applied_log")
    return applied


async def test_change_stream_worker_survives_twenty_kills(
    applied_log: asyncpg.Connection,
    legacy_db: Database,
    migrated_database_url: str,
    ctx: MappingContext,
) -> None:
    pg = applied_log
    log = EventLog(legacy_db["connectors"], id_field="connector_id")

    async def write(op: str, n: int, rev: int) -> None:
        if op == "insert":
            await log.insert(connector_doc(n, rev=rev))
        elif op == "delete":
            await log.delete(connector_id(n))
        elif op == "replace":
            await log.replace(connector_doc(n, rev=rev))
        else:
            await log.update(connector_id(n), _change(n, rev))

    kinds = await _kill_restart(
        pg,
        migrated_database_url,
        ctx,
        lambda _conn: ChangeStreamFeed(CONNECTORS, log),
        Producer(random.Random(SEED + 1), write),
    )
    assert len(log.events) == EVENTS
    assert await differences(pg, legacy_db["connectors"], ctx) == []
    position = await pg.fetchval(
        "SELECT position ->> 'resume_token' FROM migration_feed_positions "
        "WHERE entity = 'connectors' AND feed = 'change-stream'"
    )
    assert position == f'{{"_data": "{log.events[-1]["_id"]["_data"]}"}}'  # all consumed
    applied = await _assert_applied_once_in_order(pg)
    assert applied <= EVENTS
    assert sum(kinds[k] for k in ("timer", "step", "terminate")) == KILLS


async def test_polling_worker_survives_twenty_kills(
    applied_log: asyncpg.Connection,
    legacy_db: Database,
    migrated_database_url: str,
    ctx: MappingContext,
    redis_prefix_client: tuple[aioredis.Redis, str],
) -> None:
    pg = applied_log
    redis, prefix = redis_prefix_client
    collection: Collection = legacy_db["connectors"]

    async def write(op: str, n: int, rev: int) -> None:
        if op == "insert":
            await collection.insert_one(connector_doc(n, rev=rev))
        elif op == "delete":
            await collection.delete_one({"connector_id": connector_id(n)})
        elif op == "replace":
            await collection.replace_one(
                {"connector_id": connector_id(n)}, connector_doc(n, rev=rev)
            )
        else:
            await collection.update_one(
                {"connector_id": connector_id(n)}, {"$set": _change(n, rev)}
            )
        # What the proxy does after a successful legacy write.
        await record_touched(redis, "connectors", [connector_id(n)], prefix=prefix)

    def make_feed(conn: asyncpg.Connection) -> Feed:
        # No sweep: the touched ids alone must deliver every write, at least once.
        reader = TouchedReader(redis, "connectors", prefix=prefix)
        return PollingFeed(CONNECTORS, collection, reader, None, conn, block_ms=50)

    await _kill_restart(
        pg,
        migrated_database_url,
        ctx,
        make_feed,
        Producer(random.Random(SEED + 2), write),
    )
    key = stream_key("connectors", prefix)
    assert await redis.xlen(key) == EVENTS
    assert (await redis.xpending(key, "strangler-sync"))["pending"] == 0  # all acknowledged
    assert await differences(pg, collection, ctx) == []
    await _assert_applied_once_in_order(pg)
