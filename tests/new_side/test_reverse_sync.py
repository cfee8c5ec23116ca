"""The reverse sync: what the new side committed, carried back into the legacy documents
exactly as legacy itself would have written them, once, and never echoed forward."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from bson import Timestamp
from new_side_support import CONNECTORS, ShortBlockReader, Sides, Tenant, connector_document

from migrators.feeds.change_stream import event_from_change
from migrators.feeds.polling import PollingFeed
from migrators.feeds.sweep import Sweeper
from migrators.origin import ORIGIN_FIELD
from migrators.reverse import apply_pending, pending_count
from migrators.sync import SyncOptions, SyncWorker
from strangler.mongo import Database, open_database

UPDATE = "/connectors/updateConnector"


def fresh_mongo() -> Database:
    return open_database(f"memory://reverse-{uuid.uuid4().hex}")


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """A connector document in verify's normalized form, without the reverse sync's marker."""
    assert CONNECTORS.normalize is not None
    plain = {k: v for k, v in document.items() if k not in ("_id", ORIGIN_FIELD)}
    return CONNECTORS.normalize(plain)


ACTIVITY_FIELDS = (
    "subscription_id", "UserId", "action", "object_type", "object_id", "object_name",
    "previous_data", "current_data", "created_at",
)  # fmt: skip


async def activity_of(db: Database, object_id: str) -> list[tuple[Any, ...]]:
    entries = await db["userActivity"].find({"object_id": object_id}).to_list(None)
    rows = [tuple(entry.get(name) for name in ACTIVITY_FIELDS) for entry in entries]
    return sorted(rows, key=lambda row: (row[-1], row[2]))


async def run_writes(sides: Sides, tenant: Tenant, connector_id: str) -> None:
    """The same writes on both sides, each answered alike (checked elsewhere)."""
    steps: list[dict[str, Any]] = [
        {"connector_id": connector_id, "connector_name": "renamed", "description": None},
        {"connector_id": connector_id, "connection_detail": {"host": "h2", "password": "n3w-pw"}},
        {"connector_id": connector_id, "connection_detail": {"host": "h3", "password": "********"}},
        {"connector_id": connector_id, "is_active": False},
    ]
    for body in steps:
        sides.clock[0] += 1.5
        legacy, new = await sides.both("POST", UPDATE, tenant, body=body)
        assert (legacy.status, new.status) == (200, 200)
    sides.clock[0] += 1
    body = {"connector_id": connector_id}
    for path in ("/connectors/testConnector", "/connectors/deleteConnector"):
        legacy, new = await sides.both("POST", path, tenant, body=body)
        assert (legacy.status, new.status) == (200, 200)


async def test_round_trip_writes_what_legacy_writes(fresh_sides: Sides, tenant: Tenant) -> None:
    sides = fresh_sides
    original = connector_document(tenant, "warehouse")
    await sides.seed(original)
    target = fresh_mongo()  # the legacy store as it was before the new side took over
    await target["connectors"].insert_one(dict(original))
    await run_writes(sides, tenant, original["connector_id"])
    assert await pending_count_of(sides.pool) == 6

    result = await apply_pending(sides.pool, target, CONNECTORS, sides.box.context())

    assert (result.applied, result.failed) == (6, 0)
    assert await pending_count_of(sides.pool) == 0
    query = {"connector_id": original["connector_id"]}
    legacy_doc = await sides.db["connectors"].find_one(query)
    reversed_doc = await target["connectors"].find_one(query)
    assert legacy_doc is not None and reversed_doc is not None
    assert comparable(reversed_doc) == comparable(legacy_doc)
    # As legacy stores it: the password in plain text, the latest one set.
    assert reversed_doc["connection_detail"]["password"] == "n3w-pw"
    assert reversed_doc["connection_detail"]["host"] == "h3"
    assert reversed_doc[ORIGIN_FIELD]["by"] == "reverse-sync"
    assert await target["connectors"].count_documents(query) == 1
    assert await activity_of(target, original["connector_id"]) == await activity_of(
        sides.db, original["connector_id"]
    )


async def test_a_connector_added_on_the_new_side_lands_as_legacy_adds_it(
    fresh_sides: Sides, tenant: Tenant
) -> None:
    sides = fresh_sides
    body = {
        "connector_name": "crm",
        "connector_type": "mysql",
        "description": None,
        "connection_detail": {"host": "crm", "port": 3306, "password": "pa$$"},
    }
    legacy, new = await sides.both("POST", "/connectors/addConnector", tenant, body=body)
    target = fresh_mongo()
    await apply_pending(sides.pool, target, CONNECTORS, sides.box.context())
    legacy_id, new_id = legacy.json()["data"]["connector_id"], new.json()["data"]["connector_id"]
    legacy_doc = await sides.db["connectors"].find_one({"connector_id": legacy_id})
    reversed_doc = await target["connectors"].find_one({"connector_id": new_id})
    assert legacy_doc is not None and reversed_doc is not None
    assert comparable(reversed_doc) == {**comparable(legacy_doc), "connector_id": new_id}
    assert reversed_doc["connection_detail"]["password"] == "pa$$"


async def pending_count_of(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await pending_count(conn, "connectors")


async def test_applying_again_changes_nothing(fresh_sides: Sides, tenant: Tenant) -> None:
    sides = fresh_sides
    original = connector_document(tenant, "twice")
    await sides.seed(original)
    target = fresh_mongo()
    await target["connectors"].insert_one(dict(original))
    await run_writes(sides, tenant, original["connector_id"])
    await apply_pending(sides.pool, target, CONNECTORS, sides.box.context())
    first = await target["connectors"].find({}).to_list(None)
    first_activity = await target["userActivity"].find({}).to_list(None)
    # As after a crash between the MongoDB write and the applied_at update: all again.
    async with sides.pool.acquire() as conn:
        await conn.execute("UPDATE migration_outbox SET applied_at = NULL")
    again = await apply_pending(sides.pool, target, CONNECTORS, sides.box.context())
    assert again.applied == 6
    assert await target["connectors"].find({}).to_list(None) == first
    assert await target["userActivity"].find({}).to_list(None) == first_activity


class _FailingOnce:
    """A legacy store whose connectors collection refuses its first write."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.failures_left = 1

    def __getitem__(self, name: str) -> Any:
        collection = self._db[name]
        if name != "connectors":
            return collection
        outer = self

        class Refusing:
            def __getattr__(self, attr: str) -> Any:
                return getattr(collection, attr)

            async def update_one(self, *args: Any, **kwargs: Any) -> Any:
                if outer.failures_left:
                    outer.failures_left -= 1
                    raise ConnectionError("mongod went away")
                return await collection.update_one(*args, **kwargs)

        return Refusing()


async def test_a_failing_row_stops_the_run_in_order_and_is_retried(
    fresh_sides: Sides, tenant: Tenant
) -> None:
    sides = fresh_sides
    original = connector_document(tenant, "flaky")
    await sides.seed(original)
    await run_writes(sides, tenant, original["connector_id"])
    target = fresh_mongo()
    flaky: Any = _FailingOnce(target)
    first = await apply_pending(sides.pool, flaky, CONNECTORS, sides.box.context())
    assert (first.applied, first.failed, first.pending) == (0, 1, 6)
    async with sides.pool.acquire() as conn:
        errors = await conn.fetch(
            "SELECT attempts, last_error FROM migration_outbox ORDER BY id LIMIT 1"
        )
    assert errors[0]["attempts"] == 1 and "mongod went away" in errors[0]["last_error"]
    second = await apply_pending(sides.pool, flaky, CONNECTORS, sides.box.context())
    assert (second.applied, second.failed) == (6, 0)


async def test_the_watermark_says_every_row_committed_before_it_is_in_mongodb(
    fresh_sides: Sides, tenant: Tenant, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    """The proxies let a request naming an id the new side just wrote through to legacy
    once the reverse watermark passes the write (proxy/causal.py): published only by a
    pass that left nothing pending, dated before that pass's last read."""
    import time

    from migrators.consistency import ConsistencyStore

    store = ConsistencyStore(redis_client, prefix=redis_prefix)
    key = f"{redis_prefix}applied:connectors:reverse"
    sides = fresh_sides
    original = connector_document(tenant, "watermarked")
    await sides.seed(original)
    await run_writes(sides, tenant, original["connector_id"])
    written = time.time()  # every outbox row of those writes committed before this
    flaky: Any = _FailingOnce(fresh_mongo())
    failed = await apply_pending(sides.pool, flaky, CONNECTORS, sides.box.context(),
                                 watermarks=store)  # fmt: skip
    assert failed.failed == 1 and await redis_client.get(key) is None  # rows still wait
    done = await apply_pending(sides.pool, flaky, CONNECTORS, sides.box.context(),
                               watermarks=store)  # fmt: skip
    assert done.applied == 6
    watermark = float(await redis_client.get(key))
    assert written < watermark <= time.time()


async def test_the_forward_sync_does_not_echo_reverse_writes(
    fresh_sides: Sides, tenant: Tenant, migrated_database_url: str, redis_url: str
) -> None:
    sides = fresh_sides
    original = connector_document(tenant, "echo")
    await sides.seed(original)
    await run_writes(sides, tenant, original["connector_id"])
    target = fresh_mongo()
    await apply_pending(sides.pool, target, CONNECTORS, sides.box.context())
    select = "SELECT * FROM connectors WHERE connector_id = $1"
    async with sides.pool.acquire() as conn:
        before = dict(await conn.fetchrow(select, original["connector_id"]))
        outbox_before = await conn.fetchval("SELECT count(*) FROM migration_outbox")

    # A real forward sync pass (polling feed, full anti-entropy sweep) over that store.
    redis = aioredis.from_url(redis_url)
    prefix = f"test:{uuid.uuid4().hex}:"
    try:

        def feed(conn: asyncpg.Connection) -> PollingFeed:
            sweeper = Sweeper(
                CONNECTORS, target["connectors"], sides.box.context(), buckets=4,
                buckets_per_round=4, id_column="connector_id",
            )  # fmt: skip
            reader = ShortBlockReader(redis, "connectors", prefix=prefix)
            return PollingFeed(
                CONNECTORS, target["connectors"], reader, sweeper, conn, sweep_interval=0.0,
                block_ms=10,
            )  # fmt: skip

        worker = SyncWorker(
            CONNECTORS, feed, migrated_database_url, sides.box.context(),
            options=SyncOptions(standby_poll_seconds=0.05),
        )  # fmt: skip
        await worker.run(once=True)
    finally:
        await redis.aclose()
    async with sides.pool.acquire() as conn:
        after = dict(await conn.fetchrow(select, original["connector_id"]))
        outbox_after = await conn.fetchval("SELECT count(*) FROM migration_outbox")
    assert after == before
    assert outbox_after == outbox_before
    # And the change-stream feed knows the reverse sync's update by its marker...
    written = await target["connectors"].find_one({"connector_id": original["connector_id"]})
    assert written is not None
    change = {
        "_id": {"_data": "01"},
        "operationType": "update",
        "clusterTime": Timestamp(1_772_000_000, 1),
        "documentKey": {"_id": written["_id"]},
        "updateDescription": {"updatedFields": {ORIGIN_FIELD: written[ORIGIN_FIELD]}},
        "fullDocument": written,
    }
    event = event_from_change(CONNECTORS, change)
    assert event is not None and event.echo
    # ...while a later legacy update of the same document is applied.
    legacy_change = {**change, "updateDescription": {"updatedFields": {"description": "x"}}}
    later = event_from_change(CONNECTORS, legacy_change)
    assert later is not None and not later.echo
