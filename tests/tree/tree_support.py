"""Helpers of the tree tests: a clean workspace document, applying documents through the
batch writer, and reading back what PostgreSQL holds of one workspace."""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any

import asyncpg

from migrators.backfill import backfill_entity, read_version
from migrators.registry import default_registry
from migrators.spec import Document, EntitySpec, MappingContext
from migrators.tree_apply import load_rows
from migrators.writer import BatchResult, SourceItem, write_batch
from schema.tenancy import ensure_subscription, enter_sync

# What the tree refers to, then the tree itself, in migration order.
MIGRATED = ("subscriptions", "users", "connectors", "workflows", "workspaces",
            "workflow_versions", "workflow_backups")  # fmt: skip
WORKSPACES: EntitySpec = default_registry().get("workspaces")
WORKFLOWS: EntitySpec = default_registry().get("workflows")
SUBSCRIPTION = "sub_0000000000aa"
USER = "usr_0000000000aa"
TREE_TABLES = ("folders", "jobs", "workflow_dependencies", "workflow_tree_entries")
CREATED = datetime(2026, 3, 1, 12, 0, 0)


def diagram(nodes: int, filler: int = 0) -> str:
    shape = {
        "nodes": [
            {
                "id": f"n{i}",
                "type": "transform",
                "label": f"Step {i}",
                "position": {"x": i * 10, "y": 5},
                "config": {"sql": "x" * filler},
            }
            for i in range(nodes)
        ],
        "edges": [
            {"id": f"e{i}", "source": f"n{i}", "target": f"n{i + 1}"} for i in range(nodes - 1)
        ],
    }
    return json.dumps(shape, separators=(",", ":"))


def workspace_doc(
    n: int = 1, *, folders: int = 2, jobs: int = 2, workflows: int = 2, filler: int = 0
) -> Document:
    """A clean workspace as legacy stores it: every folder, job and summary filled."""
    workspace_id = f"ws_{n:012x}"
    tree = []
    for f in range(folders):
        folder_jobs = []
        for j in range(jobs):
            job_id = f"jb_{n:06x}{f:03x}{j:03x}"
            summaries = [
                {
                    "workflow_id": f"wf_{n:04x}{f:03x}{j:02x}{w:03x}",
                    "workflow_name": f"Load {w}",
                    "d_flag": False,
                    "workFlowDiagram": diagram(4, filler),
                }
                for w in range(workflows)
            ]
            folder_jobs.append(
                {
                    "job_id": job_id,
                    "job_name": f"Job {j}",
                    "description": "scheduled job",
                    "environment": "prod",
                    "created_by": USER,
                    "created_at": CREATED,
                    "d_flag": False,
                    "reason_to_delete": None,
                    "workflow_dependency": [s["workflow_id"] for s in summaries],
                    "workflows": summaries,
                }
            )
        tree.append(
            {
                "folder_id": f"fd_{n:08x}{f:04x}",
                "folder_name": f"Daily {f}",
                "description": None,
                "created_by": USER,
                "created_at": CREATED,
                "d_flag": False,
                "jobs": folder_jobs,
            }
        )
    return {
        "workspace_id": workspace_id,
        "workspace_name": f"Workspace {n}",
        "description": "pipelines",
        "subscription_id": SUBSCRIPTION,
        "owner_id": USER,
        "created_by": USER,
        "created_at": CREATED,
        "updated_by": USER,
        "updated_at": CREATED,
        "d_flag": False,
        "reason_to_delete": None,
        "folders": tree,
    }


def edited(document: Document, change: Any) -> Document:
    """A copy of ``document`` changed by ``change(copy)``, stamped as legacy stamps edits."""
    copied = copy.deepcopy(document)
    change(copied)
    copied["updated_at"] = datetime(2026, 3, 2, 8, 0, 0)
    return copied


async def backfill_tree(
    db: Any, conn: asyncpg.Connection, ctx: MappingContext, *, batch_size: int = 50
) -> dict[str, Any]:
    """Backfill what the tree needs and the tree; the summaries by entity."""
    registry = default_registry()
    return {
        name: await backfill_entity(db, conn, registry.get(name), ctx, batch_size=batch_size)
        for name in MIGRATED
    }


async def with_tenant(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        await enter_sync(conn)
        await ensure_subscription(conn, SUBSCRIPTION)


async def apply(
    conn: asyncpg.Connection,
    ctx: MappingContext,
    documents: list[Document | tuple[str, None]],
    *,
    spec: EntitySpec = WORKSPACES,
    version: int | None = None,
) -> BatchResult:
    stamp = read_version() if version is None else version
    items = [
        SourceItem(d[0], None, stamp)
        if isinstance(d, tuple)
        else SourceItem(d[spec.id_field], d, stamp)
        for d in documents
    ]
    return await write_batch(conn, spec, items, ctx=ctx)


async def rows_of(conn: asyncpg.Connection, workspace_id: str) -> dict[str, Any]:
    async with conn.transaction():
        await enter_sync(conn)
        return (await load_rows(conn, WORKSPACES, [workspace_id])).get(workspace_id, {})


async def row_versions(conn: asyncpg.Connection, workspace_id: str) -> dict[str, str]:
    """xmin of every row of one workspace's tree, keyed by table and row: what an apply
    rewrote shows as a changed xmin."""
    found: dict[str, str] = {}
    async with conn.transaction():
        await enter_sync(conn)
        for r in await conn.fetch(
            "SELECT 'workspaces:' || workspace_id AS k, xmin::text AS x FROM workspaces "
            "WHERE workspace_id = $1 UNION ALL "
            "SELECT 'folders:' || folder_id, xmin::text FROM folders WHERE workspace_id = $1 "
            "UNION ALL SELECT 'jobs:' || job_id, xmin::text FROM jobs WHERE workspace_id = $1 "
            "UNION ALL SELECT 'entries:' || id::text, xmin::text FROM workflow_tree_entries "
            "WHERE workspace_id = $1 UNION ALL "
            "SELECT 'deps:' || d.job_id || '/' || d.workflow_id, d.xmin::text "
            "FROM workflow_dependencies d JOIN jobs j USING (job_id) WHERE j.workspace_id = $1",
            workspace_id,
        ):
            found[r["k"]] = r["x"]
    return found
