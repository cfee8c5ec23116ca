"""The workspace tree's reads and writes in PostgreSQL, shared by the tree's handlers.

Every function runs inside the request's tenant transaction (``strangler_app``, RLS on
the caller's subscription), so another tenant's rows are never seen: their ids are not
found, exactly as legacy answers them.

Visibility follows legacy (LEGACY.md section 3): a soft-deleted workspace, folder or job
hides everything below it. The new side cascades its own deletes, but rows backfilled
from legacy carry legacy's uncascaded flags, so reads still check the ancestors.

Locks: a write locks the workspace row (``FOR UPDATE``) before it changes anything in
that workspace's tree, so two edits of one tree serialize instead of one overwriting the
other (legacy's whole-document rewrite); a workflow write locks the workflow row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from proxy.handlers._pg import LISTED_TOTAL, ApiError, Call, listed_total, record_outbox

__all__ = [
    "DOCUMENT_ENTITIES",
    "FOLDER_COLUMNS",
    "JOB_COLUMNS",
    "LISTED_TOTAL",
    "VISIBLE_WORKFLOW",
    "WORKFLOW_COLUMNS",
    "WORKSPACE_COLUMNS",
    "cascade_delete",
    "drop_dependencies",
    "fetch_tree",
    "job_dependencies",
    "listed_total",
    "load_folder",
    "load_job",
    "load_workflow",
    "load_workspace",
    "name_taken",
    "next_position",
    "queue_documents",
    "touch_workspace",
    "without_kept",
]

# The outbox entity of each legacy collection a tree write changes: the reverse sync
# rebuilds that document from the rows (the tree data path's specs carry these names).
DOCUMENT_ENTITIES = {
    "workspace": "workspaces",
    "workflow": "workflows",
    "workflow_versions": "workflow_versions",
}

WORKSPACE_COLUMNS = (
    "workspace_id, workspace_name, description, subscription_id, owner_id, created_by, "
    "created_at, updated_by, updated_at, is_deleted, extra"
)
FOLDER_COLUMNS = "folder_id, workspace_id, folder_name, description, created_by, created_at, extra"
JOB_COLUMNS = (
    "job_id, workspace_id, folder_id, job_name, description, environment, created_by, "
    "created_at, extra"
)
WORKFLOW_COLUMNS = (
    "w.workflow_id, w.workspace_id, w.folder_id, w.job_id, w.subscription_id, "
    "w.workflow_name, w.description, w.environment, w.workflow_diagram_text, w.parameters, "
    "w.notification, w.tags, w.version, w.is_active, w.is_checked_out, w.checked_out_by, "
    "w.checked_out_at, w.source_connector_id, w.target_connector_id, w.created_by, "
    "w.created_at, w.updated_by, w.updated_at, w.extra"
)
# A workflow is hidden by its workspace, folder or job being deleted (legacy's rule: only
# the workflow's own workspace counts; a folder or job that tree does not hold hides
# nothing, since the workflow document is authoritative and the tree drifts from it).
VISIBLE_WORKFLOW = """
    NOT w.is_deleted
    AND NOT EXISTS (SELECT 1 FROM workspaces s
                    WHERE s.workspace_id = w.workspace_id AND s.is_deleted)
    AND NOT EXISTS (SELECT 1 FROM folders f
                    WHERE f.folder_id = w.folder_id AND f.workspace_id = w.workspace_id
                      AND f.is_deleted)
    AND NOT EXISTS (SELECT 1 FROM jobs j LEFT JOIN folders jf ON jf.folder_id = j.folder_id
                    WHERE j.job_id = w.job_id AND j.workspace_id = w.workspace_id
                      AND (j.is_deleted OR coalesce(jf.is_deleted, false)))
"""


def _name_of(column: str) -> str:
    """The name as legacy knows it: a renamed duplicate's name as found."""
    return f"coalesce(extra -> '$renamed' ->> '{column}', {column})"


async def load_workspace(
    conn: asyncpg.Connection, workspace_id: str, *, lock: bool = False
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE workspace_id = $1 AND NOT is_deleted"
        + (" FOR UPDATE" if lock else ""),
        workspace_id,
    )
    if row is None:
        raise ApiError(404, "Workspace not found")
    return row


async def load_folder(
    conn: asyncpg.Connection, workspace_id: str, folder_id: str
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {FOLDER_COLUMNS} FROM folders "
        "WHERE folder_id = $1 AND workspace_id = $2 AND NOT is_deleted",
        folder_id,
        workspace_id,
    )
    if row is None:
        raise ApiError(404, "Folder not found")
    return row


async def load_job(conn: asyncpg.Connection, folder_id: str, job_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1 AND folder_id = $2 AND NOT is_deleted",
        job_id,
        folder_id,
    )
    if row is None:
        raise ApiError(404, "Job not found")
    return row


async def load_workflow(
    conn: asyncpg.Connection, workflow_id: str, *, lock: bool = False
) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"SELECT {WORKFLOW_COLUMNS} FROM workflows w WHERE w.workflow_id = $1 AND "
        + VISIBLE_WORKFLOW
        + (" FOR UPDATE OF w" if lock else ""),
        workflow_id,
    )
    if row is None:
        raise ApiError(404, "Workflow not found")
    return row


async def job_dependencies(
    conn: asyncpg.Connection, job_ids: Sequence[str]
) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT job_id, workflow_id FROM workflow_dependencies WHERE job_id = ANY($1::text[]) "
        "ORDER BY job_id, position",
        list(job_ids),
    )
    listed: dict[str, list[str]] = {}
    for row in rows:
        listed.setdefault(row["job_id"], []).append(row["workflow_id"])
    return listed


async def name_taken(
    conn: asyncpg.Connection,
    table: str,
    column: str,
    scope_column: str,
    scope: str,
    name: str,
    id_column: str,
    except_id: str | None,
) -> bool:
    """Whether a live row of the scope other than ``except_id`` has that name."""
    taken: bool = await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {scope_column} = $1 AND NOT is_deleted "
        f"AND {_name_of(column)} = $2 AND {id_column} IS DISTINCT FROM $3)",
        scope,
        name,
        except_id,
    )
    return taken


async def next_position(
    conn: asyncpg.Connection, table: str, parent_column: str, parent: str
) -> int:
    """The tree position after the parent's last child (deleted ones included, as legacy
    appends to the stored array). The caller holds the workspace lock."""
    position: int = await conn.fetchval(
        f"SELECT coalesce(max(tree_position) + 1, 0) FROM {table} WHERE {parent_column} = $1",
        parent,
    )
    return position


async def touch_workspace(conn: asyncpg.Connection, call: Call, workspace_id: str) -> None:
    """Stamp the workspace as changed by the caller (legacy does on every tree edit)."""
    await conn.execute(
        "UPDATE workspaces SET updated_by = $2, updated_at = $3, synced_at = now() "
        "WHERE workspace_id = $1",
        workspace_id,
        call.caller.user_id,
        call.now,
    )


async def drop_dependencies(conn: asyncpg.Connection, workflow_ids: Sequence[str]) -> list[str]:
    """Remove deleted workflows from every job's dependency list, closing the gaps in each
    list's positions; returns the workspaces whose documents changed."""
    if not workflow_ids:
        return []
    rows = await conn.fetch(
        "DELETE FROM workflow_dependencies WHERE workflow_id = ANY($1::text[]) RETURNING job_id",
        list(workflow_ids),
    )
    jobs = sorted({row["job_id"] for row in rows})
    if not jobs:
        return []
    await conn.execute(
        "UPDATE workflow_dependencies d SET position = ranked.position FROM ("
        "  SELECT job_id, workflow_id, row_number() OVER (PARTITION BY job_id ORDER BY position)"
        "         - 1 AS position FROM workflow_dependencies WHERE job_id = ANY($1::text[])"
        ") ranked WHERE d.job_id = ranked.job_id AND d.workflow_id = ranked.workflow_id "
        "AND d.position <> ranked.position",
        jobs,
    )
    workspaces = await conn.fetch(
        "SELECT DISTINCT workspace_id FROM jobs WHERE job_id = ANY($1::text[])", jobs
    )
    return sorted(row["workspace_id"] for row in workspaces)


async def cascade_delete(
    conn: asyncpg.Connection, now: datetime, *, workspace_id: str, folder_id: str | None = None,
    job_id: str | None = None,
) -> list[str]:  # fmt: skip
    """Soft-delete everything below a workspace, folder or job (not the node itself).

    Returns the ids of the workflows deleted, whose dependency entries the caller drops."""
    if job_id is not None:
        scope, value = "job_id", job_id
    elif folder_id is not None:
        scope, value = "folder_id", folder_id
    else:
        scope, value = "workspace_id", workspace_id
    if scope != "job_id":
        if scope == "workspace_id":
            await conn.execute(
                "UPDATE folders SET is_deleted = true, deleted_at = $2, synced_at = now() "
                "WHERE workspace_id = $1 AND NOT is_deleted",
                value,
                now,
            )
        await conn.execute(
            f"UPDATE jobs SET is_deleted = true, deleted_at = $2, synced_at = now() "
            f"WHERE {scope} = $1 AND NOT is_deleted",
            value,
            now,
        )
    entry_scope = (
        "job_id = $1"
        if scope == "job_id"
        else f"job_id IN (SELECT job_id FROM jobs WHERE {scope} = $1)"
        if scope == "folder_id"
        else "workspace_id = $1"
    )
    await conn.execute(
        f"UPDATE workflow_tree_entries SET is_deleted = true, synced_at = now() "
        f"WHERE {entry_scope} AND NOT is_deleted",
        value,
    )
    rows = await conn.fetch(
        f"UPDATE workflows SET is_deleted = true, deleted_at = $2, synced_at = now() "
        f"WHERE {scope} = $1 AND workspace_id = $3 AND NOT is_deleted RETURNING workflow_id",
        value,
        now,
        workspace_id,
    )
    return [row["workflow_id"] for row in rows]


async def queue_documents(
    conn: asyncpg.Connection,
    subscription_id: str,
    collection: str,
    operation: str,
    legacy_ids: Iterable[str],
    activity: dict[str, Any] | None = None,
) -> None:
    """Outbox rows for legacy documents this write changed: the reverse sync rebuilds each
    one from the rows. The write's activity entry rides on the first of them."""
    for legacy_id in dict.fromkeys(legacy_ids):
        payload: dict[str, Any] = {"activity": activity} if activity is not None else {}
        await record_outbox(
            conn, subscription_id, DOCUMENT_ENTITIES[collection], legacy_id, operation, payload
        )
        activity = None


Records = list[asyncpg.Record]
# Visible folders, jobs, dependency lists by job id, workflow summaries.
Tree = tuple[Records, Records, dict[str, list[str]], Records]


async def fetch_tree(
    conn: asyncpg.Connection, workspace_id: str, *, folder_id: str | None = None,
    job_id: str | None = None,
) -> Tree:  # fmt: skip
    """The visible folders, jobs, dependency lists and workflow summaries of a workspace
    (or of one folder or job in it), each in tree order."""
    folders = await conn.fetch(
        f"SELECT {FOLDER_COLUMNS} FROM folders WHERE workspace_id = $1 AND NOT is_deleted "
        "AND ($2::text IS NULL OR folder_id = $2) "
        "ORDER BY tree_position NULLS LAST, folder_id",
        workspace_id,
        folder_id,
    )
    jobs = await conn.fetch(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE workspace_id = $1 AND NOT is_deleted "
        "AND ($2::text IS NULL OR folder_id = $2) AND ($3::text IS NULL OR job_id = $3) "
        "ORDER BY folder_id, tree_position NULLS LAST, job_id",
        workspace_id,
        folder_id,
        job_id,
    )
    job_ids = [job["job_id"] for job in jobs]
    summaries = await conn.fetch(
        "SELECT job_id, workflow_id, workflow_name, extra FROM workflow_tree_entries "
        "WHERE job_id = ANY($1::text[]) AND NOT is_deleted ORDER BY job_id, tree_position",
        job_ids,
    )
    return list(folders), list(jobs), await job_dependencies(conn, job_ids), list(summaries)


def without_kept(extra: Any, fields: Sequence[str]) -> dict[str, Any]:
    """``extra`` without what backfill kept for ``fields`` (values it could not read,
    names it renamed): a write has just set those fields, so their stored form is current."""
    values = dict(json.loads(extra) if isinstance(extra, str) else (extra or {}))
    for kept in ("$unreadable", "$renamed"):
        remaining = {k: v for k, v in (values.pop(kept, None) or {}).items() if k not in fields}
        if remaining:
            values[kept] = remaining
    return values
