"""Dead letters: an event that cannot be applied is kept, the feed moves on, replay fixes it."""

from __future__ import annotations

import io
import json

import asyncpg
import pytest
from asyncpg.exceptions import CheckViolationError, DeadlockDetectedError
from sync_fixtures import CONNECTORS, connector_doc, connector_id, seed_tenants, stored_rows

from migrators.cli_dlq import run_list, run_replay
from migrators.dlq import list_dead_letters
from migrators.feeds.change_stream import ChangeStreamFeed
from migrators.feeds.event_log import EventLog
from migrators.spec import MappingContext
from migrators.sync import SyncOptions, SyncWorker, is_transient
from migrators.writer import BatchRejected
from strangler.config import Settings
from strangler.errors import DataError, ServiceUnavailable
from strangler.mongo import Database


def _rejected(cause: Exception) -> BatchRejected:
    try:
        raise BatchRejected("rejected") from cause
    except BatchRejected as exc:
        return exc


def test_only_transient_failures_are_retried() -> None:
    assert is_transient(_rejected(DeadlockDetectedError("deadlock detected")))
    assert not is_transient(_rejected(CheckViolationError("violates check constraint")))
    assert not is_transient(DataError("bad document"))
    # A lost database ends the leadership term instead (the worker reconnects).
    assert not is_transient(ServiceUnavailable("DATABASE_URL", "PostgreSQL", "gone"))


async def test_failing_event_is_dead_lettered_and_replayed_once_fixed(
    legacy_db: Database,
    pg: asyncpg.Connection,
    migrated_database_url: str,
    ctx: MappingContext,
    settings: Settings,
) -> None:
    await seed_tenants(pg)
    collection = legacy_db["connectors"]
    log = EventLog(collection, id_field="connector_id")
    worker = SyncWorker(
        CONNECTORS,
        lambda _conn: ChangeStreamFeed(CONNECTORS, log),
        migrated_database_url,
        ctx,
        options=SyncOptions(retry_wait_seconds=0.01),
    )
    await worker.run(once=True)
    await log.insert(connector_doc(1))
    # PostgreSQL text cannot hold a NUL character: this document can never be written.
    await log.insert({**connector_doc(2), "description": "broken\x00description"})
    await log.insert(connector_doc(3))
    await worker.run(once=True)

    assert set(await stored_rows(pg)) == {connector_id(1), connector_id(3)}  # the feed went on
    assert worker.dead_letters == 1
    position = await pg.fetchval(
        "SELECT position ->> 'resume_token' FROM migration_feed_positions WHERE entity = $1",
        "connectors",
    )
    assert json.loads(position) == log.events[-1]["_id"]
    (letter,) = await list_dead_letters(pg, entity="connectors")
    assert (letter.legacy_id, letter.feed, letter.error_class, letter.attempts) == (
        connector_id(2),
        "change-stream",
        "BatchRejected",
        1,  # permanent: retrying cannot help
    )
    assert letter.event["source"]["operationType"] == "insert"
    assert "pw-2-0" not in json.dumps(letter.event)  # the password is sealed, never stored

    out = io.StringIO()
    assert await run_list(settings, "connectors", False, out=out) == 1
    assert connector_id(2) in out.getvalue() and "BatchRejected" in out.getvalue()

    # Still broken: the replay fails again and says so.
    (failed,) = await run_replay(settings, "connectors", [letter.id], out=io.StringIO())
    assert failed.outcome == "failed"
    await collection.update_one(
        {"connector_id": connector_id(2)}, {"$set": {"description": "fixed"}}
    )
    out = io.StringIO()
    (outcome,) = await run_replay(settings, None, [], out=out)
    assert (outcome.id, outcome.outcome) == (letter.id, "applied")
    assert (await stored_rows(pg))[connector_id(2)]["description"] == "fixed"
    assert await list_dead_letters(pg) == []
    (done,) = await list_dead_letters(pg, include_replayed=True)
    assert (done.replay_outcome, done.attempts) == ("applied", 2)
    # Replaying again finds nothing waiting.
    assert await run_replay(settings, "connectors", [], out=io.StringIO()) == []
    with pytest.raises(DataError, match="no waiting dead letter with id 999"):
        await run_replay(settings, "connectors", [999], out=io.StringIO())


FAIL_TIMES = """
CREATE SEQUENCE failures;
CREATE TABLE fail_plan (connector_id text PRIMARY KEY, times integer NOT NULL);
GRANT SELECT ON fail_plan TO strangler_sync;
GRANT USAGE ON SEQUENCE failures TO strangler_sync;
-- A serialization failure (SQLSTATE 40001, transient) for the first `times` writes of a
-- planned connector: the sequence is not transactional, so it counts every attempt.
CREATE FUNCTION fail_as_planned() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE planned integer;
BEGIN
    SELECT times INTO planned FROM fail_plan WHERE connector_id = NEW.connector_id;
    IF planned IS NOT NULL AND nextval('failures') <= planned THEN
        RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER fail_as_planned BEFORE INSERT OR UPDATE ON connectors
    FOR EACH ROW EXECUTE FUNCTION fail_as_planned();
"""


async def test_transient_failures_are_retried_and_persistent_ones_dead_lettered_after_n(
    legacy_db: Database, pg: asyncpg.Connection, migrated_database_url: str, ctx: MappingContext
) -> None:
    await seed_tenants(pg)
    await pg.execute(FAIL_TIMES)
    log = EventLog(legacy_db["connectors"], id_field="connector_id")
    worker = SyncWorker(
        CONNECTORS,
        lambda _conn: ChangeStreamFeed(CONNECTORS, log),
        migrated_database_url,
        ctx,
        options=SyncOptions(max_attempts=3, retry_wait_seconds=0.01),
    )
    await worker.run(once=True)

    # Fails twice, then succeeds: retried, applied, no dead letter.
    await pg.execute("INSERT INTO fail_plan VALUES ($1, 2)", connector_id(1))
    await log.insert(connector_doc(1))
    await worker.run(once=True)
    assert connector_id(1) in await stored_rows(pg)
    assert await pg.fetchval("SELECT last_value FROM failures") == 3  # two failures, one success
    assert await list_dead_letters(pg) == []

    # Keeps failing: the batch is tried 3 times, then the event alone 3 times, then it is
    # dead-lettered with its attempts while its neighbour is applied.
    await pg.execute("DELETE FROM fail_plan")
    await pg.execute("INSERT INTO fail_plan VALUES ($1, 1000)", connector_id(2))
    await log.insert(connector_doc(2))
    await log.insert(connector_doc(3))
    await worker.run(once=True)
    assert set(await stored_rows(pg)) == {connector_id(1), connector_id(3)}
    (letter,) = await list_dead_letters(pg)
    assert (letter.legacy_id, letter.attempts) == (connector_id(2), 3)
    assert "could not serialize access" in letter.error
