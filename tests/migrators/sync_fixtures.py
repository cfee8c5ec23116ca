"""Helpers of the forward-sync tests: connector documents, tenants, and an independent
check that PostgreSQL holds what the mapping makes of every MongoDB document."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from migrators.entities.connectors import SPECS as CONNECTOR_SPECS
from migrators.spec import EntitySpec, Mapped, MappingContext
from schema.tenancy import ensure_subscription, enter_sync
from strangler.mongo import Collection

CONNECTORS: EntitySpec = CONNECTOR_SPECS[0]
SUBSCRIPTIONS = ("sub_00000000000a", "sub_00000000000b")
BOOKKEEPING = {"source_version", "synced_at"}


def connector_id(n: int) -> str:
    return f"cn_{n:012x}"


def connector_doc(n: int, *, rev: int = 0, subscription: str | None = None) -> dict[str, Any]:
    """A clean legacy connector; ``rev`` changes its content (and its password)."""
    created = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    return {
        "connector_id": connector_id(n),
        "subscription_id": subscription or SUBSCRIPTIONS[n % len(SUBSCRIPTIONS)],
        "connector_name": f"conn {n}",
        "connector_type": "postgres",
        "description": f"revision {rev}",
        "connection_detail": {
            "host": f"db{n}.internal",
            "port": 5432,
            "database": "warehouse",
            "username": "etl",
            "password": f"pw-{n}-{rev}",
        },
        "is_active": True,
        "test_status": "untested",
        "last_tested_at": None,
        "created_by": None,
        "created_at": created,
        "updated_at": created,
        "d_flag": False,
    }


async def seed_tenants(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await enter_sync(conn)
        for subscription in SUBSCRIPTIONS:
            await ensure_subscription(conn, subscription)


def _plain(value: Any) -> Any:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


async def stored_rows(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    rows = {}
    for record in await conn.fetch("SELECT * FROM connectors"):
        row = {k: _plain(v) for k, v in record.items()}
        for column in ("connection_detail", "extra"):
            if isinstance(row[column], str):
                row[column] = json.loads(row[column])
        rows[row["connector_id"]] = row
    return rows


def unrenamed(row: dict[str, Any]) -> dict[str, Any]:
    """A row whose duplicate name the writer renamed, with the name the mapping gave."""
    renamed = row["extra"].get("$renamed")
    if not renamed:
        return row
    extra = {k: v for k, v in row["extra"].items() if k != "$renamed"}
    return {**row, **renamed, "extra": extra}


async def differences(
    conn: asyncpg.Connection, collection: Collection, ctx: MappingContext
) -> list[str]:
    """Every way the connectors table differs from the mapping of the collection."""
    stored = await stored_rows(conn)
    problems: list[str] = []
    seen: set[str] = set()
    async for document in collection.find({}):
        legacy_id = document["connector_id"]
        seen.add(legacy_id)
        mapped = CONNECTORS.map_document(document, ctx)
        assert isinstance(mapped, Mapped), legacy_id
        expected = mapped.rows["connectors"][0]
        row = stored.get(legacy_id)
        if row is None:
            problems.append(f"{legacy_id}: missing in PostgreSQL")
            continue
        row = unrenamed(row)
        for column, value in expected.items():
            if column in BOOKKEEPING:
                continue
            if _plain(row[column]) != _plain(value):
                problems.append(f"{legacy_id}.{column}: {row[column]!r} != {value!r}")
    for legacy_id in sorted(set(stored) - seen):
        problems.append(f"{legacy_id}: in PostgreSQL but not in MongoDB")
    return problems
