"""Fixtures of the workspace-tree tests: an in-process legacy store, keys, and one migrated
PostgreSQL database for the directory whose tables are emptied before each test."""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from migrators.crypto import SecretBox
from migrators.spec import MappingContext
from strangler.config import ConnectorKeys
from strangler.mongo import Database, open_database

# Emptied before each test (CASCADE reaches the tree's children).
_TABLES = (
    "subscriptions, users, connectors, workspaces, folders, jobs, workflows, "
    "workflow_dependencies, workflow_tree_entries, workflow_versions, workflow_backups, "
    "migration_quarantine, migration_tombstones, migration_backfill_checkpoints, "
    "migration_feed_positions, migration_outbox, migration_dead_letters"
)


@pytest.fixture
def ctx() -> MappingContext:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    return SecretBox(ConnectorKeys.parse(f"k1:{key}", None)).context()


@pytest.fixture
def legacy_db() -> Database:
    return open_database(f"memory://tree-{secrets.token_hex(6)}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def tree_database_url(scratch_databases: Any) -> AsyncIterator[str]:  # tests/conftest.py
    url = await scratch_databases.create_migrated("strangler_test_tree")
    try:
        yield url
    finally:
        await scratch_databases.drop(url)


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
