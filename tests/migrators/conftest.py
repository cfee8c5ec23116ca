"""Shared fixtures of the migrator tests: keys, an in-process legacy store, a PostgreSQL
connection to a freshly migrated database, and settings pointing at both."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from legacy_emulator.generator import SeedSummary, seed_store
from migrators.crypto import SecretBox
from migrators.spec import MappingContext
from strangler.config import ConnectorKeys, Settings
from strangler.mongo import Database, open_database


def make_keys(*kids: str, active: str | None = None) -> ConnectorKeys:
    spec = ",".join(f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}" for kid in kids)
    return ConnectorKeys.parse(spec, active)


@pytest.fixture
def key_factory() -> Callable[..., ConnectorKeys]:
    """Builds ConnectorKeys of fresh random keys: key_factory("old", "new", active="new")."""
    return make_keys


@pytest.fixture
def keys() -> ConnectorKeys:
    return make_keys("k1")


@pytest.fixture
def box(keys: ConnectorKeys) -> SecretBox:
    return SecretBox(keys)


@pytest.fixture
def ctx(box: SecretBox) -> MappingContext:
    return box.context()


@pytest.fixture
def mongo_url() -> str:
    return f"memory://migrators-{secrets.token_hex(6)}"


@pytest.fixture
def legacy_db(mongo_url: str) -> Database:
    return open_database(mongo_url)


@pytest.fixture
async def dirty_seed(legacy_db: Database) -> SeedSummary:
    """The small scale with every kind of production dirt at a 20% rate."""
    return await seed_store(legacy_db, scale="small", dirty=0.2, seed=7)


# Tables the migrator tests write; emptied before each test of this directory.
_TABLES = (
    "connectors, users, subscriptions, migration_quarantine, migration_tombstones, "
    "migration_backfill_checkpoints, migration_feed_positions"
)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def migrators_database_url(scratch_databases: Any) -> AsyncIterator[str]:  # tests/conftest.py
    """One migrated database for this directory's tests (creating one per test costs ~2 s);
    each test starts from empty tables (:func:`database_url`)."""
    url = await scratch_databases.create_migrated("strangler_test_migrators")
    try:
        yield url
    finally:
        await scratch_databases.drop(url)


@pytest.fixture
async def database_url(migrators_database_url: str) -> str:
    conn = await asyncpg.connect(migrators_database_url)
    try:
        await conn.execute(f"TRUNCATE {_TABLES} CASCADE")
    finally:
        await conn.close()
    return migrators_database_url


@pytest.fixture
async def clean_pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the directory's migrated database, its tables emptied."""
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def clean_settings(mongo_url: str, database_url: str, keys: ConnectorKeys) -> Settings:
    return Settings(mongo_url=mongo_url, database_url=database_url, connector_keys=keys)


@pytest.fixture
async def pg(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a database of its own (``migrated_database_url``)."""
    conn = await asyncpg.connect(migrated_database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def settings(mongo_url: str, migrated_database_url: str, keys: ConnectorKeys) -> Settings:
    return Settings(mongo_url=mongo_url, database_url=migrated_database_url, connector_keys=keys)
