"""Verify: compare an entity's MongoDB documents with its PostgreSQL rows, exactly.

Both sides are brought to ONE form, the legacy document in normalized form:
MongoDB documents through the spec's ``normalize``, PostgreSQL rows through its
``to_document`` (which opens the connector secrets, so a changed password is a
difference too). Each document's form is hashed (SHA-256 of canonical Extended
JSON) and keyed by its legacy id. Only the hashes are kept: MongoDB's documents are
hashed as they are read, PostgreSQL's rows are read back 1,000 documents at a time;
the two forms of an id whose hashes differ are read again to say which fields differ.

Then, as at scale: counts first; then per bucket (the first bytes of the
SHA-256 of the legacy id, ``buckets`` of them) a checksum over the bucket's
(id, hash) pairs; only the buckets whose checksums differ are narrowed down to
ids, and only those ids are compared field by field. Output is redacted through
the spec (secrets and password hashes never shown).

Skipped, and counted as such: documents whose ``updated_at``/``created_at`` is
younger than ``min_age`` seconds, and rows synced less than ``min_age`` seconds
ago: the sync may not have carried them yet. Documents with an open quarantine
entry are expected to be absent and are counted, not reported as differences.

``repair`` re-applies the differing ids through the writer (MongoDB is the
source): a document missing or different in PostgreSQL is written again at a
fresh version, a row whose document is gone is deleted.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from bson import ObjectId, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from migrators.backfill import legacy_id_filter, legacy_id_of, read_version
from migrators.crypto import SecretError
from migrators.origin import strip_origin
from migrators.spec import Document, EntitySpec, MappingContext
from migrators.tree_apply import load_rows
from migrators.writer import BatchResult, SourceItem, write_batch
from schema.partitions import NO_DATE, PARTITION_COLUMN, is_no_date, retention_horizon
from schema.tenancy import enter_sync
from strangler.contract import DirtyValue, parse_legacy_datetime
from strangler.errors import DataError
from strangler.mongo import Database

__all__ = ["Difference", "VerifyReport", "canonical_hash", "verify_entity"]

DEFAULT_BUCKETS = 64
MAX_SHOWN = 50


def canonical_hash(document: Mapping[str, Any]) -> str:
    text = json_util.dumps(document, json_options=CANONICAL_JSON_OPTIONS, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def bucket_of(legacy_id: str, buckets: int) -> int:
    return int.from_bytes(hashlib.sha256(legacy_id.encode()).digest()[:4], "big") % buckets


def bucket_checksums(hashes: Mapping[str, str], buckets: int) -> dict[int, str]:
    grouped: dict[int, list[str]] = {}
    for legacy_id, digest in hashes.items():
        grouped.setdefault(bucket_of(legacy_id, buckets), []).append(f"{legacy_id}:{digest}")
    return {
        bucket: hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()
        for bucket, entries in grouped.items()
    }


@dataclass(frozen=True)
class Difference:
    legacy_id: str
    kind: str  # "missing in PostgreSQL", "extra in PostgreSQL", "fields differ", ...
    details: tuple[str, ...] = ()


@dataclass
class VerifyReport:
    entity: str
    mongo_count: int = 0
    postgres_count: int = 0
    buckets: int = DEFAULT_BUCKETS
    buckets_differing: int = 0
    skipped_young: int = 0
    quarantined: int = 0
    differences: list[Difference] = field(default_factory=list)
    repaired: BatchResult | None = None
    window: str = ""  # time series: the created_at window compared ("" : all of it)

    @property
    def clean(self) -> bool:
        return not self.differences

    def lines(self) -> list[str]:
        state = "clean" if self.clean else f"{len(self.differences)} difference(s)"
        lines = [
            f"{self.entity}{self.window}: {state}; MongoDB {self.mongo_count:,} documents, "
            f"PostgreSQL {self.postgres_count:,} rows, {self.quarantined:,} quarantined, "
            f"{self.skipped_young:,} too young to compare, "
            f"{self.buckets_differing}/{self.buckets} buckets differ"
        ]
        kinds = Counter(d.kind for d in self.differences)
        lines += [f"  {kind}: {count:,}" for kind, count in sorted(kinds.items())]
        for difference in self.differences[:MAX_SHOWN]:
            lines.append(f"  {difference.legacy_id}: {difference.kind}")
            lines += [f"      {detail}" for detail in difference.details]
        if len(self.differences) > MAX_SHOWN:
            lines.append(f"  ... and {len(self.differences) - MAX_SHOWN} more")
        if self.repaired is not None:
            r = self.repaired
            lines.append(
                f"  repaired: {r.written} row(s) written, {r.deleted} deleted, "
                f"{sum(r.quarantined.values())} quarantined"
            )
        return lines


def _age_moment(document: Mapping[str, Any], by_object_id: bool = False) -> datetime | None:
    """When the document last changed, as far as it tells: its ``updated_at`` (else
    ``created_at``); with ``by_object_id`` (collections keyed by ``_id``, whose documents
    are written once: history, copies), the moment its ObjectId was made when that is later.
    A ``workflowBkp`` copy carries the stamps of the workflow it copied; its insertion is
    younger, and the sync may not have carried it yet."""
    stamped: datetime | None = None
    for name in ("updated_at", "created_at"):
        try:
            stamped = parse_legacy_datetime(document.get(name))
        except DirtyValue:
            continue
        if stamped is not None:
            break
    key = document.get("_id")
    inserted = key.generation_time if by_object_id and isinstance(key, ObjectId) else None
    if stamped is None or (inserted is not None and inserted > stamped):
        return inserted
    return stamped


def _field_differences(spec: EntitySpec, legacy: Document, migrated: Document) -> tuple[str, ...]:
    shown_legacy = spec.redact(legacy) if spec.redact else legacy
    shown_migrated = spec.redact(migrated) if spec.redact else migrated
    return tuple(_compare("", legacy, migrated, shown_legacy, shown_migrated))


def _compare(
    prefix: str,
    legacy: Mapping[str, Any],
    migrated: Mapping[str, Any],
    shown_legacy: Mapping[str, Any],
    shown_migrated: Mapping[str, Any],
) -> list[str]:
    details = []
    for key in sorted(set(legacy) | set(migrated), key=str):
        before, after = legacy.get(key, _MISSING), migrated.get(key, _MISSING)
        if before == after:
            continue
        shown_before = shown_legacy.get(key, "<absent>")
        shown_after = shown_migrated.get(key, "<absent>")
        if isinstance(before, dict) and isinstance(after, dict):
            nested = (shown_before, shown_after)
            if isinstance(nested[0], dict) and isinstance(nested[1], dict):
                details += _compare(f"{prefix}{key}.", before, after, *nested)
                continue
        if _same_length_lists(before, after, shown_before, shown_after):
            # nested documents (a workspace's folders, jobs, ...): narrow down by index
            pairs = zip(before, after, shown_before, shown_after, strict=True)
            for index, (b, a, shown_b, shown_a) in enumerate(pairs):
                where = f"{prefix}{key}[{index}]"
                if b == a:
                    continue
                if all(isinstance(v, dict) for v in (b, a, shown_b, shown_a)):
                    details += _compare(f"{where}.", b, a, shown_b, shown_a)
                else:
                    details.append(
                        f"{where}: MongoDB {_short(shown_b)} != PostgreSQL {_short(shown_a)}"
                    )
            continue
        if shown_before == shown_after:
            details.append(f"{prefix}{key}: a secret value differs (not shown)")
        else:
            details.append(
                f"{prefix}{key}: MongoDB {_short(shown_before)} != PostgreSQL {_short(shown_after)}"
            )
    return details


_MISSING = object()


def _same_length_lists(*values: Any) -> bool:
    return all(isinstance(v, list) for v in values) and len({len(v) for v in values}) == 1


def _short(value: Any) -> str:
    text = (
        json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS)
        if value != "<absent>"
        else value
    )
    return text if len(text) <= 120 else text[:117] + "..."


# Rows are read back this many documents at a time: verify holds hashes, not documents.
_CHUNK = 1000


def _document_of(
    spec: EntitySpec, ctx: MappingContext, tables: dict[str, list[Any]], unreadable: dict[str, str],
    legacy_id: str,
) -> Document | None:  # fmt: skip
    assert spec.to_document is not None
    try:
        return spec.to_document(tables, ctx)
    except SecretError as exc:
        unreadable[legacy_id] = str(exc)
        return None
    except Exception as exc:  # a row the reverse mapping cannot read: a difference, not a crash
        problem = f"{type(exc).__name__}: {exc}"
        unreadable[legacy_id] = f"the rows do not map back to a document: {problem}"
        return None


async def _postgres_side(
    conn: asyncpg.Connection,
    spec: EntitySpec,
    ctx: MappingContext,
    young_after: datetime,
    unreadable: dict[str, str],
    window: _Window,
) -> tuple[dict[str, str], set[str], set[str]]:
    """(legacy id -> hash of its rows' document form, ids synced too recently, open
    quarantine), the rows read back ``_CHUNK`` documents at a time and let go once hashed;
    rows that cannot be read back (a secret that does not open) go to ``unreadable``."""
    if spec.to_document is None:
        raise DataError(f"entity {spec.name!r} has no to_document mapping: it cannot be verified")
    table, column = spec.tables[0], spec.legacy_id_column
    hashes: dict[str, str] = {}
    young: set[str] = set()
    async with conn.transaction():
        await enter_sync(conn)
        where, args = window.sql()
        if spec.placeholder:  # rows no document made are neither extra nor compared
            kept = f"NOT ({spec.placeholder})"
            where = (
                f" WHERE ({where.removeprefix(' WHERE ')}) AND {kept}"
                if where
                else f" WHERE {kept}"
            )
        ids = [
            r[0] for r in await conn.fetch(f"SELECT {column} FROM {table}{where} ORDER BY 1", *args)
        ]
        for start in range(0, len(ids), _CHUNK):
            # every table of a multi-table entity, for these documents
            grouped = await load_rows(conn, spec, ids[start : start + _CHUNK])
            for legacy_id, tables in grouped.items():
                document = _document_of(spec, ctx, tables, unreadable, legacy_id)
                if document is None:
                    continue
                hashes[legacy_id] = canonical_hash(document)
                synced = tables[table][0].get("synced_at")
                if synced is not None and synced > young_after:
                    young.add(legacy_id)
        quarantined = await conn.fetch(
            "SELECT legacy_id FROM migration_quarantine WHERE entity = $1 AND resolved_at IS NULL",
            spec.name,
        )
    return hashes, young, {r["legacy_id"] for r in quarantined}


async def _both_forms(
    db: Database, conn: asyncpg.Connection, spec: EntitySpec, ctx: MappingContext, ids: list[str]
) -> tuple[dict[str, Document], dict[str, Document]]:
    """The two normalized forms of these documents again, to say which fields differ."""
    normalize = spec.normalize
    assert normalize is not None
    legacy: dict[str, Document] = {}
    async for document in db[spec.collection].find(legacy_id_filter(spec, ids)):
        legacy[legacy_id_of(spec, document)] = normalize(strip_origin(document))
    migrated: dict[str, Document] = {}
    async with conn.transaction():
        await enter_sync(conn)
        for legacy_id, tables in (await load_rows(conn, spec, ids)).items():
            form = _document_of(spec, ctx, tables, {}, legacy_id)
            if form is not None:
                migrated[legacy_id] = form
    return legacy, migrated


@dataclass(frozen=True)
class _Window:
    """The created_at window of a time series' documents and rows that verify compares:
    [low, high), either end open; ``no_date`` whether rows of no date (NO_DATE) count."""

    low: datetime | None = None
    high: datetime | None = None
    no_date: bool = True

    def holds(self, moment: datetime) -> bool:
        if is_no_date(moment):
            return self.no_date
        return (self.low is None or moment >= self.low) and (
            self.high is None or moment < self.high
        )

    def sql(self) -> tuple[str, list[Any]]:
        if self.low is None and self.high is None:
            return "", []
        low = self.low or datetime.min.replace(tzinfo=UTC)
        high = self.high or datetime.max.replace(tzinfo=UTC)
        clause = f"({PARTITION_COLUMN} >= $1 AND {PARTITION_COLUMN} < $2)"
        if self.no_date:
            clause += f" OR {PARTITION_COLUMN} = $3"
            return f" WHERE {clause}", [low, high, NO_DATE]
        return f" WHERE {clause}", [low, high]

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return ""
        low = "" if self.low is None else f"{self.low:%Y-%m-%d %H:%M}"
        high = "" if self.high is None else f"{self.high:%Y-%m-%d %H:%M}"
        return f" [{low} .. {high})"


async def _window_of(
    conn: asyncpg.Connection, spec: EntitySpec, since: datetime | None, until: datetime | None
) -> _Window:
    if spec.moment is None:
        if since is not None or until is not None:
            raise DataError(f"entity {spec.name!r} is no time series: --since/--until do not apply")
        return _Window()
    horizon = await retention_horizon(conn, spec.tables[0])
    low = max((m for m in (since, horizon) if m is not None), default=None)
    return _Window(low, until, no_date=since is None and until is None)


async def verify_entity(
    db: Database,
    conn: asyncpg.Connection,
    spec: EntitySpec,
    ctx: MappingContext,
    *,
    min_age: float = 0.0,
    repair: bool = False,
    buckets: int = DEFAULT_BUCKETS,
    now: datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> VerifyReport:
    """Compare ``spec``'s documents and rows (see the module docstring). A time series
    (``spec.moment``) compares those whose row's created_at lies in [since, until) only,
    and never what retention dropped (``partition_retention``)."""
    if spec.normalize is None:
        raise DataError(f"entity {spec.name!r} has no normalize function: it cannot be verified")
    moment = now or datetime.now(UTC)
    young_after = moment - timedelta(seconds=min_age)
    window = await _window_of(conn, spec, since, until)
    report = VerifyReport(spec.name, buckets=buckets, window=window.describe())
    legacy: dict[str, str] = {}  # legacy id -> hash of the normalized document
    young: set[str] = set()
    duplicates: list[str] = []
    async for document in db[spec.collection].find({}):
        if spec.moment is not None and not window.holds(spec.moment(document)):
            continue
        legacy_id = legacy_id_of(spec, document)
        if legacy_id in legacy:
            duplicates.append(legacy_id)
        legacy[legacy_id] = canonical_hash(spec.normalize(strip_origin(document)))
        born = _age_moment(document, by_object_id=spec.id_field == "_id")
        if min_age > 0 and born is not None and born > young_after:
            young.add(legacy_id)
    unreadable: dict[str, str] = {}
    migrated, young_rows, quarantined = await _postgres_side(
        conn, spec, ctx, young_after, unreadable, window
    )
    if min_age > 0:
        young |= young_rows
    report.mongo_count, report.postgres_count = len(legacy), len(migrated) + len(unreadable)
    for legacy_id, problem in sorted(unreadable.items()):
        report.differences.append(Difference(legacy_id, "row cannot be read back", (problem,)))
    report.skipped_young = len(young)
    expected_absent = quarantined - set(migrated)
    report.quarantined = len(expected_absent & set(legacy))
    left = {i: h for i, h in legacy.items() if i not in young | expected_absent}
    right = {i: h for i, h in migrated.items() if i not in young}
    left_sums, right_sums = bucket_checksums(left, buckets), bucket_checksums(right, buckets)
    differing = {
        b for b in set(left_sums) | set(right_sums) if left_sums.get(b) != right_sums.get(b)
    }
    report.buckets_differing = len(differing)
    for legacy_id in sorted(duplicates):
        report.differences.append(
            Difference(legacy_id, "duplicate legacy id in MongoDB (only one can be migrated)")
        )
    found: list[tuple[str, str]] = []  # (legacy id, kind) in id order
    for legacy_id in sorted(_in_buckets(set(left) | set(right), differing, buckets)):
        if legacy_id in unreadable:
            continue
        if legacy_id not in right:
            found.append((legacy_id, "missing in PostgreSQL"))
        elif legacy_id not in left:
            found.append((legacy_id, "extra in PostgreSQL"))
        elif left[legacy_id] != right[legacy_id]:
            found.append((legacy_id, "fields differ"))
    changed = [legacy_id for legacy_id, kind in found if kind == "fields differ"]
    details: dict[str, tuple[str, ...]] = {}
    for start in range(0, len(changed), _CHUNK):  # both forms again, only for these
        ids = changed[start : start + _CHUNK]
        before, after = await _both_forms(db, conn, spec, ctx, ids)
        for legacy_id in ids:
            if legacy_id in before and legacy_id in after:
                details[legacy_id] = _field_differences(spec, before[legacy_id], after[legacy_id])
            else:
                details[legacy_id] = ("changed while verify ran; run it again",)
    for legacy_id, kind in found:
        report.differences.append(Difference(legacy_id, kind, details.get(legacy_id, ())))
    if repair and report.differences:
        report.repaired = await _repair(db, conn, spec, ctx, report.differences)
    return report


def _in_buckets(ids: Iterable[str], chosen: set[int], buckets: int) -> list[str]:
    return [i for i in ids if bucket_of(i, buckets) in chosen]


async def _repair(
    db: Database,
    conn: asyncpg.Connection,
    spec: EntitySpec,
    ctx: MappingContext,
    differences: list[Difference],
) -> BatchResult:
    """Write the differing ids again from MongoDB (or delete what MongoDB no longer has)."""
    wanted = {d.legacy_id for d in differences}
    version = read_version()
    found: dict[str, Document] = {}
    async for document in db[spec.collection].find(legacy_id_filter(spec, sorted(wanted))):
        found[legacy_id_of(spec, document)] = document
    items = [SourceItem(i, found.get(i), version) for i in sorted(wanted)]
    return await write_batch(conn, spec, items, ctx=ctx, source="verify")
