"""The change-stream feed: MongoDB's documented events in, versioned rows out, resumable."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import asyncpg
import pytest
from bson import ObjectId
from bson.timestamp import Timestamp
from prometheus_client import CollectorRegistry
from sync_fixtures import (
    CONNECTORS,
    connector_doc,
    connector_id,
    differences,
    seed_tenants,
    stored_rows,
)

from migrators.feeds import version_from_timestamp
from migrators.feeds.change_stream import (
    ChangeStreamFeed,
    ChangeStreamInvalidated,
    HistoryRecovery,
    MongoChangeStreamSource,
    event_from_change,
)
from migrators.feeds.event_log import ChangeStreamHistoryLost, EventLog
from migrators.feeds.metrics import SyncMetrics
from migrators.feeds.sweep import Sweeper
from migrators.origin import ORIGIN_FIELD, origin_marker
from migrators.spec import MappingContext
from migrators.sync import SyncOptions, SyncWorker
from strangler.mongo import Database

WALL = datetime(2026, 11, 20, 10, 0, 0, 500_000, tzinfo=UTC)


def documented(operation: str, **fields: object) -> dict[str, object]:
    """A change event laid out as MongoDB's change-events reference documents it."""
    return {
        "_id": {"_data": "8263A1B2C3000000012B022C0100296E5A1004"},
        "operationType": operation,
        "clusterTime": Timestamp(1_763_632_800, 7),
        "wallTime": WALL,
        "ns": {"db": "uzo", "coll": "connectors"},
        "documentKey": {"_id": ObjectId("6560f0f0f0f0f0f0f0f0f0f0")},
        **fields,
    }


def test_insert_event_becomes_a_versioned_document() -> None:
    doc = connector_doc(1)
    event = event_from_change(CONNECTORS, documented("insert", fullDocument=doc))
    assert event is not None
    assert event.legacy_id == connector_id(1)
    assert event.document == doc
    assert event.version == (1_763_632_800 << 32) | 7
    assert event.occurred_at == WALL.timestamp()
    assert not event.echo


def test_cluster_time_orders_versions_within_one_second() -> None:
    assert version_from_timestamp(100, 2) > version_from_timestamp(100, 1)
    assert version_from_timestamp(101, 0) > version_from_timestamp(100, 4_000_000)


def test_update_uses_the_looked_up_document_and_skips_a_vanished_one() -> None:
    doc = connector_doc(2, rev=3)
    change = documented(
        "update",
        fullDocument=doc,
        updateDescription={"updatedFields": {"description": "revision 3"}, "removedFields": []},
    )
    event = event_from_change(CONNECTORS, change)
    assert event is not None and event.document == doc
    # updateLookup found nothing: the delete event that follows carries the change.
    assert event_from_change(CONNECTORS, {**change, "fullDocument": None}) is None


def test_delete_names_its_legacy_id_from_the_pre_image_or_none() -> None:
    before = connector_doc(3)
    with_image = event_from_change(
        CONNECTORS, documented("delete", fullDocumentBeforeChange=before)
    )
    assert with_image is not None
    assert (with_image.legacy_id, with_image.document) == (connector_id(3), None)
    without = event_from_change(CONNECTORS, documented("delete"))
    assert without is not None and without.legacy_id is None  # dead-lettered by the worker


def test_stream_ending_events_stop_the_feed_with_advice() -> None:
    for operation in ("invalidate", "drop", "rename"):
        with pytest.raises(ChangeStreamInvalidated, match="backfill"):
            event_from_change(CONNECTORS, documented(operation))


def test_reverse_sync_writes_are_recognized_as_echoes() -> None:
    marker = origin_marker(41)
    doc = {**connector_doc(4), ORIGIN_FIELD: marker}
    replaced = event_from_change(CONNECTORS, documented("replace", fullDocument=doc))
    assert replaced is not None and replaced.echo
    stamped = documented(
        "update",
        fullDocument=doc,
        updateDescription={"updatedFields": {ORIGIN_FIELD: marker, "description": "x"}},
    )
    assert event_from_change(CONNECTORS, stamped).echo  # type: ignore[union-attr]
    # A later legacy update keeps the old marker in the document but not among its fields.
    legacy = documented(
        "update", fullDocument=doc, updateDescription={"updatedFields": {"description": "y"}}
    )
    assert not event_from_change(CONNECTORS, legacy).echo  # type: ignore[union-attr]


async def test_feed_resumes_after_the_stored_token(legacy_db: Database) -> None:
    log = EventLog(legacy_db["connectors"], id_field="connector_id")
    for n in range(5):
        await log.insert(connector_doc(n))
    feed = ChangeStreamFeed(CONNECTORS, log)
    await feed.open({"resume_token": log.events[0]["_id"]})
    batch = await feed.next_batch(2)
    assert batch is not None
    assert [e.legacy_id for e in batch.events] == [connector_id(1), connector_id(2)]
    await feed.close()
    resumed = ChangeStreamFeed(CONNECTORS, log)
    await resumed.open(batch.position)
    rest = await resumed.next_batch(10)
    assert rest is not None and rest.caught_up
    assert [e.legacy_id for e in rest.events] == [connector_id(3), connector_id(4)]
    with pytest.raises(ChangeStreamHistoryLost):
        await ChangeStreamFeed(CONNECTORS, log).open({"resume_token": {"_data": "82FF"}})


def _worker(
    url: str, log: EventLog, ctx: MappingContext, registry: CollectorRegistry | None = None
) -> SyncWorker:
    return SyncWorker(
        CONNECTORS,
        lambda _conn: ChangeStreamFeed(CONNECTORS, log),
        url,
        ctx,
        options=SyncOptions(batch_size=50, standby_poll_seconds=0.05),
        metrics=SyncMetrics(registry),
    )


async def test_worker_applies_inserts_updates_and_deletes(
    legacy_db: Database, pg: asyncpg.Connection, migrated_database_url: str, ctx: MappingContext
) -> None:
    await seed_tenants(pg)
    log = EventLog(legacy_db["connectors"], id_field="connector_id")
    # An empty stream first: the worker stores where it started, so nothing is missed later.
    await _worker(migrated_database_url, log, ctx).run(once=True)
    for n in range(30):
        await log.insert(connector_doc(n))
    for n in range(0, 30, 3):
        await log.update(connector_id(n), {"description": "edited"})
    for n in range(1, 30, 5):
        await log.delete(connector_id(n))
    registry = CollectorRegistry()
    worker = _worker(migrated_database_url, log, ctx, registry)
    await worker.run(once=True)
    assert await differences(pg, legacy_db["connectors"], ctx) == []
    # Updates of documents deleted before the update was read find nothing on lookup (6, 21):
    # their delete events carry the change.
    vanished = len({n for n in range(0, 30, 3)} & {n for n in range(1, 30, 5)})
    assert worker.events_applied == len(log.events) - vanished == 44
    assert (
        registry.get_sample_value(
            "strangler_sync_events_applied_total", {"entity": "connectors", "feed": "change-stream"}
        )
        == worker.events_applied
    )
    stored = json.loads(
        await pg.fetchval(
            "SELECT position FROM migration_feed_positions WHERE entity = 'connectors'"
        )
    )
    assert stored == {"resume_token": log.events[-1]["_id"]}
    lag = registry.get_sample_value(
        "strangler_sync_lag_seconds", {"entity": "connectors", "feed": "change-stream"}
    )
    assert lag is not None and 0 <= lag < 30


async def test_replayed_old_events_never_move_a_row_backwards(
    legacy_db: Database, pg: asyncpg.Connection, migrated_database_url: str, ctx: MappingContext
) -> None:
    await seed_tenants(pg)
    log = EventLog(legacy_db["connectors"], id_field="connector_id")
    await _worker(migrated_database_url, log, ctx).run(once=True)
    await log.insert(connector_doc(7))
    await log.replace(connector_doc(7, rev=1))
    await log.replace(connector_doc(7, rev=2))
    await _worker(migrated_database_url, log, ctx).run(once=True)
    newest = (await stored_rows(pg))[connector_id(7)]
    assert newest["description"] == "revision 2"
    # Rewind the stored position to before the first event: all three arrive again.
    await pg.execute(
        "UPDATE migration_feed_positions SET position = $1::jsonb WHERE entity = 'connectors'",
        json.dumps({"resume_token": log.events[0]["_id"]}),
    )
    await _worker(migrated_database_url, log, ctx).run(once=True)
    again = (await stored_rows(pg))[connector_id(7)]
    assert again["description"] == "revision 2"
    assert again["source_version"] == newest["source_version"]
    assert again["synced_at"] == newest["synced_at"]  # not even rewritten


def _recovering_worker(url: str, log: EventLog, ctx: MappingContext) -> SyncWorker:
    def feed(conn: asyncpg.Connection) -> ChangeStreamFeed:
        sweeper = Sweeper(CONNECTORS, log.collection, ctx, buckets=8, buckets_per_round=4,
                          id_column="connector_id")  # fmt: skip
        recovery = HistoryRecovery(CONNECTORS, log.collection, sweeper, conn)
        return ChangeStreamFeed(CONNECTORS, log, recovery=recovery)

    return SyncWorker(
        CONNECTORS, feed, url, ctx, options=SyncOptions(batch_size=7, standby_poll_seconds=0.05)
    )


async def test_lost_history_is_swept_and_a_new_stream_goes_on(
    legacy_db: Database,
    pg: asyncpg.Connection,
    migrated_database_url: str,
    ctx: MappingContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await seed_tenants(pg)
    collection = legacy_db["connectors"]
    log = EventLog(collection, id_field="connector_id")
    await _worker(migrated_database_url, log, ctx).run(once=True)  # stores where it starts
    for n in range(20):
        await log.insert(connector_doc(n))
    await _worker(migrated_database_url, log, ctx).run(once=True)
    # While the sync is away, writes it never hears of (the server's history of them rolls
    # over): an insert, an edit, a delete.
    await collection.insert_one(connector_doc(40))
    await collection.update_one(
        {"connector_id": connector_id(3)}, {"$set": {"description": "edited away"}}
    )
    await collection.delete_one({"connector_id": connector_id(5)})
    rolled_over = EventLog(collection, id_field="connector_id")  # the old token is gone

    # Without a way to sweep, the worker stops and says to backfill again.
    with pytest.raises(ChangeStreamHistoryLost, match="strangler backfill"):
        await _worker(migrated_database_url, rolled_over, ctx).run(once=True)

    with caplog.at_level("WARNING", logger="migrators.sync"):
        await _recovering_worker(migrated_database_url, rolled_over, ctx).run(once=True)
    assert await differences(pg, collection, ctx) == []
    rows = await stored_rows(pg)
    assert rows[connector_id(3)]["description"] == "edited away"
    assert connector_id(5) not in rows and connector_id(40) in rows
    said = [r.getMessage() for r in caplog.records if "change history lost" in r.getMessage()]
    assert len(said) == 1
    assert "swept 20 documents, 3 differed, resumed on a new stream" in said[0]
    # The new stream's position is stored: writes after it come through it, no new sweep.
    stored = json.loads(
        await pg.fetchval(
            "SELECT position FROM migration_feed_positions WHERE entity = 'connectors'"
        )
    )
    assert stored == {"resume_token": {"_data": "82" + "0" * 16}}
    await rolled_over.update(connector_id(7), {"description": "after recovery"})
    caplog.clear()
    with caplog.at_level("WARNING", logger="migrators.sync"):
        await _recovering_worker(migrated_database_url, rolled_over, ctx).run(once=True)
    assert (await stored_rows(pg))[connector_id(7)]["description"] == "after recovery"
    assert not [r for r in caplog.records if "change history lost" in r.getMessage()]


async def test_reverse_sync_echoes_are_not_applied_and_make_no_outbox_rows(
    legacy_db: Database, pg: asyncpg.Connection, migrated_database_url: str, ctx: MappingContext
) -> None:
    await seed_tenants(pg)
    log = EventLog(legacy_db["connectors"], id_field="connector_id")
    await _worker(migrated_database_url, log, ctx).run(once=True)
    await log.insert(connector_doc(9))
    await _worker(migrated_database_url, log, ctx).run(once=True)
    # The reverse sync writes an older state back, tagged with its outbox id.
    await log.replace({**connector_doc(9, rev=5), ORIGIN_FIELD: origin_marker(12)})
    registry = CollectorRegistry()
    worker = _worker(migrated_database_url, log, ctx, registry)
    await worker.run(once=True)
    assert (await stored_rows(pg))[connector_id(9)]["description"] == "revision 0"
    assert (
        registry.get_sample_value(
            "strangler_sync_echoes_skipped_total", {"entity": "connectors", "feed": "change-stream"}
        )
        == 1
    )
    assert await pg.fetchval("SELECT count(*) FROM migration_outbox") == 0


async def test_event_log_cursor_waits_for_new_events(legacy_db: Database) -> None:
    log = EventLog(legacy_db["connectors"], id_field="connector_id")
    cursor = await log.open(None, max_await_seconds=2.0)
    assert cursor.resume_token == {"_data": "82" + "0" * 16}

    async def write_soon() -> None:
        await asyncio.sleep(0.05)
        await log.insert(connector_doc(1))

    writer = asyncio.create_task(write_soon())
    change = await cursor.try_next()
    await writer
    assert change is not None and change["operationType"] == "insert"
    assert cursor.resume_token == log.events[0]["_id"]


class _RecordingCollection:
    """Stands in for PyMongo's AsyncCollection (no replica set here): records the watch call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    async def watch(self, **kwargs: object) -> EventLogCursorLike:
        self.calls.append(kwargs)
        return EventLogCursorLike()


class EventLogCursorLike:
    resume_token = None

    async def try_next(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_production_source_watches_with_update_lookup_after_the_stored_token() -> None:
    collection = _RecordingCollection()
    feed = ChangeStreamFeed(CONNECTORS, MongoChangeStreamSource(collection, max_await_ms=250))
    await feed.open({"resume_token": {"_data": "8263A1"}})
    assert collection.calls == [
        {
            "full_document": "updateLookup",
            "full_document_before_change": "whenAvailable",
            "resume_after": {"_data": "8263A1"},
            "max_await_time_ms": 250,
        }
    ]
    assert await feed.next_batch(10) is None  # nothing yet, and no token to store
