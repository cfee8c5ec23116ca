"""Opening the two stores for a migration command, with failures mapped to ours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from schema.connect import connect
from strangler.config import Settings
from strangler.mongo import Database, open_database, ping

__all__ = ["legacy_database", "postgres"]


async def legacy_database(settings: Settings) -> Database:
    """The legacy MongoDB database of MONGO_URL, checked to answer."""
    db = open_database(settings.mongo_url)
    await ping(db, settings.mongo_url)
    return db


@asynccontextmanager
async def postgres(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """One PostgreSQL connection to DATABASE_URL, closed afterwards."""
    conn = await connect(settings.database_url)
    try:
        yield conn
    finally:
        await conn.close()
