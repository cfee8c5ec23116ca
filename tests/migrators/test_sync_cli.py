"""``strangler sync all --once`` on the dirty small seed, through the polling feed."""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout

import asyncpg
import redis.asyncio as aioredis

from legacy_emulator.generator import SeedSummary
from migrators import cli_sync
from migrators.cli_sync import run_sync
from migrators.consistency import ConsistencyStore
from migrators.feeds.sweep import Sweeper
from migrators.registry import default_registry
from migrators.spec import MappingContext
from migrators.sync_status import sync_status
from migrators.touched import record_touched, stream_key
from strangler.config import Settings
from strangler.mongo import Database


@contextmanager
def _watermarks_to(store: ConsistencyStore) -> Iterator[None]:
    """``strangler sync`` publishes to the proxies' store; here, to the test's namespace."""
    original = cli_sync.ConsistencyStore
    cli_sync.ConsistencyStore = lambda _redis: store  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        cli_sync.ConsistencyStore = original  # type: ignore[misc]


def _args(**overrides: object) -> argparse.Namespace:
    values = {
        "entity": "all",
        "feed": "polling",
        "once": True,
        "batch_size": 200,
        "metrics_port": None,
        "sweep_interval": 5.0,
        "buckets": 16,
        "buckets_per_round": 8,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


async def test_sync_all_once_converges_on_dirty_data(
    dirty_seed: SeedSummary,
    legacy_db: Database,
    pg: asyncpg.Connection,
    settings: Settings,
    ctx: MappingContext,
) -> None:
    # A canary tenant's write taken by legacy a moment ago pins its reads to legacy ...
    tenant = dirty_seed.tenants[0][0]
    redis = aioredis.from_url(settings.redis_url)
    pins = ConsistencyStore(redis, prefix=f"test:{tenant}:{time.time_ns()}:")
    await pins.note_write("connectors", tenant, "legacy", time.time() - 5)
    assert await pins.read_side("connectors", tenant, "new", time.time()) == "legacy"
    out = io.StringIO()
    with redirect_stdout(out), _watermarks_to(pins):
        workers = await run_sync(settings, _args())
    assert "a write that bypasses the proxy is found within 10 s" in out.getvalue()
    # ... until the forward sync says it has applied everything up to a later moment.
    assert await pins.read_side("connectors", tenant, "new", time.time()) == "new"
    await redis.aclose()
    names = [w.spec.name for w in workers]
    assert names.index("subscriptions") < names.index("users") < names.index("connectors")
    for spec in default_registry():  # every entity, _id-keyed and multi-table ones too
        sweeper = Sweeper(
            spec,
            legacy_db[spec.collection],
            ctx,
            buckets=4,
            buckets_per_round=4,
            id_column=spec.legacy_id_column,
        )
        result = await sweeper.run_round(pg, 0)
        assert result.compared > 0
        assert result.differing_ids == [], (spec.name, result.differing_ids[:5])
        status = await sync_status(pg, spec.name)
        assert status.feed == "polling" and not status.running  # --once has ended
    # Every document is a row or an open quarantine entry with its reason.
    connectors = await legacy_db["connectors"].count_documents({})
    rows = await pg.fetchval("SELECT count(*) FROM connectors")
    quarantined = await pg.fetchval(
        "SELECT count(*) FROM migration_quarantine WHERE entity = 'connectors' "
        "AND resolved_at IS NULL"
    )
    assert rows + quarantined == connectors


async def test_touched_write_through_the_cli_worker(
    legacy_db: Database, pg: asyncpg.Connection, settings: Settings, dirty_seed: SeedSummary
) -> None:
    with redirect_stdout(io.StringIO()):
        await run_sync(settings, _args())
    document = await legacy_db["connectors"].find_one(
        {"d_flag": False, "connector_id": {"$type": "string"}}
    )
    assert document is not None
    await legacy_db["connectors"].update_one(
        {"_id": document["_id"]}, {"$set": {"description": "changed through the proxy"}}
    )
    redis = aioredis.from_url(settings.redis_url)
    try:
        await record_touched(redis, "connectors", [document["connector_id"]])
        with redirect_stdout(io.StringIO()):
            await run_sync(settings, _args(entity="connectors", buckets=1, buckets_per_round=1))
    finally:
        await redis.delete(stream_key("connectors"))
        await redis.aclose()
    description = await pg.fetchval(
        "SELECT description FROM connectors WHERE connector_id = $1", document["connector_id"]
    )
    assert description == "changed through the proxy"
