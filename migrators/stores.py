"""Opening the two stores for a migration command, with failures mapped to ours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from schema.connect import connect
from strangler.config import Settings, redact_url
from strangler.errors import PermanentError
from strangler.mongo import Database, close_database, open_database, ping

__all__ = ["SchemaNotReady", "legacy_database", "legacy_store", "postgres"]

# The newest table the migration commands rely on: present means the schema is recent enough.
_NEWEST_TABLE = "migration_tombstones"


class SchemaNotReady(PermanentError):
    """The database, or the tables the migration commands write, do not exist yet."""


async def legacy_database(settings: Settings) -> Database:
    """The legacy MongoDB database of MONGO_URL, checked to answer."""
    db = open_database(settings.mongo_url)
    await ping(db, settings.mongo_url)
    return db


@asynccontextmanager
async def legacy_store(settings: Settings) -> AsyncIterator[Database]:
    """:func:`legacy_database`, its client closed afterwards."""
    db = open_database(settings.mongo_url)
    try:
        await ping(db, settings.mongo_url)
        yield db
    finally:
        await close_database(db)


@asynccontextmanager
async def postgres(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One PostgreSQL connection to DATABASE_URL with the migration schema, closed afterwards."""
    where = redact_url(settings.database_url)
    try:
        conn = await connect(settings.database_url)
    except asyncpg.InvalidCatalogNameError as exc:
        raise SchemaNotReady(
            f"DATABASE_URL: the database of {where} does not exist; "
            "run 'strangler schema upgrade' (it creates it)"
        ) from exc
    try:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", _NEWEST_TABLE):
            raise SchemaNotReady(
                f"DATABASE_URL: {where} does not have the migration tables yet; "
                "run 'strangler schema upgrade' first"
            )
        yield conn
    finally:
        await conn.close()
