"""The polling feed: touched ids (at least once) plus the anti-entropy sweep."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
import redis.asyncio as aioredis
from sync_fixtures import (
    CONNECTORS,
    connector_doc,
    connector_id,
    differences,
    seed_tenants,
    stored_rows,
)

from migrators.feeds import ObservationClock, version_seconds
from migrators.feeds.polling import PollingFeed
from migrators.feeds.sweep import BUCKET_SQL, Sweeper, bucket_of, pass_seconds
from migrators.spec import MappingContext
from migrators.sync import SyncOptions, SyncWorker
from migrators.touched import TouchedReader, record_touched, stream_key
from strangler.mongo import Collection, Database


@pytest.fixture
async def touched_redis() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"test:{secrets.token_hex(4)}:"
    try:
        yield client, prefix
    finally:
        await client.delete(stream_key("connectors", prefix))
        await client.aclose()


async def test_touched_ids_are_redelivered_until_acknowledged(
    touched_redis: tuple[aioredis.Redis, str],
) -> None:
    redis, prefix = touched_redis
    ids = [connector_id(n) for n in range(3)]
    assert await record_touched(redis, "connectors", ids, subscription_id="sub_x", prefix=prefix)
    first = TouchedReader(redis, "connectors", prefix=prefix)
    await first.ensure_group()
    taken = await first.read(10, block_ms=10)
    assert [e.legacy_id for e in taken] == ids
    assert {e.subscription_id for e in taken} == {"sub_x"}
    # The reader dies before its transaction commits: the next leader gets the same entries.
    successor = TouchedReader(redis, "connectors", prefix=prefix)
    await successor.ensure_group()
    again = await successor.read(10, block_ms=10)
    assert [e.entry_id for e in again] == [e.entry_id for e in taken]
    await successor.acknowledge([e.entry_id for e in again])
    assert await successor.pending_count() == 0
    third = TouchedReader(redis, "connectors", prefix=prefix)
    await third.ensure_group()
    assert await third.read(10, block_ms=10) == []


def test_observation_versions_only_rise() -> None:
    clock = ObservationClock(floor=0)
    first = clock.next(1_000.25)
    assert version_seconds(first) == 1_000
    assert clock.next(1_000.25) > first  # the same instant twice
    assert clock.next(999.0) > first  # a clock that stepped back
    taken_over = ObservationClock(floor=clock.last)  # a new leader with a slower clock
    assert taken_over.next(500.0) > clock.last


def test_staleness_bound_is_a_full_pass() -> None:
    assert pass_seconds(buckets=64, buckets_per_round=16, interval=5.0) == 20.0
    assert pass_seconds(buckets=64, buckets_per_round=24, interval=5.0) == 15.0


async def test_bucket_function_is_the_same_in_python_and_sql(pg: asyncpg.Connection) -> None:
    ids = [connector_id(n) for n in range(200)] + ["usr_é", "x"]
    rows = await pg.fetch(
        f"SELECT i, {BUCKET_SQL.format('i', 64)} AS b FROM unnest($1::text[]) AS i", ids
    )
    assert {r["i"]: r["b"] for r in rows} == {i: bucket_of(i, 64) for i in ids}
    assert len({bucket_of(i, 64) for i in ids}) > 50  # spread over the buckets


def _feed_factory(collection: Collection, ctx: MappingContext, redis: aioredis.Redis, prefix: str):  # type: ignore[no-untyped-def]
    def make(conn: asyncpg.Connection) -> PollingFeed:
        sweeper = Sweeper(
            CONNECTORS, collection, ctx, buckets=8, buckets_per_round=3, id_column="connector_id"
        )
        reader = TouchedReader(redis, "connectors", prefix=prefix)
        return PollingFeed(CONNECTORS, collection, reader, sweeper, conn, block_ms=20)

    return make


async def test_touched_writes_and_writes_bypassing_the_proxy_both_arrive(
    legacy_db: Database,
    pg: asyncpg.Connection,
    migrated_database_url: str,
    ctx: MappingContext,
    touched_redis: tuple[aioredis.Redis, str],
) -> None:
    redis, prefix = touched_redis
    await seed_tenants(pg)
    collection = legacy_db["connectors"]
    make_feed = _feed_factory(collection, ctx, redis, prefix)
    for n in range(12):
        await collection.insert_one(connector_doc(n))
    await record_touched(redis, "connectors", [connector_id(n) for n in range(12)], prefix=prefix)
    worker = SyncWorker(CONNECTORS, make_feed, migrated_database_url, ctx)
    await worker.run(once=True)
    assert await differences(pg, collection, ctx) == []
    # Writes nobody reported: an edit, a hard delete, a new document, a duplicate name
    # (renamed by the writer) and a document that can only be quarantined.
    await collection.update_one({"connector_id": connector_id(1)}, {"$set": {"description": "x"}})
    await collection.delete_one({"connector_id": connector_id(2)})
    await collection.insert_one(connector_doc(20))
    await collection.insert_one({**connector_doc(21), "connector_name": "conn 3"})
    await collection.insert_one({**connector_doc(22), "subscription_id": None})
    rerun = SyncWorker(CONNECTORS, make_feed, migrated_database_url, ctx)
    await rerun.run(once=True)  # one full sweep pass
    rows = await stored_rows(pg)
    assert rows[connector_id(1)]["description"] == "x"
    assert connector_id(2) not in rows
    assert rows[connector_id(21)]["connector_name"] == f"conn 3 [{connector_id(21)}]"
    quarantined = await pg.fetchval(
        "SELECT reason FROM migration_quarantine WHERE legacy_id = $1", connector_id(22)
    )
    assert quarantined.startswith("missing_subscription")
    await collection.delete_one({"connector_id": connector_id(22)})
    assert await differences(pg, collection, ctx) == []
    # Converged: a further pass finds nothing to read again, renamed and quarantined included.
    await collection.insert_one({**connector_doc(22), "subscription_id": None})
    sweeper = Sweeper(
        CONNECTORS, collection, ctx, buckets=4, buckets_per_round=4, id_column="connector_id"
    )
    assert (await sweeper.run_round(pg, 0)).differing_ids == []


async def test_sweep_finds_exactly_the_differing_ids(
    legacy_db: Database, pg: asyncpg.Connection, migrated_database_url: str, ctx: MappingContext
) -> None:
    await seed_tenants(pg)
    collection = legacy_db["connectors"]
    for n in range(40):
        await collection.insert_one(connector_doc(n))
    sweeper = Sweeper(
        CONNECTORS, collection, ctx, buckets=16, buckets_per_round=16, id_column="connector_id"
    )
    before = await sweeper.run_round(pg, 0)
    assert sorted(before.differing_ids) == sorted(connector_id(n) for n in range(40))
    worker = SyncWorker(
        CONNECTORS,
        lambda conn: PollingFeed(
            CONNECTORS, collection, TouchedReader(_NoRedis(), "connectors"), sweeper, conn
        ),
        migrated_database_url,
        ctx,
        options=SyncOptions(batch_size=7),
    )
    await worker.run(once=True)
    await collection.update_one({"connector_id": connector_id(5)}, {"$set": {"is_active": False}})
    after = await sweeper.run_round(pg, 0)
    assert after.differing_ids == [connector_id(5)]
    assert after.differing_buckets == [bucket_of(connector_id(5), 16)]


class _NoRedis:
    """A touched stream that never has entries: the sweep alone must do the work."""

    async def xgroup_create(self, *args: object, **kwargs: object) -> None:
        return None

    async def xreadgroup(self, *args: object, **kwargs: object) -> list[object]:
        return []

    async def xack(self, *args: object) -> int:
        return 0


async def test_entries_trimmed_while_pending_do_not_stay_pending(
    touched_redis: tuple[aioredis.Redis, str],
) -> None:
    redis, prefix = touched_redis
    await record_touched(redis, "connectors", ["cn_a", "cn_b", "cn_c"], prefix=prefix)
    reader = TouchedReader(redis, "connectors", prefix=prefix)
    await reader.ensure_group()
    taken = await reader.read(10, block_ms=10)
    # The leader dies; meanwhile the stream is trimmed past two of its pending entries.
    await redis.xdel(reader.key, taken[0].entry_id, taken[1].entry_id)
    successor = TouchedReader(redis, "connectors", prefix=prefix)
    await successor.ensure_group()
    again = await successor.read(10, block_ms=10)
    assert [e.legacy_id for e in again] == ["cn_c"]
    await successor.acknowledge([e.entry_id for e in again])
    assert await successor.pending_count() == 0


async def test_runs_legacy_moves_by_itself_are_read_again_without_waiting_for_the_sweep(
    legacy_db: Database, pg: asyncpg.Connection, migrated_database_url: str, ctx: MappingContext
) -> None:
    """Legacy's simulator moves a run queued -> running -> final in MongoDB, through no
    client's write: no touched id names it. The feed reads the documents of the runs
    PostgreSQL holds as not final again every revisit_interval, and no others."""
    from datetime import datetime

    from migrators.backfill import backfill_entity
    from migrators.entities.runs import SPECS as RUN_SPECS
    from migrators.registry import default_registry

    runs = legacy_db["jobRun"]
    tenant = "sub_0000000000r1"
    await legacy_db["Accounts"].insert_one({"subscription_id": tenant, "company_name": "R"})
    for run_id, status in (("run_00000000run1", "running"), ("run_00000000run2", "completed")):
        await runs.insert_one({"job_run_id": run_id, "subscription_id": tenant, "status": status,
                               "created_at": datetime(2026, 11, 2, 10, 0)})  # fmt: skip
    for name in ("subscriptions", "job_runs"):
        await backfill_entity(legacy_db, pg, default_registry().get(name), ctx)
    await runs.update_one({"job_run_id": "run_00000000run1"}, {"$set": {"status": "completed"}})
    spec = RUN_SPECS[0]
    feed = PollingFeed(spec, runs, TouchedReader(_NoRedis(), "job_runs"), None, pg,
                       block_ms=1, revisit_interval=60.0)  # fmt: skip
    await feed.open(None)
    batch = await feed.next_batch(100)
    assert batch is not None
    assert [(e.legacy_id, (e.document or {}).get("status")) for e in batch.events] == [
        ("run_00000000run1", "completed")]  # fmt: skip
    assert await feed.next_batch(100) is None  # the next revisit is a minute away


async def test_new_activity_entries_are_tailed_without_waiting_for_the_sweep(
    legacy_db: Database, pg: asyncpg.Connection
) -> None:
    """Legacy appends an activity entry to every write, and no touched id names it: the
    feed reads the entries inserted after the last ObjectId it saw, every poll, and keeps
    where it is in its position."""
    from datetime import UTC, datetime

    from bson import ObjectId

    from migrators.entities.runs import SPECS as RUN_SPECS

    activity = legacy_db["userActivity"]
    spec = RUN_SPECS[1]
    old = ObjectId.from_datetime(datetime(2026, 1, 1, tzinfo=UTC))
    await activity.insert_one({"_id": old, "subscription_id": "sub_t", "action": "viewed"})
    feed = PollingFeed(spec, activity, TouchedReader(_NoRedis(), "activity"), None, pg,
                       block_ms=1, revisit_interval=0.0)  # fmt: skip
    await feed.open(None)
    assert await feed.next_batch(100) is None  # a first leader: what is there is the sweep's
    new = ObjectId()
    await activity.insert_one({"_id": new, "subscription_id": "sub_t", "action": "created"})
    batch = await feed.next_batch(100)
    assert batch is not None and [e.legacy_id for e in batch.events] == [str(new)]
    assert batch.position["tail_after"] == str(new)
    # inserted now with an older ObjectId than one seen (as the reverse sync inserts the
    # new side's entries): left to the sweep
    await activity.insert_one({"_id": ObjectId.from_datetime(datetime(2026, 2, 1, tzinfo=UTC)),
                               "subscription_id": "sub_t", "action": "viewed"})  # fmt: skip
    assert await feed.next_batch(100) is None
    resumed = PollingFeed(spec, activity, TouchedReader(_NoRedis(), "activity"), None, pg,
                          block_ms=1, revisit_interval=0.0)  # fmt: skip
    await resumed.open(batch.position)
    assert await resumed.next_batch(100) is None  # nothing after it: nothing read twice


async def test_an_entry_the_new_side_wrote_is_not_deleted_before_the_reverse_sync_carries_it(
    legacy_db: Database, pg: asyncpg.Connection, migrated_database_url: str, ctx: MappingContext
) -> None:
    """A write on the new side queues its activity entry inside its own outbox row (another
    entity's); until the reverse sync applies it MongoDB lacks the entry. The activity sync
    never rests, and a sweep reading the entry as absent deleted the row: legacy then
    listed an entry the new side no longer had, for ever (the reverse sync's copy is an
    echo, never applied back)."""
    import json
    from datetime import UTC, datetime

    from bson import ObjectId
    from sync_fixtures import SUBSCRIPTIONS

    from migrators.entities.runs import SPECS as RUN_SPECS
    from migrators.origin import ORIGIN_FIELD, origin_marker
    from migrators.reverse import activity_document
    from proxy.handlers.history import insert_row
    from schema.tenancy import enter_sync

    spec = RUN_SPECS[1]
    activity = legacy_db["userActivity"]
    await seed_tenants(pg)
    tenant = SUBSCRIPTIONS[0]
    await activity.insert_one({"_id": ObjectId(), "subscription_id": tenant, "UserId": "usr_a",
                               "action": "created", "created_at": datetime.now(UTC)})  # fmt: skip

    def make_feed(conn: asyncpg.Connection) -> PollingFeed:
        sweeper = Sweeper(spec, activity, ctx, buckets=4, buckets_per_round=4,
                          id_column="activity_id")  # fmt: skip
        return PollingFeed(spec, activity, TouchedReader(_NoRedis(), "activity"), sweeper, conn,
                           block_ms=1, revisit_interval=0.0)  # fmt: skip

    async def entries() -> list[str]:
        async with pg.transaction():
            await enter_sync(pg)
            rows = await pg.fetch("SELECT activity_id FROM user_activity ORDER BY activity_id")
        return [r[0] for r in rows]

    await SyncWorker(spec, make_feed, migrated_database_url, ctx).run(once=True)
    assert len(await entries()) == 1
    # runNow on the new side: its run's outbox row carries the entry; not applied yet
    entry = {"activity_id": str(ObjectId()), "subscription_id": tenant, "UserId": "usr_a",
             "action": "executed", "object_type": "workflow", "object_id": "wf_1",
             "object_name": "flow", "ip_address": "127.0.0.1", "user_agent": "test",
             "previous_data": None, "current_data": {"status": "queued"},
             "created_at": datetime.now(UTC).isoformat()}  # fmt: skip
    mapped = spec.map_document(activity_document(entry), ctx)
    async with pg.transaction():
        await enter_sync(pg)
        await insert_row(pg, "user_activity", mapped.rows["user_activity"][0])  # type: ignore[union-attr]
        outbox_id = await pg.fetchval(
            "INSERT INTO migration_outbox (subscription_id, entity, legacy_id, operation, "
            "payload, origin) VALUES ($1, 'job_runs', 'run_1', 'insert', $2::jsonb, 'new') "
            "RETURNING id",
            tenant,
            json.dumps({"activity": entry}),
        )
    await SyncWorker(spec, make_feed, migrated_database_url, ctx).run(once=True)  # a full pass
    assert entry["activity_id"] in await entries()
    # the reverse sync carries it across; from then on both stores have it, once
    await activity.insert_one({**activity_document(entry), ORIGIN_FIELD: origin_marker(outbox_id)})
    async with pg.transaction():
        await enter_sync(pg)
        await pg.execute("UPDATE migration_outbox SET applied_at = now() WHERE id = $1", outbox_id)
    await SyncWorker(spec, make_feed, migrated_database_url, ctx).run(once=True)
    assert len(await entries()) == 2 and entry["activity_id"] in await entries()
    # held back only while carried: an entry MongoDB lost with no outbox row waiting is gone
    await activity.delete_one({"_id": ObjectId(entry["activity_id"])})
    await SyncWorker(spec, make_feed, migrated_database_url, ctx).run(once=True)
    assert entry["activity_id"] not in await entries()


async def test_a_sweep_only_entity_claims_no_more_than_its_last_full_pass_saw(
    legacy_db: Database, pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    """History documents (versions, backups) reach the sync through the sweep alone: a
    canary pin released on 'the touched stream is empty' sent a read to the new side
    before the sweep had carried the checkIn's version (the mode-combination test saw it)."""
    import dataclasses

    await seed_tenants(pg)
    collection = legacy_db["connectors"]
    for n in range(8):
        await collection.insert_one(connector_doc(n))
    now = [1000.0]
    history = dataclasses.replace(CONNECTORS, sweep_only=True)
    sweeper = Sweeper(history, collection, ctx, buckets=8, buckets_per_round=2,
                      id_column="connector_id")  # fmt: skip
    feed = PollingFeed(history, collection, TouchedReader(_NoRedis(), "connectors"), sweeper, pg,
                       sweep_interval=0.0, block_ms=1, clock=lambda: now[0])  # fmt: skip
    await feed.open(None)
    assert feed.watermark(now[0]) is None  # no pass yet: nothing can be claimed
    starts = []
    for _round in range(4):  # a full pass, a round a second
        starts.append(now[0])
        await feed.next_batch(100)
        now[0] += 1.0
    assert feed.watermark(now[0]) == starts[0]  # the oldest round of the pass
    await feed.next_batch(100)  # the next pass goes on: the pass before it still counts
    assert feed.watermark(now[0]) == starts[1]
    # an entity every write names claims the moment its stream was found empty
    named = PollingFeed(CONNECTORS, collection, TouchedReader(_NoRedis(), "connectors"),
                        sweeper, pg, clock=lambda: now[0])  # fmt: skip
    assert named.watermark(1234.5) == 1234.5
