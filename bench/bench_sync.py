"""Forward sync throughput (events/s) and lag at a steady 1,000 events/s.

Throughput: 20,000 change events (inserts and full replaces of 2,000 connectors)
are written first; then one worker drains them through the change-stream feed,
and, separately, 20,000 touched ids through the polling feed, each as
``strangler sync`` runs (500 events a batch, one transaction each, secrets
sealed, version-guarded upsert, position in the same transaction).

Lag: a producer writes connector updates to the store at 1,000 events/s for
20 s, recording each touched id as the proxy does, while the worker runs; the
lag of an event is the commit time of its batch minus the time of the write
(``at`` of the touched entry). p50/p99/max are printed beside the target of
1,000 events/s. Producer and worker share one process and one event loop on a
2-core machine (the in-process store cannot be shared between processes), so
the figures are pessimistic for a worker that has its own process.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

from migrators.crypto import SecretBox
from migrators.entities.connectors import SPECS as CONNECTOR_SPECS
from migrators.feeds import FeedBatch
from migrators.feeds.change_stream import ChangeStreamFeed
from migrators.feeds.event_log import EventLog
from migrators.feeds.polling import PollingFeed
from migrators.feeds.sweep import Sweeper, pass_seconds
from migrators.sync import SyncOptions, SyncWorker
from migrators.touched import TouchedReader, record_touched, stream_key
from schema.runner import upgrade
from schema.tenancy import ensure_subscription, enter_sync
from strangler.config import ConnectorKeys
from strangler.mongo import Collection, open_database

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
KEYS = ConnectorKeys.parse(
    "bench:" + base64.b64encode(b"bench-key-of-thirty-two-bytes!!!").decode()
)
SPEC = CONNECTOR_SPECS[0]
TENANTS = [f"sub_{n:012x}" for n in range(25)]
THROUGHPUT_EVENTS = 20_000
THROUGHPUT_DOCUMENTS = 2_000
TARGET_RATE = 1_000  # events/s
LAG_SECONDS = 20
CS_LAG_SECONDS = 10
# The in-process store scans every document for each updateLookup (about 9 us a document
# in mongomock, where a server uses its _id index): few documents keep that cost apart.
CS_LAG_DOCUMENTS = 20
LAG_DOCUMENTS = 200
SWEEP_BUCKETS, SWEEP_PER_ROUND, SWEEP_INTERVAL = 64, 16, 5.0  # the CLI's defaults


def _doc(n: int, rev: int) -> dict[str, object]:
    return {
        "connector_id": f"cn_{n:012x}",
        "subscription_id": TENANTS[n % len(TENANTS)],
        "connector_name": f"bench connector {n}",
        "connector_type": "postgres",
        "description": f"revision {rev}",
        "connection_detail": {
            "host": "db.internal",
            "port": 5432,
            "database": "dw",
            "username": "etl",
            "password": f"pw-{n}-{rev}",
        },
        "is_active": True,
        "test_status": "untested",
        "created_at": None,
        "d_flag": False,
    }


async def _scratch_database() -> str:
    name = f"bench_sync_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    await upgrade(url, progress=lambda _line: None)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await enter_sync(conn)
            for tenant in TENANTS:
                await ensure_subscription(conn, tenant)
    finally:
        await conn.close()
    return url


async def _drop(url: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        name = urlsplit(url).path.lstrip("/")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _sweep_rounds(url: str, box: SecretBox, collection: Collection) -> list[float]:
    """Seconds per sweep round (16 of 64 buckets) over the documents just synced."""
    sweeper = Sweeper(
        SPEC,
        collection,
        box.context(),
        buckets=SWEEP_BUCKETS,
        buckets_per_round=SWEEP_PER_ROUND,
        id_column="connector_id",
    )
    conn = await asyncpg.connect(url)
    try:
        durations = []
        for first in range(0, SWEEP_BUCKETS, SWEEP_PER_ROUND):
            started = time.perf_counter()
            result = await sweeper.run_round(conn, first)
            durations.append(time.perf_counter() - started)
            assert result.differing_ids == [], result.differing_ids[:5]
        return durations
    finally:
        await conn.close()


async def _throughput_change_stream(url: str, box: SecretBox) -> tuple[float, list[float]]:
    collection = open_database(f"memory://bench-sync-cs-{secrets.token_hex(4)}")["connectors"]
    log = EventLog(collection, id_field="connector_id")
    worker = SyncWorker(
        SPEC,
        lambda _c: ChangeStreamFeed(SPEC, log),
        url,
        box.context(),
        options=SyncOptions(batch_size=500),
    )
    await worker.run(once=True)  # stores the starting position
    for n in range(THROUGHPUT_DOCUMENTS):
        await log.insert(_doc(n, 0))
    for i in range(THROUGHPUT_EVENTS - THROUGHPUT_DOCUMENTS):
        n = i % THROUGHPUT_DOCUMENTS
        await log.replace(_doc(n, 1 + i // THROUGHPUT_DOCUMENTS))
    started = time.perf_counter()
    await worker.run(once=True)
    elapsed = time.perf_counter() - started
    assert worker.events_applied == THROUGHPUT_EVENTS, worker.events_applied
    return THROUGHPUT_EVENTS / elapsed, await _sweep_rounds(url, box, collection)


async def _throughput_polling(url: str, box: SecretBox, redis: aioredis.Redis) -> float:
    prefix = f"bench:{secrets.token_hex(4)}:"
    collection = open_database(f"memory://bench-sync-poll-{secrets.token_hex(4)}")["connectors"]
    await collection.insert_many([_doc(n, 0) for n in range(THROUGHPUT_DOCUMENTS)])
    ids = [f"cn_{i % THROUGHPUT_DOCUMENTS:012x}" for i in range(THROUGHPUT_EVENTS)]
    for start in range(0, len(ids), 1_000):
        await record_touched(redis, "connectors", ids[start : start + 1_000], prefix=prefix)
    worker = SyncWorker(
        SPEC,
        lambda conn: PollingFeed(
            SPEC, collection, TouchedReader(redis, "connectors", prefix=prefix), None, conn
        ),
        url,
        box.context(),
        options=SyncOptions(batch_size=500),
    )
    try:
        started = time.perf_counter()
        await worker.run(once=True)
        elapsed = time.perf_counter() - started
    finally:
        await redis.delete(stream_key("connectors", prefix))
    return THROUGHPUT_EVENTS / elapsed


async def _produce(
    collection: Collection, redis: aioredis.Redis, prefix: str, stop_at: float
) -> int:
    """Updates at TARGET_RATE, each followed by its touched id, until ``stop_at``."""
    keys = {}
    async for doc in collection.find({}, {"connector_id": 1}):
        keys[doc["connector_id"]] = doc["_id"]
    ids = sorted(keys)
    started = time.perf_counter()
    written = 0
    while time.perf_counter() < stop_at:
        due = int((time.perf_counter() - started) * TARGET_RATE)
        # The writes due in this tick, then their touched ids in one round trip, stamped
        # with the time before the first write: the measured lag can only be longer.
        tick_started = time.time()
        touched = []
        while written < due:
            legacy_id = ids[written % len(ids)]
            await collection.update_one(
                {"_id": keys[legacy_id]}, {"$set": {"description": f"write {written}"}}
            )
            touched.append(legacy_id)
            written += 1
        if touched:
            await record_touched(redis, "connectors", touched, prefix=prefix, at=tick_started)
        await asyncio.sleep(0.005)
    return written


async def _lag_at_target_rate(
    url: str, box: SecretBox, redis: aioredis.Redis
) -> tuple[int, float, list[float]]:
    prefix = f"bench:{secrets.token_hex(4)}:"
    collection = open_database(f"memory://bench-sync-lag-{secrets.token_hex(4)}")["connectors"]
    await collection.insert_many([_doc(n, 0) for n in range(LAG_DOCUMENTS)])
    lags: list[float] = []

    def observe(batch: FeedBatch, committed_at: float) -> None:
        lags.extend(committed_at - e.occurred_at for e in batch.events if e.occurred_at)

    worker = SyncWorker(
        SPEC,
        lambda conn: PollingFeed(
            SPEC,
            collection,
            TouchedReader(redis, "connectors", prefix=prefix),
            None,
            conn,
            block_ms=50,
        ),
        url,
        box.context(),
        options=SyncOptions(batch_size=500),
    )
    worker.commit_observers.append(observe)
    task = asyncio.create_task(worker.run())
    try:
        started = time.perf_counter()
        written = await _produce(collection, redis, prefix, started + LAG_SECONDS)
        elapsed = time.perf_counter() - started
        deadline = time.perf_counter() + 30
        reader = TouchedReader(redis, "connectors", prefix=prefix)
        while time.perf_counter() < deadline:  # let the worker drain what is left
            await asyncio.sleep(0.2)
            if await reader.pending_count() == 0 and await redis.xlen(reader.key) == written:
                info = await redis.xinfo_groups(reader.key)
                if info and info[0].get("lag", 1) == 0:
                    break
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        await redis.delete(stream_key("connectors", prefix))
    return written, written / elapsed, lags


async def _change_stream_lag(url: str, box: SecretBox) -> tuple[int, list[float]]:
    """Updates at TARGET_RATE through the event log for CS_LAG_SECONDS, worker running."""
    collection = open_database(f"memory://bench-sync-cslag-{secrets.token_hex(4)}")["connectors"]
    log = EventLog(collection, id_field="connector_id")
    conn = await asyncpg.connect(url)
    try:  # a new event log: the throughput run's resume token means nothing to it
        await conn.execute("DELETE FROM migration_feed_positions WHERE feed = 'change-stream'")
    finally:
        await conn.close()
    for n in range(CS_LAG_DOCUMENTS):
        await log.insert(_doc(n, 0))
    lags: list[float] = []

    def observe(batch: FeedBatch, committed_at: float) -> None:
        lags.extend(committed_at - e.occurred_at for e in batch.events if e.occurred_at)

    worker = SyncWorker(
        SPEC,
        lambda _c: ChangeStreamFeed(SPEC, log),
        url,
        box.context(),
        options=SyncOptions(batch_size=500),
    )
    await worker.run(once=True)  # catches up with the inserts; lag counted from here on
    worker.commit_observers.append(observe)
    task = asyncio.create_task(worker.run())
    written = 0
    try:
        started = time.perf_counter()
        while time.perf_counter() < started + CS_LAG_SECONDS:
            due = int((time.perf_counter() - started) * TARGET_RATE)
            while written < due:
                n = written % CS_LAG_DOCUMENTS
                await log.update(f"cn_{n:012x}", {"description": f"write {written}"})
                written += 1
                # The in-process store never waits on I/O: yield as a real server write would.
                await asyncio.sleep(0)
            await asyncio.sleep(0.005)
        for _ in range(300):  # up to 30 s for the worker to apply what is left
            if len(lags) >= written:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    return written, lags


async def _run() -> None:
    url = await _scratch_database()
    box = SecretBox(KEYS)
    redis = aioredis.from_url(REDIS_URL)
    try:
        cs_rate, rounds = await _throughput_change_stream(url, box)
        polling_rate = await _throughput_polling(url, box, redis)
        written, rate, lags = await _lag_at_target_rate(url, box, redis)
        cs_written, cs_lags = await _change_stream_lag(url, box)
    finally:
        await redis.aclose()
        await _drop(url)
    print(
        f"sync throughput, change-stream feed: {cs_rate:>8,.0f} events/s "
        f"(target {TARGET_RATE:,} events/s)"
    )
    print(
        f"sync throughput, polling feed:       {polling_rate:>8,.0f} events/s "
        f"(target {TARGET_RATE:,} events/s)"
    )
    print(
        f"steady load: {written:,} writes in {LAG_SECONDS} s = {rate:,.0f} events/s "
        f"(target {TARGET_RATE:,}); {len(lags):,} lag samples"
        "\n  (an id touched several times within one batch counts once, from its oldest write)"
    )
    passes = pass_seconds(SWEEP_BUCKETS, SWEEP_PER_ROUND, SWEEP_INTERVAL)
    print(
        f"sweep over {THROUGHPUT_DOCUMENTS:,} connectors (1y scale: 1,500): a round of "
        f"{SWEEP_PER_ROUND}/{SWEEP_BUCKETS} buckets takes {max(rounds):.2f} s at most; "
        f"staleness bound {passes:.0f} s + {max(rounds):.2f} s "
        f"(= ceil({SWEEP_BUCKETS}/{SWEEP_PER_ROUND}) x {SWEEP_INTERVAL:.0f} s + a round)"
    )
    if lags:
        print(
            f"lag (commit - write), polling feed: p50 {_percentile(lags, 0.5) * 1000:.0f} ms, "
            f"p99 {_percentile(lags, 0.99) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms"
        )
    if cs_lags:
        print(
            f"lag (commit - wallTime), change-stream feed, {cs_written:,} updates in "
            f"{CS_LAG_SECONDS} s: p50 {_percentile(cs_lags, 0.5) * 1000:.0f} ms, "
            f"p99 {_percentile(cs_lags, 0.99) * 1000:.0f} ms, max {max(cs_lags) * 1000:.0f} ms"
        )


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()
