"""A batch of rows COPYed into a staging table, and the set-based SQL the writer runs on it.

One temporary table per target table and connection (``strangler_stage_<table>``,
``LIKE`` the target, ``ON COMMIT DELETE ROWS``): created on first use, emptied
by every commit, so a batch costs one COPY and a handful of statements however
many rows it holds. Table and column names come from specs and the catalog,
never from data; values only travel as COPY data or bind parameters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from migrators.spec import Reference, Row, UniqueName
from schema.partitions import MONTHLY_PARTITIONED, NO_DATE, PARTITION_COLUMN
from strangler.jsonfast import JsonText, jsonb_text

__all__ = ["StagedTable", "column_types", "encode_value", "stage_rows"]

_JSON_TYPES = {"json", "jsonb"}
_column_types: dict[str, dict[str, str]] = {}


async def column_types(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    """The table's columns and their SQL types (read once per table and process)."""
    known = _column_types.get(table)
    if known is None:
        records = await conn.fetch(
            """SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
               WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped""",
            table,
        )
        known = _column_types[table] = {r["attname"]: r["type"] for r in records}
    return known


def encode_value(value: Any, type_name: str) -> Any:
    """A row value as COPY takes it for a column of ``type_name``."""
    if value is None:
        return None
    if type_name == "jsonb":  # jsonb keeps no key order: sorting would be wasted work
        return jsonb_text(value)
    if isinstance(value, JsonText):  # checked text is sent as written
        return value.text
    if type_name in _JSON_TYPES:  # json text is compared as written: one order for all
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if type_name == "uuid" and not isinstance(value, uuid.UUID):
        return uuid.UUID(str(value))
    return value


@dataclass
class StagedTable:
    table: str
    stage: str
    columns: tuple[str, ...]
    count: int
    applied_ids: set[str] = field(default_factory=set)

    def _list(self, prefix: str = "") -> str:
        return ", ".join(f"{prefix}{column}" for column in self.columns)

    async def drop_stale(self, conn: asyncpg.Connection, entity: str, legacy: str) -> None:
        """Forget staged rows whose stored row or tombstone is as new or newer."""
        await conn.execute(
            f"""DELETE FROM {self.stage} AS s USING {self.table} AS t
                WHERE t.id = s.id AND t.source_version >= s.source_version"""
        )
        await conn.execute(
            f"""DELETE FROM {self.stage} AS s USING migration_tombstones AS d
                WHERE d.entity = $1 AND d.legacy_id = s.{legacy}
                  AND d.source_version >= s.source_version""",
            entity,
        )

    async def drop_unreferenced(
        self, conn: asyncpg.Connection, legacy: str, ref: Reference
    ) -> list[tuple[str, Any]]:
        """Remove (and return) staged rows whose required reference matches nothing."""
        records = await conn.fetch(
            f"""DELETE FROM {self.stage} AS s
                WHERE NOT EXISTS (SELECT 1 FROM {ref.table} AS r
                                  WHERE r.{ref.target_column} = s.{ref.column})
                RETURNING s.{legacy} AS legacy_id, s.{ref.column} AS value"""
        )
        return [(r["legacy_id"], r["value"]) for r in records]

    async def dangling(
        self, conn: asyncpg.Connection, legacy: str, ref: Reference
    ) -> list[tuple[str, Any]]:
        records = await conn.fetch(
            f"""SELECT s.{legacy} AS legacy_id, s.{ref.column} AS value FROM {self.stage} AS s
                WHERE s.{ref.column} IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM {ref.table} AS r
                                  WHERE r.{ref.target_column} = s.{ref.column})"""
        )
        return [(r["legacy_id"], r["value"]) for r in records]

    async def resolve_unique(
        self, conn: asyncpg.Connection, legacy: str, unique: UniqueName
    ) -> list[tuple[str, Any]]:
        """Rename the losers of each clash (staged or stored); return (legacy id, value).

        Candidates are the live staged rows and the live stored rows (not being replaced)
        that share a scope and key with one of them; per (scope, key) the first by
        (``order_by``, legacy id) wins. One sort, whatever the batch size.
        """
        col = unique.column
        scope = ", ".join(unique.scope)

        def key(alias: str) -> str:
            return f"lower({alias}{col})" if unique.fold_case else f"{alias}{col}"

        picked = f"id, {scope}, {key('')} AS k, {unique.order_by} AS o, {legacy} AS l"
        losers = await conn.fetch(
            f"""WITH staged AS (
                    SELECT {picked}, 'stage' AS side FROM {self.stage}
                    WHERE ({unique.live}) AND {col} IS NOT NULL),
                stored AS (
                    SELECT {picked}, 'table' AS side FROM {self.table} AS t
                    WHERE ({unique.live}) AND {col} IS NOT NULL
                      AND ({scope}, {key("t.")}) IN (SELECT {scope}, k FROM staged)
                      AND NOT EXISTS (SELECT 1 FROM {self.stage} AS x WHERE x.id = t.id)),
                ranked AS (
                    SELECT id, side, row_number() OVER (
                        PARTITION BY {scope}, k ORDER BY coalesce(o, 'infinity'), l) AS n
                    FROM (SELECT * FROM staged UNION ALL SELECT * FROM stored) AS u)
                SELECT id, side FROM ranked WHERE n > 1"""
        )
        if not losers:
            return []
        renamed: list[tuple[str, Any]] = []
        for side, target in (("stage", self.stage), ("table", self.table)):
            ids = [r["id"] for r in losers if r["side"] == side]
            if not ids:
                continue
            touched = ", synced_at = now()" if side == "table" else ""
            records = await conn.fetch(
                f"""UPDATE {target} AS a
                    SET {col} = a.{col} || ' [' || a.{legacy} || ']',
                        extra = jsonb_set(a.extra, '{{$renamed}}',
                            coalesce(a.extra -> '$renamed', '{{}}'::jsonb)
                            || jsonb_build_object('{col}', a.{col})){touched}
                    WHERE a.id = ANY($1::uuid[])
                    RETURNING a.{legacy} AS legacy_id,
                              a.extra -> '$renamed' ->> '{col}' AS value""",
                ids,
            )
            renamed += [(r["legacy_id"], r["value"]) for r in records]
        return renamed

    async def drop_retired(self, conn: asyncpg.Connection) -> int:
        """Drop staged rows older than the table's retention horizon (schema 0040): their
        partitions were dropped on purpose, a backfill or the sweep must not bring them
        back. Rows of no date (NO_DATE, the default partition) are never retired."""
        if self.table not in MONTHLY_PARTITIONED:
            return 0
        status = await conn.execute(
            f"""DELETE FROM {self.stage} AS s USING partition_retention AS r
                WHERE r.table_name = $1 AND s.{PARTITION_COLUMN} < r.keep_from
                  AND s.{PARTITION_COLUMN} > $2""",
            self.table,
            NO_DATE,
        )
        return int(status.split()[-1])

    async def current_ids(self, conn: asyncpg.Connection, legacy: str) -> set[str]:
        return {r[0] for r in await conn.fetch(f"SELECT {legacy} FROM {self.stage}")}

    async def upsert(self, conn: asyncpg.Connection, guard_column: str | None) -> int:
        """Insert new rows, replace older differing ones; return how many were written."""
        key = "id"
        if self.table in MONTHLY_PARTITIONED:
            # The key of a partitioned table holds its partition column: a row whose
            # created_at changed in legacy (rare: dirt cleaned up) lives in another month
            # now, so its old row goes first. Stale staged rows were dropped already.
            key = f"id, {PARTITION_COLUMN}"
            await conn.execute(
                f"""DELETE FROM {self.table} AS t USING {self.stage} AS s
                    WHERE t.id = s.id AND t.{PARTITION_COLUMN} <> s.{PARTITION_COLUMN}"""
            )
        updatable = [c for c in self.columns if c != "id"]
        assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*updatable, "source_version"])
        guard = f"(t.{guard_column} IS NULL OR t.{guard_column} < EXCLUDED.{guard_column}) AND "
        status = await conn.execute(
            f"""INSERT INTO {self.table} AS t ({self._list()}, source_version, synced_at)
                SELECT {self._list()}, source_version, now() FROM {self.stage}
                ON CONFLICT ({key}) DO UPDATE SET {assignments}, synced_at = EXCLUDED.synced_at
                WHERE {guard if guard_column else ""}
                      ROW({self._list("t.")}) IS DISTINCT FROM ROW({self._list("EXCLUDED.")})"""
        )
        return int(status.split()[-1])


async def stage_rows(
    conn: asyncpg.Connection, table: str, rows: Sequence[tuple[int, Row]]
) -> StagedTable:
    """COPY ``(version, row)`` pairs into the table's staging table (inside a transaction)."""
    types = await column_types(conn, table)
    columns = tuple(rows[0][1])
    unknown = [c for c in columns if c not in types]
    if unknown:
        raise ValueError(f"rows for {table} name columns it does not have: {unknown}")
    stage = f"strangler_stage_{table}"
    await conn.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {stage}
            (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"""
    )
    await conn.execute(f"CREATE INDEX IF NOT EXISTS {stage}_id ON {stage} (id)")
    typed = [types[c] for c in columns]
    records = []
    for version, row in rows:
        if len(row) != len(columns):
            raise ValueError(f"rows for {table} do not all name the same columns")
        values = [encode_value(row[c], t) for c, t in zip(columns, typed, strict=True)]
        values.append(version)
        records.append(values)
    await conn.copy_records_to_table(stage, records=records, columns=[*columns, "source_version"])
    return StagedTable(table, stage, columns, len(records))
