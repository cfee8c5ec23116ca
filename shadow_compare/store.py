"""The result store in PostgreSQL (tables of schema/migrations/0010_shadow_compare.sql).

Writes take a :class:`~shadow_compare.aggregate.Tally` (already redacted) and add it in
one transaction: counts are summed into their minute buckets, samples inserted and then
trimmed to the newest N per (run, entity, cause) under an advisory lock, so concurrent
writers cannot leave more than N behind. Reads return a
:class:`~shadow_compare.aggregate.ReportData` for the report.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import asyncpg

from shadow_compare.aggregate import (
    DEFAULT_SAMPLES_PER_CAUSE,
    ComparisonKey,
    DifferenceKey,
    ReportData,
    Sample,
    Tally,
)
from shadow_compare.errors import StoreNotMigrated, StoreUnavailable
from strangler.config import redact_url

__all__ = ["ResultStore"]

_UPSERT_COMPARISON = """
INSERT INTO shadow_comparisons
    (run, entity, endpoint, bucket, legacy_status, new_status, kind, n)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (run, entity, endpoint, bucket, legacy_status, new_status, kind)
DO UPDATE SET n = shadow_comparisons.n + EXCLUDED.n
"""
_UPSERT_DIFFERENCE = """
INSERT INTO shadow_differences (run, entity, endpoint, bucket, verdict, cause, path, rule, n)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (run, entity, endpoint, bucket, verdict, cause, path, rule)
DO UPDATE SET n = shadow_differences.n + EXCLUDED.n
"""
_INSERT_SAMPLE = """
INSERT INTO shadow_samples
    (recorded_at, run, entity, endpoint, cause, verdict, path, rule, reason, detail,
     legacy_status, new_status, legacy_value, new_value, request)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb, $14::jsonb, $15::jsonb)
"""
_TRIM_SAMPLES = """
DELETE FROM shadow_samples WHERE id IN (
    SELECT id FROM shadow_samples WHERE run = $1 AND entity = $2 AND cause = $3
    ORDER BY id DESC OFFSET $4)
"""
# $1 runs (NULL: all), $2 since, $3 entity (NULL: all). The minute holding "since" is
# included whole: a report may show a few seconds more, never fewer.
_FILTER = """(run = ANY($1::text[]) OR $1 IS NULL)
    AND bucket >= date_trunc('minute', $2::timestamptz)
    AND ($3::text IS NULL OR entity = $3)"""
_READ_COMPARISONS = f"""
SELECT run, entity, endpoint, legacy_status, new_status, kind, sum(n)::bigint AS n
FROM shadow_comparisons WHERE {_FILTER}
GROUP BY run, entity, endpoint, legacy_status, new_status, kind
"""
_READ_DIFFERENCES = f"""
SELECT run, entity, endpoint, verdict, cause, path, rule, sum(n)::bigint AS n
FROM shadow_differences WHERE {_FILTER}
GROUP BY run, entity, endpoint, verdict, cause, path, rule
"""
_READ_SAMPLES = """
SELECT * FROM (
    SELECT *, row_number() OVER (PARTITION BY entity, cause, verdict ORDER BY id DESC) AS rank
    FROM shadow_samples
    WHERE (run = ANY($1::text[]) OR $1 IS NULL) AND recorded_at >= $2
      AND ($3::text IS NULL OR entity = $3)
) ranked WHERE rank <= $4 ORDER BY entity, cause, verdict, id DESC
"""


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


class ResultStore:
    """A small asyncpg pool over the shadow tables; foreign errors become StoreUnavailable."""

    def __init__(self, database_url: str, samples_per_cause: int = DEFAULT_SAMPLES_PER_CAUSE):
        self._url = database_url
        self._samples_per_cause = samples_per_cause
        self._pool: asyncpg.Pool | None = None

    def _unavailable(self, exc: BaseException) -> StoreUnavailable | StoreNotMigrated:
        if isinstance(exc, asyncpg.UndefinedTableError):
            return StoreNotMigrated(redact_url(self._url))
        return StoreUnavailable(
            "DATABASE_URL",
            redact_url(self._url),
            type(exc).__name__ + (f": {exc}" if isinstance(exc, asyncpg.PostgresError) else ""),
        )

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=2, timeout=5)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise self._unavailable(exc) from exc

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def write(self, counted: Tally) -> None:
        """Add a tally's counts and samples in one transaction."""
        await self.open()
        assert self._pool is not None
        trim_keys = sorted({(s.run, s.entity, s.cause) for s in counted.samples})
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for run, entity, cause in trim_keys:  # sorted: writers lock in one order
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended($1, 10))",
                        f"shadow_samples:{run}:{entity}:{cause}",
                    )
                await conn.executemany(
                    _UPSERT_COMPARISON,
                    [
                        (
                            k.run,
                            k.entity,
                            k.endpoint,
                            k.bucket,
                            k.legacy_status,
                            k.new_status,
                            k.kind,
                            n,
                        )
                        for k, n in sorted(counted.comparisons.items())
                    ],
                )
                await conn.executemany(
                    _UPSERT_DIFFERENCE,
                    [
                        (
                            k.run,
                            k.entity,
                            k.endpoint,
                            k.bucket,
                            k.verdict,
                            k.cause,
                            k.path,
                            k.rule,
                            n,
                        )
                        for k, n in sorted(counted.differences.items())
                    ],
                )
                await conn.executemany(
                    _INSERT_SAMPLE,
                    [
                        (
                            s.recorded_at,
                            s.run,
                            s.entity,
                            s.endpoint,
                            s.cause,
                            s.verdict,
                            s.path,
                            s.rule,
                            s.reason,
                            s.detail,
                            s.legacy_status,
                            s.new_status,
                            _json(s.legacy_value),
                            _json(s.new_value),
                            _json(s.request),
                        )
                        for s in counted.samples
                    ],
                )
                for run, entity, cause in trim_keys:
                    await conn.execute(_TRIM_SAMPLES, run, entity, cause, self._samples_per_cause)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise self._unavailable(exc) from exc

    async def read(
        self,
        *,
        since: datetime,
        entity: str | None = None,
        runs: list[str] | None = None,
        samples_per_cause: int = 5,
    ) -> ReportData:
        """Counts since ``since`` (minute buckets), for ``runs`` (None: every run)."""
        await self.open()
        assert self._pool is not None
        try:
            async with self._pool.acquire() as conn:
                comparisons = await conn.fetch(_READ_COMPARISONS, runs, since, entity)
                differences = await conn.fetch(_READ_DIFFERENCES, runs, since, entity)
                samples = await conn.fetch(_READ_SAMPLES, runs, since, entity, samples_per_cause)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise self._unavailable(exc) from exc
        return ReportData(
            comparisons=tuple(
                (
                    ComparisonKey(
                        r["run"],
                        r["entity"],
                        r["endpoint"],
                        since,
                        r["legacy_status"],
                        r["new_status"],
                        r["kind"],
                    ),
                    int(r["n"]),
                )
                for r in comparisons
            ),
            differences=tuple(
                (
                    DifferenceKey(
                        r["run"],
                        r["entity"],
                        r["endpoint"],
                        since,
                        r["verdict"],
                        r["cause"],
                        r["path"],
                        r["rule"],
                    ),
                    int(r["n"]),
                )
                for r in differences
            ),
            samples=tuple(
                Sample(
                    recorded_at=r["recorded_at"],
                    run=r["run"],
                    entity=r["entity"],
                    endpoint=r["endpoint"],
                    cause=r["cause"],
                    verdict=r["verdict"],
                    path=r["path"],
                    rule=r["rule"],
                    reason=r["reason"],
                    detail=r["detail"],
                    legacy_status=r["legacy_status"],
                    new_status=r["new_status"],
                    legacy_value=json.loads(r["legacy_value"]) if r["legacy_value"] else None,
                    new_value=json.loads(r["new_value"]) if r["new_value"] else None,
                    request=json.loads(r["request"]),
                )
                for r in samples
            ),
        )

    async def prune(self, *, before: datetime) -> dict[str, int]:
        """Delete counts in buckets before ``before`` and samples recorded before it."""
        await self.open()
        assert self._pool is not None
        deleted: dict[str, int] = {}
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for table, column in (
                    ("shadow_comparisons", "bucket"),
                    ("shadow_differences", "bucket"),
                    ("shadow_samples", "recorded_at"),
                ):
                    status = await conn.execute(f"DELETE FROM {table} WHERE {column} < $1", before)
                    deleted[table] = int(status.rsplit(" ", 1)[-1])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise self._unavailable(exc) from exc
        return deleted

    async def count_samples(self, run: str, entity: str, cause: str) -> int:
        await self.open()
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT count(*) FROM shadow_samples WHERE run = $1 AND entity = $2 AND cause = $3",
                run,
                entity,
                cause,
            )
        return int(value)
