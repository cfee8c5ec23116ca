"""The reverse sync: writes the new side committed, carried back into the legacy documents.

While an entity is in ``new`` mode PostgreSQL is its source of truth; every write there
queued a ``migration_outbox`` row (origin ``new``) in its own transaction. This applier
takes the pending rows of an entity in id order and, for each one:

1. reads the entity's row as it is now and rebuilds the legacy document with the
   entity's ``to_document`` (the same mapping backfill and sync use, so the document is
   what legacy itself would have written; a connector's password is opened in memory
   only here, for the document written to MongoDB, as legacy stores it);
2. replaces the legacy document (upsert on the legacy id), tagged with the origin
   marker of :mod:`migrators.origin` so the forward sync knows it as an echo;
3. writes the write's ``userActivity`` entry, whose ``_id`` is the audit row's
   ``activity_id``, so writing it again replaces it instead of duplicating it;
4. only then sets ``applied_at`` in PostgreSQL.

A crash between 2-3 and 4 applies the row again later: every step is an idempotent
replace of a full document, so a repeated apply changes nothing. Each apply writes the
row's latest state, so several pending outbox rows of one document converge on the
last commit whatever happens between them. A failing row stops its entity's run (the
rows behind it wait, keeping their order) and records ``attempts`` and ``last_error``.

One applier per entity at a time: a session advisory lock serializes them; a second one
waits for the first.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from bson import ObjectId

from migrators.backfill import legacy_id_match
from migrators.consistency import ConsistencyStore, publish_watermark_or_warn
from migrators.origin import ORIGIN_FIELD, origin_marker
from migrators.spec import Document, EntitySpec, MappingContext
from migrators.tree_apply import load_rows
from schema.tenancy import enter_sync
from strangler.errors import DataError
from strangler.mongo import Database

__all__ = ["ReverseResult", "activity_document", "apply_pending", "pending_count"]

log = logging.getLogger("migrators.reverse")

DEFAULT_BATCH = 200
ACTIVITY_COLLECTION = "userActivity"
_ERROR_TEXT_LIMIT = 500


@dataclass
class ReverseResult:
    entity: str
    applied: int = 0
    failed: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)


def _lock_key(entity: str) -> int:
    return 0x52455653 << 32 | zlib.crc32(entity.encode())  # "REVS" + entity


def activity_document(entry: Mapping[str, Any]) -> Document:
    """An outbox payload's activity entry as legacy stores it in ``userActivity``."""
    created = entry.get("created_at")
    return {
        "_id": ObjectId(str(entry["activity_id"])),
        "subscription_id": entry.get("subscription_id"),
        "UserId": entry.get("UserId"),
        "action": entry.get("action"),
        "object_type": entry.get("object_type"),
        "object_id": entry.get("object_id"),
        "object_name": entry.get("object_name"),
        "ip_address": entry.get("ip_address"),
        "user_agent": entry.get("user_agent"),
        "previous_data": entry.get("previous_data"),
        "current_data": entry.get("current_data"),
        "created_at": datetime.fromisoformat(created) if isinstance(created, str) else created,
    }


async def pending_count(conn: asyncpg.Connection, entity: str | None = None) -> int:
    """Outbox rows not yet applied (of one entity, or of all)."""
    async with conn.transaction():
        await enter_sync(conn)
        count: int = await conn.fetchval(
            "SELECT count(*) FROM migration_outbox WHERE applied_at IS NULL "
            "AND origin = 'new' AND ($1::text IS NULL OR entity = $1)",
            entity,
        )
    return count


async def _current_rows(
    conn: asyncpg.Connection, spec: EntitySpec, legacy_id: str
) -> dict[str, list[dict[str, Any]]]:
    # every table of a multi-table entity (migrators.tree_apply), jsonb decoded
    rows = (await load_rows(conn, spec, [legacy_id])).get(legacy_id)
    if rows is None:
        raise DataError(f"{spec.name} {legacy_id}: the outbox names a row that does not exist")
    return rows


async def _apply_one(
    conn: asyncpg.Connection,
    db: Database,
    spec: EntitySpec,
    context: MappingContext,
    outbox: asyncpg.Record,
) -> None:
    assert spec.to_document is not None
    rows = await _current_rows(conn, spec, outbox["legacy_id"])
    document = spec.to_document(rows, context)
    document.pop("_id", None)
    document[ORIGIN_FIELD] = origin_marker(outbox["id"])
    # $set, as legacy writes its documents: the event carries the marker among its updated
    # fields (the forward sync's echo test), and fields outside the mapping are kept.
    await db[spec.collection].update_one(
        legacy_id_match(spec, outbox["legacy_id"]), {"$set": document}, upsert=True
    )
    payload = outbox["payload"]
    payload = json.loads(payload) if isinstance(payload, str) else payload
    entry = payload.get("activity") if isinstance(payload, dict) else None
    if entry:
        activity = activity_document(entry)
        activity[ORIGIN_FIELD] = origin_marker(outbox["id"])
        await db[ACTIVITY_COLLECTION].replace_one({"_id": activity["_id"]}, activity, upsert=True)


async def apply_pending(
    pool: asyncpg.Pool,
    db: Database,
    spec: EntitySpec,
    context: MappingContext,
    *,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[str], object] = lambda _line: None,
    watermarks: ConsistencyStore | None = None,
) -> ReverseResult:
    """Apply every pending outbox row of ``spec``'s entity, in id order, then return.

    Stops at the first row that fails (its error is recorded on the row and in the
    result); the rows behind it stay pending, in order, for the next run.

    ``watermarks`` (a migrators.consistency.ConsistencyStore): once a read finds nothing
    pending, every outbox row committed before that read is in MongoDB; that moment is
    published as the entity's reverse watermark, which lets a request of another entity
    that names a just-written id through (proxy: causal consistency across entities).
    """
    if spec.to_document is None:
        raise DataError(f"entity {spec.name!r} has no to_document mapping: it cannot be reversed")
    result = ReverseResult(spec.name)
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _lock_key(spec.name))
        try:
            while True:
                read_at = time.time()  # before the read: what committed earlier is seen
                async with conn.transaction():
                    await enter_sync(conn)
                    pending = await conn.fetch(
                        "SELECT id, legacy_id, operation, payload FROM migration_outbox "
                        "WHERE applied_at IS NULL AND origin = 'new' AND entity = $1 "
                        "ORDER BY id LIMIT $2",
                        spec.name,
                        batch,
                    )
                if not pending:
                    await publish_watermark_or_warn(watermarks, spec.name, "reverse", read_at, log)
                    break
                for outbox in pending:
                    async with conn.transaction():
                        await enter_sync(conn)
                        failure: str | None = None
                        try:
                            await _apply_one(conn, db, spec, context, outbox)
                        except Exception as exc:  # recorded on the row; the run stops here
                            failure = f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_LIMIT]
                        if failure is None:
                            await conn.execute(
                                "UPDATE migration_outbox SET applied_at = now(), "
                                "attempts = attempts + 1, last_error = NULL WHERE id = $1",
                                outbox["id"],
                            )
                    if failure is not None:
                        await _record_failure(conn, outbox["id"], failure)
                        log.warning("outbox %s (%s) failed: %s", outbox["id"], spec.name, failure)
                        result.failed += 1
                        result.errors.append(f"outbox {outbox['id']}: {failure}")
                        result.pending = await pending_count(conn, spec.name)
                        return result
                    result.applied += 1
                progress(f"{spec.name}: {result.applied} outbox row(s) applied")
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _lock_key(spec.name))
    return result


async def _record_failure(conn: asyncpg.Connection, outbox_id: int, error: str) -> None:
    async with conn.transaction():
        await enter_sync(conn)
        await conn.execute(
            "UPDATE migration_outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
            outbox_id,
            error,
        )
