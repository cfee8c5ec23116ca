"""The anti-entropy sweep: per-bucket checksums of MongoDB documents against PostgreSQL rows.

Writes that bypass the proxy (an admin script, a job editing the database, a
touched-ids entry lost with a Redis restart) leave no trace for the polling
feed. The sweep finds them by comparing the two stores:

1. every legacy id falls in one of ``buckets`` buckets: the first 32 bits of
   the MD5 of the legacy id, modulo ``buckets`` (:func:`bucket_of`); the same
   expression runs in SQL (:data:`BUCKET_SQL`) so PostgreSQL filters its side;
2. a round covers ``buckets_per_round`` consecutive buckets (wrapping around);
   for each, the digest of every document's canonical form on the MongoDB side
   (the rows the spec's mapping gives, or "quarantined") is XOR-combined into a
   bucket checksum, and likewise for the stored rows (or the open quarantine
   entry) on the PostgreSQL side;
3. only buckets whose checksums differ are narrowed down, id by id, and the
   ids that differ are handed to the feed, which reads them again like any
   touched id.

Staleness bound: a bypassing write is found within one full pass,
``ceil(buckets / buckets_per_round) * interval`` seconds (plus one round's
running time), where ``interval`` is the time between rounds. docs/sync.md
gives the figure at the 1y scale.

Canonical form: the mapped row's own columns only (bookkeeping columns
``source_version`` and ``synced_at`` left out), values rendered as JSON with
datetimes in UTC ISO form and bytes in hex; connector secrets compare as their
(deterministic, see migrators.crypto) ciphertexts.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
from bson import json_util

from migrators.backfill import legacy_id_filter, legacy_id_of
from migrators.origin import strip_origin
from migrators.spec import Document, EntitySpec, Mapped, MappingContext
from schema.tenancy import enter_sync
from strangler.jsonfast import JsonText
from strangler.mongo import Collection

__all__ = [
    "BUCKET_SQL",
    "SweepRound",
    "Sweeper",
    "bucket_of",
    "canonical_digest",
    "combine",
    "full_pass",
    "pass_seconds",
    "read_documents",
]

_READ_CHUNK = 500
# How migrators.backfill.legacy_id_of names a document that has no legacy id of its own.
STAND_IN_PREFIX = "_id:"
BOOKKEEPING_COLUMNS = frozenset({"source_version", "synced_at"})
QUARANTINED = "quarantined"
RENAMED = "$renamed"
ABSENT = b"\x00" * 16
# The same bucket function as bucket_of(), in SQL, over a text expression {0}.
BUCKET_SQL = "((('x' || substr(md5({0}), 1, 8))::bit(32)::bigint) % {1})"


def bucket_of(legacy_id: str, buckets: int) -> int:
    return int(hashlib.md5(legacy_id.encode()).hexdigest()[:8], 16) % buckets


def pass_seconds(buckets: int, buckets_per_round: int, interval: float) -> float:
    """How long a full pass over every bucket takes: the sweep's staleness bound."""
    rounds = -(-buckets // buckets_per_round)
    return rounds * interval


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, JsonText):  # a mapped diagram, stored as jsonb parsed from it
        return _plain(value.value())
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def canonical_digest(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> bytes:
    """A digest of rows as the spec's mapping gives them (or as stored, restricted alike)."""
    canonical = {
        table: sorted(
            json.dumps(
                {k: _plain(v) for k, v in row.items() if k not in BOOKKEEPING_COLUMNS},
                sort_keys=True,
                separators=(",", ":"),
            )
            for row in table_rows
        )
        for table, table_rows in rows.items()
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _quarantined_digest() -> bytes:
    return hashlib.blake2b(QUARANTINED.encode(), digest_size=16).digest()


def combine(digests: Iterable[tuple[str, bytes]]) -> bytes:
    """Order-independent checksum of (legacy id, digest) pairs."""
    acc = 0
    for legacy_id, digest in digests:
        acc ^= int.from_bytes(hashlib.blake2b(legacy_id.encode() + digest, digest_size=16).digest())
    return acc.to_bytes(16)


@dataclass
class SweepRound:
    buckets: list[int]
    compared: int = 0
    differing_buckets: list[int] = field(default_factory=list)
    differing_ids: list[str] = field(default_factory=list)


class Sweeper:
    """Compares one entity's documents and rows, a slice of buckets per round."""

    def __init__(
        self,
        spec: EntitySpec,
        collection: Collection,
        context: MappingContext,
        *,
        buckets: int = 64,
        buckets_per_round: int = 16,
        id_column: str,
        live_condition: str = "true",
    ) -> None:
        if not 0 < buckets_per_round <= buckets:
            raise ValueError("buckets_per_round must be between 1 and buckets")
        self._spec = spec
        self._collection = collection
        self._context = context
        self.buckets = buckets
        self.buckets_per_round = buckets_per_round
        self._id_column = id_column
        # SQL telling a row the sync wrote from a document apart from a tombstone left by
        # a document that disappeared (those count as absent, like the document).
        self._live_condition = live_condition

    def slice(self, next_bucket: int) -> list[int]:
        return [(next_bucket + i) % self.buckets for i in range(self.buckets_per_round)]

    def _mapped_row(self, document: Document) -> dict[str, Any] | None:
        """The first table's row the mapping gives; None when it quarantines the document."""
        try:
            mapped = self._spec.map_document(strip_origin(document), self._context)
        except Exception:  # the writer quarantines it (mapping_error): compare it as such
            return None
        if not isinstance(mapped, Mapped):
            return None
        rows = mapped.rows.get(self._spec.tables[0]) or ()
        return dict(rows[0]) if rows else None

    async def _mongo_side(self, wanted: set[int]) -> dict[str, dict[str, Any] | None]:
        # Ids first (small), then only the documents in this round's buckets. Legacy ids
        # are named as backfill names them (a stand-in from _id when a document has none).
        keys: list[Any] = []
        async for doc in self._collection.find({}, {self._spec.id_field: 1, "_id": 1}):
            if bucket_of(legacy_id_of(self._spec, doc), self.buckets) in wanted:
                keys.append(doc["_id"])
        rows: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            async for doc in self._collection.find({"_id": {"$in": chunk}}):
                rows[legacy_id_of(self._spec, doc)] = self._mapped_row(doc)
        return rows

    async def _postgres_side(
        self, conn: asyncpg.Connection, wanted: list[int]
    ) -> tuple[dict[str, dict[str, Any] | None], set[str]]:
        # Row-level security is forced even on the owner: read as strangler_sync.
        async with conn.transaction(readonly=True):
            await enter_sync(conn)
            return await self._postgres_rows(conn, wanted)

    async def _postgres_rows(
        self, conn: asyncpg.Connection, wanted: list[int]
    ) -> tuple[dict[str, dict[str, Any] | None], set[str]]:
        table = self._spec.tables[0]
        bucket = BUCKET_SQL.format(self._id_column, self.buckets)
        placeholder = f" AND NOT ({self._spec.placeholder})" if self._spec.placeholder else ""
        statement = await conn.prepare(
            f"SELECT * FROM {table} WHERE {bucket} = ANY($1::bigint[]) "
            f"AND ({self._live_condition}){placeholder}"
        )
        attributes = statement.get_attributes()
        json_columns = {a.name for a in attributes if a.type.name in ("json", "jsonb")}
        rows: dict[str, dict[str, Any] | None] = {}
        for record in await statement.fetch(wanted):
            row = {
                k: (json.loads(v) if k in json_columns and isinstance(v, str) else v)
                for k, v in record.items()
            }
            rows[str(row[self._id_column])] = self._as_mapped(row)
        quarantined = await conn.fetch(
            "SELECT legacy_id FROM migration_quarantine "
            "WHERE entity = $1 AND resolved_at IS NULL AND legacy_id IS NOT NULL",
            self._spec.name,
        )
        wanted_set = set(wanted)
        for record in quarantined:
            legacy_id = record["legacy_id"]
            if bucket_of(legacy_id, self.buckets) in wanted_set and legacy_id not in rows:
                rows[legacy_id] = None
        return rows, {a.name for a in attributes}

    def _as_mapped(self, row: dict[str, Any]) -> dict[str, Any]:
        """Undo what the writer adds on its own: a duplicate name it renamed compares as the
        name the mapping gave (kept in ``extra["$renamed"]``, see migrators.spec.UniqueName)."""
        extra = row.get("extra")
        if not isinstance(extra, dict) or RENAMED not in extra:
            return row
        renamed = extra[RENAMED] or {}
        restored = {**row, "extra": {k: v for k, v in extra.items() if k != RENAMED}}
        for unique in self._spec.unique_names:
            if unique.column in renamed:
                restored[unique.column] = renamed[unique.column]
        return restored

    def _digest(self, row: Mapping[str, Any] | None, columns: Sequence[str]) -> bytes:
        if row is None:
            return _quarantined_digest()
        return canonical_digest({"row": [{c: row.get(c) for c in columns}]})

    async def run_round(self, conn: asyncpg.Connection, next_bucket: int) -> SweepRound:
        wanted = self.slice(next_bucket)
        result = SweepRound(buckets=wanted)
        mongo_rows = await self._mongo_side(set(wanted))
        postgres_rows, stored_columns = await self._postgres_side(conn, wanted)
        result.compared = len(mongo_rows)
        # Compare what the mapping produces and the table stores: columns the writer or the
        # new side fill on their own (deleted_at, updated_by, ...) are not the mapping's.
        produced = set().union(*(row.keys() for row in mongo_rows.values() if row is not None))
        # A history row's tenant is its parent's, found by the writer (TenantFrom): not
        # the mapping's, which may not know it.
        derived = {"subscription_id"} if self._spec.tenant_from is not None else set()
        columns = sorted((produced & stored_columns) - BOOKKEEPING_COLUMNS - derived)
        mongo = {k: self._digest(v, columns) for k, v in mongo_rows.items()}
        postgres = {k: self._digest(v, columns) for k, v in postgres_rows.items()}
        by_bucket: dict[int, tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]] = {
            b: ([], []) for b in wanted
        }
        for legacy_id, digest in mongo.items():
            by_bucket[bucket_of(legacy_id, self.buckets)][0].append((legacy_id, digest))
        for legacy_id, digest in postgres.items():
            by_bucket[bucket_of(legacy_id, self.buckets)][1].append((legacy_id, digest))
        for bucket, (left, right) in by_bucket.items():
            if combine(left) == combine(right):
                continue
            result.differing_buckets.append(bucket)
            left_map, right_map = dict(left), dict(right)
            for legacy_id in sorted(set(left_map) | set(right_map)):
                if left_map.get(legacy_id, ABSENT) != right_map.get(legacy_id, ABSENT):
                    result.differing_ids.append(legacy_id)
        return result


async def read_documents(
    spec: EntitySpec, collection: Collection, ids: Sequence[str]
) -> dict[str, Document]:
    """The documents of ``ids`` (legacy ids as backfill names them) that still exist: what
    a feed reads again for the ids the sweep (or a touched-ids entry) named."""
    found: dict[str, Document] = {}
    stand_ins = [i for i in ids if i.startswith(STAND_IN_PREFIX)]
    named = [i for i in ids if not i.startswith(STAND_IN_PREFIX)]
    queries = [legacy_id_filter(spec, named[s : s + _READ_CHUNK])
               for s in range(0, len(named), _READ_CHUNK)]  # fmt: skip
    if stand_ins:  # documents without a usable legacy id, found by their _id
        keys = [json_util.loads(i[len(STAND_IN_PREFIX) :]) for i in stand_ins]
        queries.append({"_id": {"$in": keys}})
    for query in queries:
        async for document in collection.find(query):
            found[legacy_id_of(spec, document)] = document
    return found


async def full_pass(sweeper: Sweeper, conn: asyncpg.Connection) -> tuple[int, list[str]]:
    """Every bucket compared once: (documents compared, the ids that differ)."""
    compared, differing = 0, []
    for start in range(0, sweeper.buckets, sweeper.buckets_per_round):
        result = await sweeper.run_round(conn, start)
        compared += result.compared
        differing.extend(result.differing_ids)
    return compared, list(dict.fromkeys(differing))
