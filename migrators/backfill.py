"""Backfill: stream a legacy collection into PostgreSQL in batches, resumable.

Reading order. A range scan over ``_id`` (``{_id: {$gt: last}}``) only matches
ids of the last id's BSON type (MongoDB's comparison operators are
type-bracketed), so a collection holding ObjectIds, strings and numbers would
silently lose all but one kind. The backfill therefore reads one BSON type at
a time, in :data:`ID_TYPES` order, each as a sorted range scan on the ``_id``
index: ``{_id: {$type: T, $gt: last}}`` sorted by ``_id``, ``batch_size`` at a
time (one cursor per type, consumed in batches). The checkpoint is
``(type index, last _id)``; it is written in the same
transaction as the batch's rows, so a kill at any instant resumes exactly after
the last committed batch, and nothing is read twice or skipped. Documents whose
``_id`` is of a type outside the list are counted and reported as not read.

A finished backfill run again starts a new pass: documents are re-read and,
through the writer's version guard and content comparison, nothing changes
(the summary shows 0 written).

Overlap. Mapping a batch is Python work and applying one is mostly
PostgreSQL's: while a batch is applied (a task on the same connection), the next
one is read and mapped, a few documents at a time between the apply's round
trips (:func:`migrators.writer.preparing`), so both cores work. Batches are
still applied one at a time, in order, each with its checkpoint, so the resume
rule above is unchanged: a batch is only started once the one before it has
committed and been reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from bson import ObjectId, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from migrators.feeds import observation_version
from migrators.spec import Document, EntitySpec, MappingContext
from migrators.writer import (
    BatchRejected,
    BatchResult,
    PreparedBatch,
    SourceItem,
    preparing,
    write_batch,
)
from schema.tenancy import enter_sync
from strangler.errors import DataError
from strangler.mongo import Database

__all__ = [
    "ID_TYPES",
    "BackfillBusy",
    "BackfillPosition",
    "BackfillSummary",
    "backfill_entity",
    "legacy_id_filter",
    "legacy_id_match",
    "legacy_id_of",
    "read_version",
]

# BSON types an _id can have, in MongoDB's sort order ("number" covers int, long,
# double and decimal, which compare with each other).
ID_TYPES: tuple[str, ...] = (
    "number",
    "string",
    "object",
    "binData",
    "objectId",
    "bool",
    "date",
)
DEFAULT_BATCH_SIZE = 1000
_LOCK = "strangler backfill:"


class BackfillBusy(DataError):
    """Another backfill of the same entity holds its lock."""


Progress = Callable[[str], object]


def read_version() -> int:
    """The source version of documents read now: on the sync's scale (``seconds << 32``
    plus sub-second ordinal), so backfill, the sync and ``verify --repair`` compare alike."""
    return observation_version(time.time())


def legacy_id_of(spec: EntitySpec, document: Document) -> str:
    """The document's legacy id, or, when it has none, a stable stand-in from its ``_id``
    (so that its quarantine entry is found again by the next run).

    Collections whose documents have no id of their own (``id_field == "_id"``, e.g.
    ``workflow_versions``) are keyed by the ObjectId's hex string, the form change events
    and the sweep give it too (``str(_id)``)."""
    value = document.get(spec.id_field)
    if isinstance(value, str) and value.strip():
        return value
    if spec.id_field == "_id" and isinstance(value, ObjectId):
        return str(value)
    return "_id:" + json_util.dumps(document.get("_id"), json_options=CANONICAL_JSON_OPTIONS)


def legacy_id_match(spec: EntitySpec, legacy_id: str) -> dict[str, Any]:
    """The equality filter of one document by its legacy id (an upsert takes ``_id`` from it)."""
    if spec.id_field == "_id" and ObjectId.is_valid(legacy_id):
        return {"_id": ObjectId(legacy_id)}
    return {spec.id_field: legacy_id}


def legacy_id_filter(spec: EntitySpec, legacy_ids: list[str]) -> dict[str, Any]:
    """The query that finds documents by the legacy ids :func:`legacy_id_of` gave them."""
    if spec.id_field != "_id":
        return {spec.id_field: {"$in": legacy_ids}}
    keys: list[Any] = [ObjectId(i) if ObjectId.is_valid(i) else i for i in legacy_ids]
    return {"_id": {"$in": keys}}


@dataclass(frozen=True)
class BackfillPosition:
    """Where the backfill of one entity is: the BSON type being read and the last ``_id``."""

    entity: str
    type_index: int
    after: Any  # the last _id read (None: the type's first batch is next)

    def to_json(self) -> str:
        after = None if self.after is None else json_util.dumps(
            self.after, json_options=CANONICAL_JSON_OPTIONS
        )  # fmt: skip
        return json.dumps({"type": ID_TYPES[self.type_index], "after": after})

    @classmethod
    def from_json(cls, entity: str, text: str | None) -> BackfillPosition:
        if not text:
            return cls(entity, 0, None)
        raw = json.loads(text)
        after = None if raw.get("after") is None else json_util.loads(raw["after"])
        return cls(entity, ID_TYPES.index(raw["type"]), after)

    async def save(self, conn: asyncpg.Connection, result: BatchResult) -> None:
        await conn.execute(
            """UPDATE migration_backfill_checkpoints
               SET position = $2::jsonb, rows_written = rows_written + $3,
                   rows_quarantined = rows_quarantined + $4, updated_at = now()
               WHERE entity = $1""",
            self.entity,
            self.to_json(),
            result.written,
            sum(result.quarantined.values()),
        )


@dataclass
class BackfillSummary:
    entity: str
    collection: str
    total: int = 0  # documents in the collection when the run started
    result: BatchResult = field(default_factory=BatchResult)
    batches: int = 0
    seconds: float = 0.0
    resumed: bool = False
    not_read: int = 0  # documents whose _id type no pass reads
    read_seconds: float = 0.0  # waiting for the legacy store
    # waiting for PostgreSQL: a batch mapped, the previous one still being applied
    apply_wait_seconds: float = 0.0
    # the rest: mapping, sealing and writing (write_batch); the writing of one batch
    # overlaps the reading and mapping of the next
    write_seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.result.read / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        r = self.result
        head = (
            f"{self.entity} ({self.collection}){' resumed' if self.resumed else ''}: "
            f"read {r.read:,}, written {r.written:,}, unchanged {r.unchanged:,}, "
            f"quarantined {sum(r.quarantined.values()):,} in {self.seconds:.2f} s "
            f"({self.rows_per_second:,.0f} documents/s, {self.batches} batches)"
        )
        lines = [head]
        for reason, count in sorted(r.quarantined.items()):
            lines.append(f"  quarantined {reason}: {count:,}")
        for kind, count in sorted(Counter(note.kind for _, note in r.notes).items()):
            lines.append(f"  reported {kind}: {count:,}")
        if self.not_read:
            lines.append(
                f"  NOT READ: {self.not_read:,} document(s) with an _id of a type outside "
                f"{', '.join(ID_TYPES)}"
            )
        return lines


# A concurrent writer (the sync worker) can make a batch fail in ways that pass when
# tried again: deadlock, serialization failure, a unique name taken meanwhile.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "23505"})
_ATTEMPTS = 5


async def _write_with_retries(
    conn: asyncpg.Connection,
    spec: EntitySpec,
    items: list[SourceItem],
    ctx: MappingContext,
    checkpoint: BackfillPosition,
    prepared: PreparedBatch,
) -> BatchResult:
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return await write_batch(
                conn, spec, items, ctx=ctx, position=checkpoint, prepared=prepared
            )
        except BatchRejected as exc:
            state = getattr(exc.__cause__, "sqlstate", None)
            if state not in _TRANSIENT_SQLSTATES or attempt == _ATTEMPTS:
                raise
            # same versions: the documents are still what was observed at that instant,
            # so a change the sync applies meanwhile (a higher version) keeps winning
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


async def _start(conn: asyncpg.Connection, entity: str) -> tuple[BackfillPosition, bool]:
    """The position to start from; a new pass when none is open."""
    async with conn.transaction():
        await enter_sync(conn)
        row = await conn.fetchrow(
            "SELECT position::text AS position, completed_at FROM "
            "migration_backfill_checkpoints WHERE entity = $1 FOR UPDATE",
            entity,
        )
        if row is not None and row["completed_at"] is None:
            return BackfillPosition.from_json(entity, row["position"]), True
        await conn.execute(
            """INSERT INTO migration_backfill_checkpoints (entity, position) VALUES ($1, NULL)
               ON CONFLICT (entity) DO UPDATE SET position = NULL, rows_written = 0,
                   rows_quarantined = 0, started_at = now(), updated_at = now(),
                   completed_at = NULL""",
            entity,
        )
        return BackfillPosition(entity, 0, None), False


async def _finish(conn: asyncpg.Connection, entity: str) -> None:
    async with conn.transaction():
        await enter_sync(conn)
        await conn.execute(
            "UPDATE migration_backfill_checkpoints SET completed_at = now(), updated_at = now() "
            "WHERE entity = $1",
            entity,
        )


async def backfill_entity(
    db: Database,
    conn: asyncpg.Connection,
    spec: EntitySpec,
    ctx: MappingContext,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    clock: Callable[[], int] = read_version,
) -> BackfillSummary:
    """Backfill one entity, from its checkpoint if a run was interrupted."""
    started = time.perf_counter()
    lock = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", _LOCK + spec.name)
    if not lock:
        raise BackfillBusy(
            f"another backfill of {spec.name} is running on this database; wait for it to "
            "finish (or stop it: the next run resumes from its checkpoint)"
        )
    try:
        return await _backfill(db, conn, spec, ctx, batch_size, progress, clock, started)
    finally:
        # a connection left mid-statement (a cancelled run) drops its session lock itself
        with contextlib.suppress(asyncpg.InterfaceError, asyncpg.PostgresError, OSError):
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", _LOCK + spec.name)


# How long mapping runs before it lets a batch being applied take its next step.
_SLICE_SECONDS = 0.001
_READ_SLICE = 32  # documents read between two such chances


async def _prepare(spec: EntitySpec, ctx: MappingContext, items: list[SourceItem]) -> PreparedBatch:
    """The batch mapped, pausing every ~millisecond for the batch being applied."""
    steps = preparing(spec, items, ctx)
    paused = time.perf_counter()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            prepared: PreparedBatch = done.value
            return prepared
        if time.perf_counter() - paused > _SLICE_SECONDS:
            await asyncio.sleep(0)
            paused = time.perf_counter()


@dataclass
class _Applying:
    """A batch being written (a task on the connection), with what reports it."""

    items: list[SourceItem]
    task: asyncio.Task[BatchResult]


async def _finish_batch(
    spec: EntitySpec,
    summary: BackfillSummary,
    applying: _Applying,
    seen: int,
    progress: Progress | None,
    started: float,
) -> int:
    """Wait for the batch to commit, then count and report it; returns documents seen."""
    waiting = time.perf_counter()
    result = await applying.task
    summary.apply_wait_seconds += time.perf_counter() - waiting
    summary.result.merge(result)
    summary.batches += 1
    seen += len(applying.items)
    if progress is not None:
        elapsed = time.perf_counter() - started
        progress(
            f"{spec.name}: {seen:,}/{summary.total:,} documents, "
            f"{summary.result.written:,} rows written, "
            f"{sum(summary.result.quarantined.values()):,} quarantined "
            f"({seen / elapsed if elapsed else 0:,.0f}/s)"
        )
    return seen


async def _backfill(
    db: Database,
    conn: asyncpg.Connection,
    spec: EntitySpec,
    ctx: MappingContext,
    batch_size: int,
    progress: Progress | None,
    clock: Callable[[], int],
    started: float,
) -> BackfillSummary:
    collection = db[spec.collection]
    position, resumed = await _start(conn, spec.name)
    summary = BackfillSummary(spec.name, spec.collection, resumed=resumed)
    summary.total = await collection.count_documents({})
    seen = 0
    applying: _Applying | None = None  # the batch being written meanwhile

    async def hand_over(documents: list[Document], type_index: int, version: int) -> int:
        """Map the batch (while the previous one is written), then start writing it."""
        nonlocal applying
        items = [SourceItem(legacy_id_of(spec, d), d, version) for d in documents]
        prepared = await _prepare(spec, ctx, items)
        done = seen
        if applying is not None:
            done = await _finish_batch(spec, summary, applying, seen, progress, started)
        checkpoint = BackfillPosition(spec.name, type_index, documents[-1]["_id"])
        write = _write_with_retries(conn, spec, items, ctx, checkpoint, prepared)
        applying = _Applying(items, asyncio.create_task(write))
        return done

    try:
        for type_index in range(position.type_index, len(ID_TYPES)):
            after = position.after if type_index == position.type_index else None
            condition: dict[str, Any] = {"$type": ID_TYPES[type_index]}
            if after is not None:
                condition["$gt"] = after
            # One sorted cursor per type, consumed batch by batch (one query, not one per
            # batch: a store that sorts per query would read quadratically). Its version is
            # taken before it opens, so it is never newer than any document it returns: a
            # change the sync applied meanwhile at a higher version is never overwritten.
            version = clock()
            cursor = collection.find({"_id": condition}).sort("_id", 1).batch_size(batch_size)
            documents: list[Document] = []
            reading = time.perf_counter()
            async for document in cursor:
                documents.append(document)
                if len(documents) % _READ_SLICE == 0 and applying is not None:
                    await asyncio.sleep(0)  # the batch being written takes its next step
                if len(documents) < batch_size:
                    continue
                summary.read_seconds += time.perf_counter() - reading
                seen = await hand_over(documents, type_index, version)
                documents = []
                reading = time.perf_counter()
            summary.read_seconds += time.perf_counter() - reading
            if documents:
                seen = await hand_over(documents, type_index, version)
        if applying is not None:
            seen = await _finish_batch(spec, summary, applying, seen, progress, started)
            applying = None
    finally:
        if applying is not None:
            # stopped while a batch was being written: it commits whole or not at all,
            # and the connection must be free before the lock is let go
            applying.task.cancel()
            with contextlib.suppress(BaseException):
                await applying.task
    await _finish(conn, spec.name)
    if not resumed:
        summary.not_read = max(0, summary.total - seen)
    summary.seconds = time.perf_counter() - started
    summary.write_seconds = max(0.0, summary.seconds - summary.read_seconds)
    return summary
