"""The migration path through PyMongo's real client, against ``strangler legacy mongod``:
backfill, verify, both sync feeds (the change stream through the driver), a lost change
history recovered by a sweep, and rehearse loading into a MongoDB database."""

from __future__ import annotations

import argparse
import io
import logging
import pathlib
from collections.abc import AsyncIterator
from contextlib import redirect_stdout

import asyncpg
import httpx
import pytest
from test_sync_cli import _watermarks_to

from legacy_emulator.app import create_app
from legacy_emulator.export_load import dump_export
from legacy_emulator.generator import seed_store
from legacy_emulator.wire import CommandEngine, WireServer
from migrators.cli_backfill import run_backfill
from migrators.cli_sync import run_sync
from migrators.cli_verify import run_verify
from migrators.consistency import ConsistencyStore
from migrators.rehearse import rehearse
from strangler.config import ConnectorKeys, Settings
from strangler.errors import ConfigError
from strangler.mongo import Database, open_database
from strangler.tokens import mint_token

SECRET = "wire-path-test-secret-0123456789abcdef"


def _sync_args(**overrides: object) -> argparse.Namespace:
    values = {
        "entity": "all",
        "feed": "change-stream",
        "once": True,
        "batch_size": 200,
        "metrics_port": None,
        "sweep_interval": 5.0,
        "buckets": 8,
        "buckets_per_round": 8,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


@pytest.fixture
async def wire_db(wire_mongo_url: str) -> AsyncIterator[Database]:
    db = open_database(wire_mongo_url)
    yield db
    await db.client.close()


@pytest.fixture
def wire_settings(wire_mongo_url: str, database_url: str, keys: ConnectorKeys) -> Settings:
    return Settings(mongo_url=wire_mongo_url, database_url=database_url, connector_keys=keys)


async def _quiet_sync(settings: Settings, redis_prefix: str, **overrides: object) -> None:
    import redis.asyncio as aioredis

    redis = aioredis.from_url(settings.redis_url)
    try:
        with redirect_stdout(io.StringIO()), _watermarks_to(
            ConsistencyStore(redis, prefix=redis_prefix)
        ):  # fmt: skip
            workers = await run_sync(settings, _sync_args(**overrides))
    finally:
        await redis.aclose()
    for worker in workers:
        assert worker.dead_letters == 0, worker.spec.name


async def _all_clean(settings: Settings) -> str:
    out = io.StringIO()
    reports = await run_verify(settings, "all", out=out)
    assert all(report.clean for report in reports), out.getvalue()
    return out.getvalue()


async def _legacy_api(db: Database) -> tuple[httpx.AsyncClient, object]:
    app = create_app(db, jwt_secret=SECRET, password_rounds=4)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://legacy")
    return http, app


async def test_backfill_verify_and_change_stream_sync_through_pymongo(
    wire_db: Database,
    wire_settings: Settings,
    clean_pg: asyncpg.Connection,
    redis_prefix: str,
) -> None:
    seed = await seed_store(wire_db, scale="small", dirty=0.2, seed=5)
    out = io.StringIO()
    summaries = await run_backfill(wire_settings, "all", 200, out=out)
    assert sum(s.result.read for s in summaries) > 500, out.getvalue()
    await _all_clean(wire_settings)
    await _quiet_sync(wire_settings, redis_prefix)  # stores where each stream starts
    # The legacy API, over the same server, takes writes the sync has not seen.
    tenant, user = seed.tenants[0]
    http, _app = await _legacy_api(wire_db)
    headers = {"Authorization": f"Bearer {mint_token(SECRET, user, tenant)}"}
    made = []
    async with http:
        for n in range(5):
            response = await http.post(
                "/connectors/addConnector",
                headers=headers,
                json={
                    "connector_name": f"wire {n}",
                    "connector_type": "postgres",
                    "connection_detail": {"host": "db.internal", "port": 5432 + n},
                },
            )
            assert response.status_code == 201, response.text
            made.append(response.json()["data"]["connector_id"])
        response = await http.post(
            "/connectors/updateConnector",
            headers=headers,
            json={"connector_id": made[0], "description": "edited over the wire"},
        )
        assert response.status_code == 200, response.text
        response = await http.post(
            "/connectors/deleteConnector", headers=headers, json={"connector_id": made[1]}
        )
        assert response.status_code == 200, response.text
    await _quiet_sync(wire_settings, redis_prefix)
    rows = {
        r["connector_id"]: r
        for r in await clean_pg.fetch(
            "SELECT connector_id, description, is_deleted FROM connectors "
            "WHERE connector_id = ANY($1::text[])",
            made,
        )
    }
    assert set(rows) >= set(made[:1] + made[2:])
    assert rows[made[0]]["description"] == "edited over the wire"
    assert made[1] not in rows or rows[made[1]]["is_deleted"]
    await _all_clean(wire_settings)


async def test_lost_change_history_is_swept_and_said(
    database_url: str,
    keys: ConnectorKeys,
    clean_pg: asyncpg.Connection,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = WireServer(CommandEngine(history=10))
    server.run()
    url = f"mongodb://127.0.0.1:{server.port}/uzo"
    settings = Settings(mongo_url=url, database_url=database_url, connector_keys=keys)
    db = open_database(url)
    try:
        await seed_store(db, scale="small", dirty=0.0, seed=3)
        with redirect_stdout(io.StringIO()):
            await run_backfill(settings, "all", 500)
        await _quiet_sync(settings, redis_prefix, entity="connectors")
        # More writes than the server's change log keeps: the stored token falls out.
        connectors = db["connectors"]
        edited = [d["connector_id"] async for d in connectors.find({})]
        assert len(edited) > 10
        for legacy_id in edited:
            await connectors.update_one(
                {"connector_id": legacy_id}, {"$set": {"description": "while away"}}
            )
        with caplog.at_level(logging.WARNING, logger="migrators.sync"):
            await _quiet_sync(settings, redis_prefix, entity="connectors")
        said = [r.getMessage() for r in caplog.records if "history lost" in r.getMessage()]
        assert len(said) == 1, said
        assert f"{len(edited)} differed, resumed on a new stream" in said[0]
        described = await clean_pg.fetch(
            "SELECT description FROM connectors WHERE connector_id = ANY($1::text[])", edited
        )
        assert [r["description"] for r in described] == ["while away"] * len(edited)
        # Later writes come through the new stream: no second sweep.
        await connectors.update_one({"connector_id": edited[0]}, {"$set": {"description": "after"}})
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="migrators.sync"):
            await _quiet_sync(settings, redis_prefix, entity="connectors")
        assert not [r for r in caplog.records if "history lost" in r.getMessage()]
        description = await clean_pg.fetchval(
            "SELECT description FROM connectors WHERE connector_id = $1", edited[0]
        )
        assert description == "after"
        await _all_clean(settings)
    finally:
        await db.client.close()
        server.stop()


async def test_polling_feed_through_pymongo(
    wire_db: Database, wire_settings: Settings, redis_prefix: str
) -> None:
    await seed_store(wire_db, scale="small", dirty=0.2, seed=9)
    await _quiet_sync(wire_settings, redis_prefix, feed="polling")
    await _all_clean(wire_settings)


async def test_rehearse_loads_into_an_empty_mongodb_database(
    legacy_db: Database,
    wire_mongo_url: str,
    empty_database_url: str,
    keys: ConnectorKeys,
    tmp_path: pathlib.Path,
) -> None:
    await seed_store(legacy_db, scale="small", dirty=0.2, seed=13)
    await dump_export(legacy_db, tmp_path)
    report = await rehearse(
        tmp_path, empty_database_url, keys, progress=lambda _l: None, mongo_url=wire_mongo_url
    )
    assert report.clean, "\n".join(report.lines())
    # Never into a database that holds anything: a second rehearsal there is refused.
    with pytest.raises(ConfigError, match="empty database"):
        await rehearse(
            tmp_path, empty_database_url, keys, progress=lambda _l: None, mongo_url=wire_mongo_url
        )
    target = open_database(wire_mongo_url)
    try:
        assert await target["connectors"].count_documents({}) == await legacy_db[
            "connectors"
        ].count_documents({})
    finally:
        await target.client.close()
