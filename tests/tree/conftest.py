"""Fixtures of the workspace-tree tests: an in-process legacy store, keys, and one migrated
PostgreSQL database for the directory whose tables are emptied before each test."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from migrators.crypto import SecretBox
from migrators.spec import MappingContext
from strangler.config import ConnectorKeys
from strangler.mongo import Database, open_database

PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")

# Emptied before each test (CASCADE reaches the tree's children).
_TABLES = (
    "subscriptions, users, connectors, workspaces, folders, jobs, workflows, "
    "workflow_dependencies, workflow_tree_entries, workflow_versions, workflow_backups, "
    "migration_quarantine, migration_tombstones, migration_backfill_checkpoints, "
    "migration_feed_positions, migration_outbox, migration_dead_letters"
)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def ctx() -> MappingContext:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    return SecretBox(ConnectorKeys.parse(f"k1:{key}", None)).context()


@pytest.fixture
def legacy_db() -> Database:
    return open_database(f"memory://tree-{secrets.token_hex(6)}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tree_database_url() -> AsyncIterator[str]:
    from schema.runner import upgrade

    name = f"strangler_test_tree_{os.getpid()}_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(PG_ADMIN_URL)._replace(path=f"/{name}"))
    try:
        await upgrade(url, progress=lambda _line: None)
        yield url
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def database_url(tree_database_url: str) -> str:
    conn = await asyncpg.connect(tree_database_url)
    try:
        await conn.execute(f"TRUNCATE {_TABLES} CASCADE")
    finally:
        await conn.close()
    return tree_database_url


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()
