"""The one writer of migrated rows: backfill, the forward sync and verify --repair use it.

``write_batch`` applies a batch of legacy documents (or deletions) of one entity
in ONE transaction, as ``strangler_sync`` (row-level security bypassed
explicitly, docs/schema.md):

1. map each document with the spec's pure mapping (in Python, before the
   transaction); a document that cannot be mapped is quarantined with its reason;
2. COPY the rows into a per-connection staging table (``copy_records_to_table``);
3. drop staged rows that are stale: the stored row (or a tombstone of a
   deletion) already has the same or a higher ``source_version``;
4. quarantine staged rows whose required reference is missing (a user of an
   unknown subscription cannot satisfy its foreign key); a history document takes
   its tenant from its parent (:class:`migrators.spec.TenantFrom`) before staging;
5. resolve clashes on the spec's unique names (:class:`migrators.spec.UniqueName`);
6. ``INSERT ... SELECT ... ON CONFLICT (id) DO UPDATE ... WHERE`` the stored
   version is older AND the content differs: a stale, repeated or no-op apply
   writes nothing, so a second backfill reports 0 written;
7. deletions: delete the rows (version-guarded) and record a tombstone;
8. report dangling references as notes, resolve open quarantine entries of the
   documents that now applied, and save the feed position or checkpoint, all
   inside the same transaction.

The version rule (docs/migrators.md): ``SourceItem.version`` is an integer
that only grows for a given document, milliseconds since the epoch of the
moment the document was observed (a change event's time, or the instant a
backfill or sweep batch started reading). A row is only ever replaced by a
strictly higher version.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from migrators.origin import strip_origin
from migrators.spec import (
    Document,
    EntitySpec,
    Mapped,
    MappingContext,
    Note,
    Quarantined,
    Row,
    TenantFrom,
)
from migrators.staging import StagedTable, stage_rows
from migrators.tree_apply import apply_children, children_of, delete_children
from schema.partitions import (
    MONTHLY_PARTITIONED,
    PARTITION_COLUMN,
    Month,
    ensure_months,
    retention_horizon,
)
from schema.tenancy import enter_sync
from strangler.errors import PermanentError, ServiceUnavailable

__all__ = [
    "BatchRejected",
    "BatchResult",
    "FeedPosition",
    "Position",
    "PreparedBatch",
    "SourceItem",
    "prepare_batch",
    "quarantined_document",
    "write_batch",
]


class BatchRejected(PermanentError):
    """PostgreSQL refused the batch as a whole (nothing of it was kept)."""


@dataclass(frozen=True)
class SourceItem:
    """One legacy document as observed, or its deletion (``document is None``)."""

    legacy_id: str
    document: Document | None
    version: int


@dataclass
class BatchResult:
    read: int = 0
    written: int = 0  # rows inserted or changed
    unchanged: int = 0  # documents whose rows were already current, or newer (stale apply)
    deleted: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    # (legacy id, reason, redacted document) of the batch's quarantined documents
    quarantine_examples: list[tuple[str, str, Document]] = field(default_factory=list)
    notes: list[tuple[str, Note]] = field(default_factory=list)

    def merge(self, other: BatchResult) -> None:
        self.read += other.read
        self.written += other.written
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        self.quarantined.update(other.quarantined)
        self.quarantine_examples.extend(other.quarantine_examples)
        self.notes.extend(other.notes)


class Position(Protocol):
    """Where a reader is; saved in the same transaction as the rows of its batch."""

    async def save(self, conn: asyncpg.Connection, result: BatchResult) -> None: ...


@dataclass(frozen=True)
class FeedPosition:
    """A sync feed's position (resume token, cursor), as JSON."""

    entity: str
    feed: str
    position: Any

    async def save(self, conn: asyncpg.Connection, result: BatchResult) -> None:
        await conn.execute(
            """INSERT INTO migration_feed_positions (entity, feed, position, updated_at)
               VALUES ($1, $2, $3::jsonb, now())
               ON CONFLICT (entity, feed)
               DO UPDATE SET position = EXCLUDED.position, updated_at = now()""",
            self.entity,
            self.feed,
            json.dumps(self.position),
        )


@dataclass
class PreparedBatch:
    """A batch mapped and ready to apply (:func:`prepare_batch`); only read by the apply,
    so a retried apply uses it again."""

    rows: dict[str, list[tuple[int, Row]]]
    quarantine: list[tuple[str, str, str, Document]]  # legacy id, reason, detail, document
    deletions: list[tuple[str, int]]
    notes: list[tuple[str, Note]]
    documents: dict[str, Document]


def prepare_batch(
    spec: EntitySpec, items: Sequence[SourceItem], ctx: MappingContext
) -> PreparedBatch:
    """Step 1 of :func:`write_batch`, pure: the batch mapped, no I/O."""
    steps = preparing(spec, items, ctx)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            prepared: PreparedBatch = done.value
            return prepared


def preparing(
    spec: EntitySpec, items: Sequence[SourceItem], ctx: MappingContext
) -> Generator[None, None, PreparedBatch]:
    """:func:`prepare_batch` one document at a time: it yields after each mapped document,
    so that a caller on an event loop can let other work (a batch being applied) go on."""
    latest: dict[str, SourceItem] = {}
    prepared = PreparedBatch({table: [] for table in spec.tables}, [], [], [], {})
    for item in items:  # one row can change once per statement: keep each id's newest
        seen = latest.get(item.legacy_id)
        if seen is not None and seen.version == item.version and seen.document != item.document:
            # two documents observed at once under one legacy id: a duplicate in MongoDB
            note = Note("duplicate_legacy_id", "another document has the same legacy id")
            prepared.notes.append((item.legacy_id, note))
        if seen is None or item.version >= seen.version:
            latest[item.legacy_id] = item
    for item in latest.values():
        if item.document is None:
            prepared.deletions.append((item.legacy_id, item.version))
            continue
        prepared.documents[item.legacy_id] = item.document
        try:
            outcome = spec.map_document(strip_origin(item.document), ctx)
        except Exception as exc:  # a mapping bug must not stop the batch: quarantine it
            outcome = Quarantined("mapping_error", f"{type(exc).__name__}: {exc}")
        if isinstance(outcome, Quarantined):
            prepared.quarantine.append(
                (item.legacy_id, outcome.reason, outcome.detail, item.document)
            )
            yield
            continue
        assert isinstance(outcome, Mapped)
        for table, rows in outcome.rows.items():
            prepared.rows[table].extend((item.version, row) for row in rows)
        prepared.notes.extend((item.legacy_id, note) for note in outcome.notes)
        yield
    return prepared


# A quarantined document whose text holds a NUL (which jsonb cannot store) is kept as
# that text, in a JSON string under this key: exactly the original, escapes and all.
NUL_TEXT = "$text_with_nul"
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _storable(spec: EntitySpec, document: Document, ctx: MappingContext) -> str:
    """The original as the quarantine keeps it: secrets sealed, relaxed Extended JSON."""
    kept = spec.seal_document(document, ctx) if spec.seal_document else document
    text = json_util.dumps(kept, json_options=RELAXED_JSON_OPTIONS)
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        return json.dumps({NUL_TEXT: text})
    return text


def quarantined_document(stored: Any) -> Document:
    """A quarantine entry's ``document`` column as the original's relaxed Extended JSON."""
    value = json.loads(stored) if isinstance(stored, str) else stored
    if isinstance(value, dict) and set(value) == {NUL_TEXT}:
        value = json.loads(value[NUL_TEXT])
    return value if isinstance(value, dict) else {}


def _shown(spec: EntitySpec, document: Document) -> Document:
    return spec.redact(document) if spec.redact else document


async def _quarantine(
    conn: asyncpg.Connection,
    spec: EntitySpec,
    entries: Sequence[tuple[str, str, str, Document]],
    ctx: MappingContext,
    source: str,
    result: BatchResult,
) -> None:
    if not entries:
        return
    await conn.executemany(
        """INSERT INTO migration_quarantine (entity, legacy_id, reason, document, source)
           VALUES ($1, $2, $3, $4::jsonb, $5)
           ON CONFLICT (entity, legacy_id) WHERE resolved_at IS NULL AND legacy_id IS NOT NULL
           DO UPDATE SET reason = EXCLUDED.reason, document = EXCLUDED.document,
                         source = EXCLUDED.source, quarantined_at = now()
           WHERE migration_quarantine.reason IS DISTINCT FROM EXCLUDED.reason
              OR migration_quarantine.document IS DISTINCT FROM EXCLUDED.document""",
        [
            (
                spec.name,
                legacy_id,
                f"{reason}: {detail}" if detail else reason,
                _storable(spec, document, ctx),
                source,
            )
            for legacy_id, reason, detail, document in entries
        ],
    )
    for legacy_id, reason, _detail, document in entries:
        result.quarantined[reason] += 1
        result.quarantine_examples.append((legacy_id, reason, _shown(spec, document)))


async def _delete(
    conn: asyncpg.Connection, spec: EntitySpec, deletions: Sequence[tuple[str, int]]
) -> int:
    if not deletions:
        return 0
    ids = [legacy_id for legacy_id, _ in deletions]
    versions = [version for _, version in deletions]
    await conn.execute(
        """INSERT INTO migration_tombstones AS t (entity, legacy_id, source_version)
           SELECT $1, i, v FROM unnest($2::text[], $3::bigint[]) AS d (i, v)
           ON CONFLICT (entity, legacy_id) DO UPDATE
           SET source_version = EXCLUDED.source_version, deleted_at = now()
           WHERE t.source_version < EXCLUDED.source_version""",
        spec.name,
        ids,
        versions,
    )
    await conn.execute(
        """UPDATE migration_quarantine SET resolved_at = now(), resolution = 'deleted in MongoDB'
           WHERE entity = $1 AND legacy_id = ANY($2::text[]) AND resolved_at IS NULL""",
        spec.name,
        ids,
    )
    table, column = spec.tables[0], spec.legacy_id_column
    status = await conn.execute(
        f"""DELETE FROM {table} AS t USING unnest($1::text[], $2::bigint[]) AS d (i, v)
            WHERE t.{column} = d.i AND (t.source_version IS NULL OR t.source_version < d.v)""",
        ids,
        versions,
    )
    return int(status.split()[-1])


async def write_batch(
    conn: asyncpg.Connection,
    spec: EntitySpec,
    items: Sequence[SourceItem],
    *,
    ctx: MappingContext,
    position: Position | None = None,
    source: str = "backfill",
    prepared: PreparedBatch | None = None,
) -> BatchResult:
    """Apply ``items`` of ``spec`` in one transaction; see the module docstring.

    ``prepared`` is ``prepare_batch(spec, items, ctx)`` when the caller mapped the batch
    already (the backfill maps the next batch while PostgreSQL applies this one)."""
    if prepared is None:
        prepared = prepare_batch(spec, items, ctx)
    result = BatchResult(read=len(items))
    try:
        for table in spec.tables:
            if table in MONTHLY_PARTITIONED and prepared.rows[table]:
                await _ensure_months(conn, table, prepared.rows[table])
        async with conn.transaction():
            await enter_sync(conn)
            applied: set[str] = set()
            children = children_of(spec)  # multi-table entities: migrators.tree_apply
            rows_of, orphans = prepared.rows, list[tuple[str, str, str, Document]]()
            if spec.tenant_from is not None:
                rows_of, orphans = await _derive_tenants(conn, spec, spec.tenant_from, prepared)
            for index, table in enumerate(spec.tables):
                rows = rows_of[table]
                if not rows or (index > 0 and children):
                    continue
                staged = await stage_rows(conn, table, rows)
                if index == 0:
                    await _apply_primary(conn, spec, staged, prepared, ctx, source, result)
                    applied = staged.applied_ids
                else:
                    result.written += await staged.upsert(conn, guard_column=None)
            await _quarantine(conn, spec, [*prepared.quarantine, *orphans], ctx, source, result)
            result.deleted = await _delete(conn, spec, prepared.deletions)
            result.unchanged += len(prepared.deletions) - result.deleted
            result.notes.extend(prepared.notes)
            if children:
                written, notes = await apply_children(conn, spec, prepared.rows, applied)
                result.written += written
                result.notes.extend(notes)
                await delete_children(conn, spec, [i for i, _ in prepared.deletions])
            await _resolve_quarantine(conn, spec, applied)
            if position is not None:
                await position.save(conn, result)
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        raise ServiceUnavailable("DATABASE_URL", "PostgreSQL", str(exc)) from exc
    except asyncpg.PostgresError as exc:
        raise BatchRejected(
            f"PostgreSQL rejected a batch of {len(items)} {spec.name} document(s), nothing "
            f"of it was kept: {type(exc).__name__}: {exc}"
        ) from exc
    return result


# Months a batch may create a partition for; a date outside (dirt: year 9999, epoch
# seconds read as milliseconds) goes to the default partition instead of a month of its own.
EARLIEST_MONTH = Month(1990, 1)
MONTHS_AHEAD_ON_DEMAND = 12


async def _ensure_months(
    conn: asyncpg.Connection, table: str, rows: Sequence[tuple[int, Row]]
) -> None:
    """The partitions of the months the batch's rows fall in, created before its
    transaction (their creation locks the whole table, briefly; schema.partitions)."""
    latest = Month.of(datetime.now(UTC)).shifted(MONTHS_AHEAD_ON_DEMAND)
    months = {Month.of(row[PARTITION_COLUMN]) for _, row in rows if row.get(PARTITION_COLUMN)}
    wanted = [m for m in months if EARLIEST_MONTH <= m <= latest]
    horizon = await retention_horizon(conn, table) if wanted else None
    if horizon is not None:  # months retention dropped are not made again
        wanted = [m for m in wanted if m.end > horizon]
    try:
        await ensure_months(conn, table, wanted)
    except asyncpg.LockNotAvailableError:
        pass  # busy: the rows go to the default partition; `schema partitions --from-default`


async def _derive_tenants(
    conn: asyncpg.Connection, spec: EntitySpec, rule: TenantFrom, prepared: PreparedBatch
) -> tuple[dict[str, list[tuple[int, Row]]], list[tuple[str, str, str, Document]]]:
    """The batch's rows with each one's tenant taken from its parent (see
    :class:`migrators.spec.TenantFrom`), and the documents no tenant could be found for.

    New row dicts: the prepared batch is read again when an apply is retried."""
    table = spec.tables[0]
    parents = sorted(
        {row[rule.column] for _, row in prepared.rows[table] if isinstance(row[rule.column], str)}
    )
    tenants: dict[str, str] = {}
    if parents:
        for record in await conn.fetch(
            f"""SELECT {rule.target_column} AS parent, subscription_id FROM {rule.table}
                WHERE {rule.target_column} = ANY($1::text[])""",
            parents,
        ):
            tenants[record["parent"]] = record["subscription_id"]
        unknown = [p for p in parents if p not in tenants]
        if unknown:  # the parent's own document is quarantined: it still names its tenant
            for record in await conn.fetch(
                """SELECT legacy_id, document FROM migration_quarantine
                   WHERE entity = $1 AND legacy_id = ANY($2::text[]) AND resolved_at IS NULL""",
                rule.entity,
                unknown,
            ):
                tenant = quarantined_document(record["document"]).get("subscription_id")
                if isinstance(tenant, str) and tenant.strip():
                    tenants[record["legacy_id"]] = tenant
    kept: list[tuple[int, Row]] = []
    orphans: list[tuple[str, str, str, Document]] = []
    for version, row in prepared.rows[table]:
        tenant = tenants.get(row[rule.column]) or row.get("subscription_id")
        if tenant is None:
            legacy_id = row[spec.legacy_id_column]
            detail = (
                f"{rule.column} {row[rule.column]!r} matches no {rule.table} row or document, "
                "and the document names no subscription_id"
            )
            orphans.append((legacy_id, rule.kind, detail, prepared.documents[legacy_id]))
            continue
        kept.append((version, {**row, "subscription_id": tenant}))
    return {**prepared.rows, table: kept}, orphans


async def _apply_primary(
    conn: asyncpg.Connection,
    spec: EntitySpec,
    staged: StagedTable,
    prepared: PreparedBatch,
    ctx: MappingContext,
    source: str,
    result: BatchResult,
) -> None:
    legacy = spec.legacy_id_column
    total = staged.count
    await staged.drop_stale(conn, spec.name, legacy)
    await staged.drop_retired(conn)  # counted as unchanged: kept no longer, on purpose
    missing: list[tuple[str, str, str, Document]] = []
    for ref in (r for r in spec.references if r.required):
        for legacy_id, value in await staged.drop_unreferenced(conn, legacy, ref):
            detail = f"{ref.column} {value!r} matches no {ref.table} row"
            missing.append((legacy_id, ref.kind, detail, prepared.documents[legacy_id]))
    await _quarantine(conn, spec, missing, ctx, source, result)
    for unique in spec.unique_names:
        for legacy_id, value in await staged.resolve_unique(conn, legacy, unique):
            note = Note("renamed_duplicate", f"{unique.column} {value!r} is taken by an older row")
            result.notes.append((legacy_id, note))
    staged.applied_ids = await staged.current_ids(conn, legacy)
    result.written += await staged.upsert(conn, guard_column="source_version")
    result.unchanged += total - len(missing) - result.written
    for ref in (r for r in spec.references if not r.required):
        for legacy_id, value in await staged.dangling(conn, legacy, ref):
            detail = f"{ref.column} {value!r} matches no {ref.table} row; row kept"
            result.notes.append((legacy_id, Note(ref.kind, detail)))


async def _resolve_quarantine(conn: asyncpg.Connection, spec: EntitySpec, ids: set[str]) -> None:
    if not ids:
        return
    await conn.execute(
        """UPDATE migration_quarantine SET resolved_at = now(), resolution = 'applied'
           WHERE entity = $1 AND legacy_id = ANY($2::text[]) AND resolved_at IS NULL""",
        spec.name,
        sorted(ids),
    )


def jsonable(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping as plain JSON values (for notes and reports)."""
    plain: dict[str, Any] = json.loads(json_util.dumps(mapping, json_options=RELAXED_JSON_OPTIONS))
    return plain
