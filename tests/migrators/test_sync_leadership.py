"""Two workers for one entity: one applies, the other waits and takes over when it dies."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import asyncpg
import pytest
from sync_fixtures import CONNECTORS, connector_doc, differences, seed_tenants

from migrators.feeds.change_stream import ChangeStreamFeed
from migrators.feeds.event_log import EventLog
from migrators.spec import MappingContext
from migrators.sync import SyncOptions, SyncWorker
from migrators.sync_status import sync_status
from strangler.errors import StranglerError
from strangler.mongo import Database


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_standby_takes_over_when_the_leader_dies(
    legacy_db: Database, pg: asyncpg.Connection, migrated_database_url: str, ctx: MappingContext
) -> None:
    await seed_tenants(pg)
    log = EventLog(legacy_db["connectors"], id_field="connector_id")
    options = SyncOptions(batch_size=10, standby_poll_seconds=0.05, heartbeat_seconds=0.2)

    def worker(name: str) -> SyncWorker:
        feed = lambda _conn: ChangeStreamFeed(CONNECTORS, log)  # noqa: E731
        return SyncWorker(CONNECTORS, feed, migrated_database_url, ctx, options=options, name=name)

    assert not (await sync_status(pg, "connectors")).running  # never ran
    first, second = worker("first"), worker("second")
    first_task = asyncio.create_task(first.run())
    await _until(lambda: first.leading)
    second_task = asyncio.create_task(second.run())
    both_led = False

    async def watch() -> None:
        nonlocal both_led
        while True:
            both_led = both_led or (first.leading and second.leading)
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    try:
        for n in range(25):
            await log.insert(connector_doc(n))
        await _until(lambda: first.events_applied == 25)
        assert (second.leading, second.events_applied) == (False, 0)
        status = await sync_status(pg, "connectors")
        assert (status.running, status.worker, status.feed) == (True, "first", "change-stream")
        assert status.lag_seconds is not None and status.lag_seconds < 10

        # The leader dies: its session goes (as with a killed process), then its task.
        assert first.connection_pid is not None
        await pg.execute("SELECT pg_terminate_backend($1)", first.connection_pid)
        first_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first_task
        for n in range(25, 40):
            await log.insert(connector_doc(n))
        await _until(lambda: second.events_applied == 15)
        assert first.events_applied == 25
        assert await differences(pg, legacy_db["connectors"], ctx) == []
        status = await sync_status(pg, "connectors")
        assert (status.running, status.worker) == (True, "second")
    finally:
        for task in (watcher, first_task, second_task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert not both_led
    after = await sync_status(pg, "connectors")
    assert not after.running and after.last_heartbeat is not None


async def test_once_does_not_wait_behind_another_leader(
    legacy_db: Database, pg: asyncpg.Connection, migrated_database_url: str, ctx: MappingContext
) -> None:
    log = EventLog(legacy_db["connectors"], id_field="connector_id")
    leader = SyncWorker(
        CONNECTORS, lambda _c: ChangeStreamFeed(CONNECTORS, log), migrated_database_url, ctx
    )
    task = asyncio.create_task(leader.run())
    try:
        await _until(lambda: leader.leading)
        once = SyncWorker(
            CONNECTORS, lambda _c: ChangeStreamFeed(CONNECTORS, log), migrated_database_url, ctx
        )
        with pytest.raises(StranglerError, match="another worker leads the connectors sync"):
            await once.run(once=True)
        assert once.events_applied == 0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
