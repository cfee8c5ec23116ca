"""Entities whose one document becomes rows in several tables (the workspace tree).

A spec declares its child tables in ``spec.extra[CHILDREN]`` (a tuple of
:class:`ChildTable`, parents first); the batch writer (:mod:`migrators.writer`) then
applies the first table as for any entity (version guard, references, unique names)
and hands the rest to :func:`apply_children`, in the same transaction:

* only the children of documents whose first-table row was applied (a stale or
  repeated document changes none of its children either);
* each child row is inserted, or updated only when its content differs from what the
  last apply stored (``ROW(...) IS DISTINCT FROM``): an edit of one job touches that
  job's row and nothing else below the workspace;
* a child row that vanished from its document is deleted: the document is the truth
  and legacy's own soft delete (``d_flag``) is a field, not a vanished entry;
* a document gone from MongoDB takes its children along with its first-table row.

:func:`load_rows` reads an entity's rows back grouped by document, for verify and the
reverse sync, for single-table entities as well. ``spec.extra[AFTER_APPLY]``, when
given, reports notes about the applied documents once their rows are in place.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from migrators.spec import EntitySpec, Note, Row
from migrators.staging import column_types, encode_value

__all__ = [
    "AFTER_APPLY",
    "CHILDREN",
    "AfterApply",
    "ChildTable",
    "apply_children",
    "children_of",
    "delete_children",
    "load_rows",
]

CHILDREN = "children"
AFTER_APPLY = "after_apply"
# (connection, legacy ids of the applied documents) -> notes about them
AfterApply = Callable[[asyncpg.Connection, list[str]], Awaitable[list[tuple[str, Note]]]]


@dataclass(frozen=True)
class ChildTable:
    """A table filled from the same document as the spec's first table."""

    table: str
    # The column of the row naming its parent, and the table that parent is in
    # (None: the first table); a row is applied only when its parent was.
    parent_column: str
    parent_table: str | None = None
    # The column holding the row's own legacy id, when it has one (children point at it).
    id_column: str | None = None
    # SQL over alias ``t`` giving the legacy id of the document that owns the row.
    root: str = ""
    key: tuple[str, ...] = ("id",)  # the conflict target
    versioned: bool = True  # has source_version and synced_at
    # Columns under a unique index (folder names in a workspace, ...): PostgreSQL checks
    # them row by row within a statement, so names swapped or handed from one row to
    # another in one document would clash half-way; changed rows let go of them first.
    unique_columns: tuple[str, ...] = ()
    # The column naming the document that owns the row (``workspace_id``). A row another
    # document owns already is left with it, and the claim reported, never moved: two
    # workspace documents listing one folder id (dirt) would otherwise hand the folder to
    # whichever was applied last, and the other's jobs would point at a folder that goes
    # when its new owner drops it (a foreign key failing the whole batch).
    owner_column: str | None = None

    @property
    def root_sql(self) -> str:
        return self.root or f"t.{self.parent_column}"


def children_of(spec: EntitySpec) -> tuple[ChildTable, ...]:
    return tuple(spec.extra.get(CHILDREN, ()))


async def _stage(
    conn: asyncpg.Connection, child: ChildTable, rows: Sequence[tuple[int, Row]]
) -> tuple[str, tuple[str, ...]]:
    """COPY the rows into the child's staging table; returns its name and the columns.

    The table is emptied by every commit (and a rollback takes its rows too); each
    child table is staged once per batch transaction."""
    stage = f"strangler_child_{child.table}"
    await conn.execute(
        f"""CREATE TEMP TABLE IF NOT EXISTS {stage}
            (LIKE {child.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"""
    )
    types = await column_types(conn, child.table)
    columns: tuple[str, ...] = tuple(rows[0][1]) if rows else ()
    unknown = [c for c in columns if c not in types]
    if unknown:
        raise ValueError(f"rows for {child.table} name columns it does not have: {unknown}")
    if rows:
        records = []
        for version, row in rows:
            values = [encode_value(row[c], types[c]) for c in columns]
            if child.versioned:
                values.append(version)
            records.append(values)
        copied = [*columns, "source_version"] if child.versioned else list(columns)
        await conn.copy_records_to_table(stage, records=records, columns=copied)
    return stage, columns


async def _drop_claimed(
    conn: asyncpg.Connection, child: ChildTable, stage: str
) -> list[tuple[str, str, str]]:
    """Remove staged rows whose stored row another document owns: (row id, claimant, owner)."""
    owner, own_id = child.owner_column, child.id_column
    if owner is None or own_id is None:
        return []
    same = " AND ".join(f"s.{c} = t.{c}" for c in child.key)
    stored = await conn.fetch(
        f"""DELETE FROM {stage} AS s USING {child.table} AS t
            WHERE {same} AND t.{owner} IS DISTINCT FROM s.{owner}
            RETURNING s.{own_id} AS id, s.{owner} AS claimant, t.{owner} AS owner"""
    )
    # two documents of one batch listing the same id: the smaller document id keeps it
    staged = await conn.fetch(
        f"""DELETE FROM {stage} AS s USING {stage} AS t
            WHERE {same} AND t.{owner} < s.{owner}
            RETURNING s.{own_id} AS id, s.{owner} AS claimant, t.{owner} AS owner"""
    )
    return [(str(r["id"]), r["claimant"], r["owner"]) for r in [*stored, *staged]]


async def _upsert(
    conn: asyncpg.Connection, child: ChildTable, stage: str, columns: tuple[str, ...]
) -> int:
    if not columns:
        return 0
    listed = ", ".join(columns)
    compared = [c for c in columns if c not in child.key]
    left = ", ".join(f"t.{c}" for c in compared) or "NULL"
    if child.unique_columns:
        same = " AND ".join(f"s.{c} = t.{c}" for c in child.key)
        released = ", ".join(f"{c} = NULL" for c in child.unique_columns)
        staged = ", ".join(f"s.{c}" for c in compared) or "NULL"
        await conn.execute(
            f"""UPDATE {child.table} AS t SET {released} FROM {stage} AS s
                WHERE {same} AND ROW({left}, NULL) IS DISTINCT FROM ROW({staged}, NULL)"""
        )
    bookkeeping = ["source_version", "synced_at"] if child.versioned else ["synced_at"]
    inserted = f"{listed}, {', '.join(bookkeeping)}"
    values = f"{listed}, source_version, now()" if child.versioned else f"{listed}, now()"
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in [*compared, *bookkeeping])
    right = ", ".join(f"EXCLUDED.{c}" for c in compared) or "NULL"
    status = await conn.execute(
        f"""INSERT INTO {child.table} AS t ({inserted}) SELECT {values} FROM {stage}
            ON CONFLICT ({", ".join(child.key)}) DO UPDATE SET {assignments}
            WHERE ROW({left}, NULL) IS DISTINCT FROM ROW({right}, NULL)"""
    )
    return int(status.split()[-1])


async def _delete_vanished(
    conn: asyncpg.Connection, child: ChildTable, stage: str, roots: list[str]
) -> int:
    same = " AND ".join(f"s.{c} = t.{c}" for c in child.key)
    status = await conn.execute(
        f"""DELETE FROM {child.table} AS t WHERE {child.root_sql} = ANY($1::text[])
            AND NOT EXISTS (SELECT 1 FROM {stage} AS s WHERE {same})""",
        roots,
    )
    return int(status.split()[-1])


async def apply_children(
    conn: asyncpg.Connection,
    spec: EntitySpec,
    rows: Mapping[str, Sequence[tuple[int, Row]]],
    applied: set[str],
) -> tuple[int, list[tuple[str, Note]]]:
    """Make the child rows of the applied documents what their documents say.

    Returns the number of child rows inserted, changed or deleted, and the notes of
    the spec's :data:`AFTER_APPLY` check. Runs inside the writer's transaction.
    """
    if not applied:
        return 0, []
    roots = sorted(applied)
    kept: dict[str | None, set[str]] = {None: applied}
    written = 0
    notes: list[tuple[str, Note]] = []
    for child in children_of(spec):
        parents = kept.get(child.parent_table, set())
        mine = [(v, r) for v, r in rows.get(child.table, ()) if r[child.parent_column] in parents]
        stage, columns = await _stage(conn, child, mine)
        claimed = await _drop_claimed(conn, child, stage)
        for row_id, claimant, owner in claimed:
            detail = f"{child.id_column} {row_id} is also in {owner}'s document; kept there"
            notes.append((claimant, Note("tree_id_elsewhere", detail)))
        if child.id_column is not None:  # what is applied here, for the rows below it
            refused = {row_id for row_id, _, _ in claimed}
            kept[child.table] = {str(r[child.id_column]) for _, r in mine} - refused
        # vanished rows first: a new row may take over the name of one that went
        written += await _delete_vanished(conn, child, stage, roots)
        written += await _upsert(conn, child, stage, columns)
    check: AfterApply | None = spec.extra.get(AFTER_APPLY)
    if check is not None:
        notes += await check(conn, roots)
    return written, notes


async def delete_children(conn: asyncpg.Connection, spec: EntitySpec, ids: Sequence[str]) -> int:
    """Delete the children of documents whose first-table row no longer exists."""
    table, column = spec.tables[0], spec.legacy_id_column
    gone = [
        r[0]
        for r in await conn.fetch(
            f"""SELECT i FROM unnest($1::text[]) AS i
                WHERE NOT EXISTS (SELECT 1 FROM {table} AS p WHERE p.{column} = i)""",
            list(ids),
        )
    ]
    if not gone:
        return 0
    deleted = 0
    for child in reversed(children_of(spec)):
        status = await conn.execute(
            f"DELETE FROM {child.table} AS t WHERE {child.root_sql} = ANY($1::text[])", gone
        )
        deleted += int(status.split()[-1])
    return deleted


async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[dict[str, Any]]:
    statement = await conn.prepare(sql)
    decoded = {a.name for a in statement.get_attributes() if a.type.name in ("json", "jsonb")}
    rows = []
    for record in await statement.fetch(*args):
        row = dict(record)
        for name in decoded:
            if isinstance(row.get(name), str):
                row[name] = json.loads(row[name])
        rows.append(row)
    return rows


async def load_rows(
    conn: asyncpg.Connection, spec: EntitySpec, legacy_ids: Sequence[str] | None = None
) -> dict[str, dict[str, list[Row]]]:
    """legacy id -> table -> rows of the documents (all of them when ``legacy_ids`` is None).

    jsonb columns come back decoded. The caller sets up the transaction and role.
    """
    table, column = spec.tables[0], spec.legacy_id_column
    if legacy_ids is None:
        roots = await _fetch(conn, f"SELECT * FROM {table}")
    else:
        roots = await _fetch(
            conn, f"SELECT * FROM {table} WHERE {column} = ANY($1::text[])", list(legacy_ids)
        )
    grouped: dict[str, dict[str, list[Row]]] = {}
    for row in roots:
        tables: dict[str, list[Row]] = {t: [] for t in spec.tables}
        tables[table].append(row)
        grouped[row[column]] = tables
    children = children_of(spec)
    if not children or not grouped:
        return grouped
    wanted = sorted(grouped)
    for child in children:
        for row in await _fetch(
            conn,
            f"""SELECT {child.root_sql} AS strangler_root, t.* FROM {child.table} AS t
                WHERE {child.root_sql} = ANY($1::text[])""",
            wanted,
        ):
            root = row.pop("strangler_root")
            grouped[root][child.table].append(row)
    return grouped
