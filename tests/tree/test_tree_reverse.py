"""The reverse sync of the tree: outbox rows of the workspace and workflow entities rebuild
the nested legacy documents from the rows, as the legacy emulator itself writes them."""

from __future__ import annotations

import secrets
from typing import Any

import asyncpg
import httpx
from bson import ObjectId
from tree_support import SUBSCRIPTION, WORKFLOWS, WORKSPACES, backfill_tree, with_tenant

from legacy_emulator.app import create_app
from legacy_emulator.generator import seed_store
from migrators.backfill import legacy_id_of, read_version
from migrators.origin import ORIGIN_FIELD
from migrators.registry import default_registry
from migrators.reverse import apply_pending
from migrators.writer import SourceItem, write_batch
from strangler.mongo import Database, open_database
from strangler.tokens import mint_token

SECRET = "tree-reverse-test-secret-0123456789abcdef"


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in ("_id", ORIGIN_FIELD)}


async def _edit_through_the_emulator(db: Database, subscription_id: str, user_id: str) -> str:
    """Tree edits of one workspace as legacy makes them; returns the workspace id."""
    workspace = await db["workspace"].find_one(
        {"subscription_id": subscription_id, "d_flag": False}
    )
    workspace_id: str = workspace["workspace_id"]
    headers = {"Authorization": f"Bearer {mint_token(SECRET, user_id, subscription_id)}"}
    transport = httpx.ASGITransport(app=create_app(db, jwt_secret=SECRET))
    async with httpx.AsyncClient(transport=transport, base_url="http://legacy") as client:

        async def call(path: str, **body: Any) -> dict[str, Any]:
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code in (200, 201), response.text
            data: dict[str, Any] = response.json()["data"]
            return data

        folder = await call("/workspace/addFolder", workspace_id=workspace_id, folder_name="New")
        job = await call(
            "/workspace/addJob",
            workspace_id=workspace_id,
            folder_id=folder["folder_id"],
            job_name="Hourly",
        )
        flow = await call(
            "/workflow/addWorkflow",
            workspace_id=workspace_id,
            folder_id=folder["folder_id"],
            job_id=job["job_id"],
            workflow_name="Copy",
            workFlowDiagram='{"nodes": [], "edges": []}',
        )
        await call(
            "/workspace/updateJob",
            workspace_id=workspace_id,
            folder_id=folder["folder_id"],
            job_id=job["job_id"],
            workflow_dependency=[flow["workflow_id"]],
        )
        await call(
            "/workflow/updateWorkflow", workflow_id=flow["workflow_id"], workflow_name="Copy all"
        )
        first = workspace["folders"][0]
        await call(
            "/workspace/updateFolder",
            workspace_id=workspace_id,
            folder_id=first["folder_id"],
            description="renamed by the test",
        )
        await call(
            "/workspace/deleteFolder", workspace_id=workspace_id, folder_id=folder["folder_id"]
        )
    return workspace_id


async def test_reverse_sync_rebuilds_the_documents_the_emulator_wrote(pg, database_url, ctx):
    edited_store = open_database(f"memory://tree-rev-a-{secrets.token_hex(4)}")
    behind_store = open_database(f"memory://tree-rev-b-{secrets.token_hex(4)}")
    seeded = await seed_store(edited_store, scale="small", dirty=0.0, seed=13)
    await seed_store(behind_store, scale="small", dirty=0.0, seed=13)
    await backfill_tree(behind_store, pg, ctx)
    subscription_id, user_id = seeded.tenants[0]
    workspace_id = await _edit_through_the_emulator(edited_store, subscription_id, user_id)

    # The rows as the new side holds them after the same edits, and their outbox rows.
    changed_workflows = [
        d async for d in edited_store["workflow"].find({"workspace_id": workspace_id})
    ]
    workspace = await edited_store["workspace"].find_one({"workspace_id": workspace_id})
    version = read_version()  # after the backfill's reads, so newer
    for spec, documents in ((WORKFLOWS, changed_workflows), (WORKSPACES, [workspace])):
        items = [SourceItem(legacy_id_of(spec, d), d, version) for d in documents]
        await write_batch(pg, spec, items, ctx=ctx)
        await pg.executemany(
            "INSERT INTO migration_outbox (subscription_id, entity, legacy_id, operation, "
            "payload) VALUES ($1, $2, $3, 'update', '{}')",
            [(subscription_id, spec.name, legacy_id_of(spec, d)) for d in documents],
        )
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        for spec in (WORKFLOWS, WORKSPACES):
            result = await apply_pending(pool, behind_store, spec, ctx)
            assert result.failed == 0, result.errors
        again = await apply_pending(pool, behind_store, WORKSPACES, ctx)
    finally:
        await pool.close()
    assert again.applied == 0
    for collection in ("workspace", "workflow"):
        wanted = {
            legacy_id_of(WORKSPACES if collection == "workspace" else WORKFLOWS, d): _comparable(d)
            async for d in edited_store[collection].find({})
        }
        rebuilt = {
            legacy_id_of(WORKSPACES if collection == "workspace" else WORKFLOWS, d): _comparable(d)
            async for d in behind_store[collection].find({})
        }
        assert rebuilt == wanted, collection
    written = await behind_store["workspace"].find_one({"workspace_id": workspace_id})
    assert written[ORIGIN_FIELD]["by"] == "reverse-sync"


async def test_a_version_written_on_the_new_side_lands_under_its_object_id(pg, database_url, ctx):
    await with_tenant(pg)
    versions = default_registry().get("workflow_versions")
    minted = ObjectId()  # the new side mints version ids as legacy's _id would be
    entry = {
        "_id": minted,
        "workflow_id": "wf_00000000000c",
        "version_number": 2,
        "change_type": "check_in",
        "comment": "ship it",
        "created_by": "usr_0000000000aa",
        "workflow_snapshot": {"workflow_id": "wf_00000000000c", "subscription_id": SUBSCRIPTION},
    }
    await write_batch(pg, versions, [SourceItem(str(minted), entry, 1)], ctx=ctx)
    await pg.execute(
        "INSERT INTO migration_outbox (subscription_id, entity, legacy_id, operation, payload) "
        "VALUES ($1, 'workflow_versions', $2, 'insert', '{}')",
        SUBSCRIPTION,
        str(minted),
    )
    store = open_database(f"memory://tree-rev-v-{secrets.token_hex(4)}")
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        for _ in range(2):  # applying again replaces, never duplicates
            await pg.execute("UPDATE migration_outbox SET applied_at = NULL")
            result = await apply_pending(pool, store, versions, ctx)
            assert (result.applied, result.failed) == (1, 0)
    finally:
        await pool.close()
    stored = await store["workflow_versions"].find({}).to_list(None)
    assert len(stored) == 1 and stored[0]["_id"] == minted
    assert _comparable(stored[0]) == {**_comparable(entry), "created_at": None}
