"""The forward sync of the tree: edits made through the legacy emulator (whole-document
rewrites) reach the rows through the polling feed (touched ids and the sweep), and change
events on the workspace and workflow collections through the change-stream feed."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import redis.asyncio as aioredis
from tree_support import (
    WORKFLOWS,
    WORKSPACES,
    backfill_tree,
    diagram,
    edited,
    row_versions,
    rows_of,
    with_tenant,
    workspace_doc,
)

from legacy_emulator.app import create_app
from legacy_emulator.generator import seed_store
from migrators.feeds.change_stream import ChangeStreamFeed
from migrators.feeds.event_log import EventLog
from migrators.feeds.polling import PollingFeed
from migrators.feeds.sweep import Sweeper
from migrators.registry import default_registry
from migrators.spec import EntitySpec, MappingContext
from migrators.sync import SyncOptions, SyncWorker
from migrators.touched import TouchedReader, record_touched
from migrators.verify import verify_entity
from strangler.mongo import Database
from strangler.tokens import mint_token

SECRET = "tree-sync-test-secret-0123456789abcdef"
OPTIONS = SyncOptions(batch_size=100, standby_poll_seconds=0.05)


class _Reader(TouchedReader):
    """BLOCK 0 means "forever" to Redis; the feed means "do not wait"."""

    async def read(self, count: int, block_ms: int) -> Any:
        return await super().read(count, block_ms or 1)


async def _poll_once(
    spec: EntitySpec, db: Database, url: str, ctx: MappingContext, redis: Any, prefix: str
) -> SyncWorker:
    collection = db[spec.collection]

    def feed(conn: Any) -> PollingFeed:
        sweeper = Sweeper(
            spec, collection, ctx, buckets=4, buckets_per_round=4, id_column=spec.legacy_id_column
        )
        reader = _Reader(redis, spec.name, prefix=prefix)
        return PollingFeed(spec, collection, reader, sweeper, conn, sweep_interval=0.0, block_ms=10)

    worker = SyncWorker(spec, feed, url, ctx, options=OPTIONS)
    await worker.run(once=True)
    return worker


async def test_tree_edits_through_the_emulator_reach_the_rows_by_polling(
    legacy_db, pg, database_url, ctx, redis_url
):
    seeded = await seed_store(legacy_db, scale="small", dirty=0.0, seed=11)
    await backfill_tree(legacy_db, pg, ctx)
    subscription_id, user_id = seeded.tenants[0]
    workspace = await legacy_db["workspace"].find_one(
        {"subscription_id": subscription_id, "d_flag": False}
    )
    workspace_id = workspace["workspace_id"]
    headers = {"Authorization": f"Bearer {mint_token(SECRET, user_id, subscription_id)}"}
    app = create_app(legacy_db, jwt_secret=SECRET)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://legacy") as client:

        async def call(path: str, **body: Any) -> dict[str, Any]:
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code in (200, 201), response.text
            data: dict[str, Any] = response.json()["data"]
            return data

        folder = await call("/workspace/addFolder", workspace_id=workspace_id, folder_name="Sync")
        job = await call(
            "/workspace/addJob",
            workspace_id=workspace_id,
            folder_id=folder["folder_id"],
            job_name="Nightly",
            environment="prod",
        )
        added = [
            await call(
                "/workflow/addWorkflow",
                workspace_id=workspace_id,
                folder_id=folder["folder_id"],
                job_id=job["job_id"],
                workflow_name=f"Load {n}",
                workFlowDiagram=diagram(3),
            )
            for n in range(2)
        ]
        order = [w["workflow_id"] for w in reversed(added)]
        await call(
            "/workspace/updateJob",
            workspace_id=workspace_id,
            folder_id=folder["folder_id"],
            job_id=job["job_id"],
            workflow_dependency=order,
        )
        await call(
            "/workflow/updateWorkflow",
            workflow_id=added[0]["workflow_id"],
            workflow_name="Load renamed",
        )
    redis = aioredis.from_url(redis_url)
    prefix = f"test:{secrets.token_hex(4)}:"
    try:
        await record_touched(redis, "workspaces", [workspace_id], prefix=prefix)
        await record_touched(redis, "workflows", [w["workflow_id"] for w in added], prefix=prefix)
        # A write that bypassed the proxy: only the sweep can find it.
        other = await legacy_db["workspace"].find_one(
            {"workspace_id": {"$ne": workspace_id}, "folders.0.jobs.0": {"$exists": True}}
        )
        other["folders"][0]["jobs"][0]["description"] = "edited by a script"
        await legacy_db["workspace"].replace_one({"_id": other["_id"]}, other)
        for spec in (WORKFLOWS, WORKSPACES):
            await _poll_once(spec, legacy_db, database_url, ctx, redis, prefix)
    finally:
        await redis.aclose()
    for spec in (WORKFLOWS, WORKSPACES):
        report = await verify_entity(legacy_db, pg, spec, ctx)
        assert report.clean, report.lines()
    rows = await rows_of(pg, workspace_id)
    assert [
        d["workflow_id"]
        for d in sorted(rows["workflow_dependencies"], key=lambda d: d["position"])
        if d["job_id"] == job["job_id"]
    ] == order
    entries = [e for e in rows["workflow_tree_entries"] if e["job_id"] == job["job_id"]]
    assert {e["workflow_name"] for e in entries} == {"Load renamed", "Load 1"}
    edited_job = (await rows_of(pg, other["workspace_id"]))["jobs"]
    assert "edited by a script" in {j["description"] for j in edited_job}


async def test_change_events_of_both_collections_apply_and_a_rewrite_touches_one_row(
    legacy_db, pg, database_url, ctx
):
    await with_tenant(pg)
    workspaces = EventLog(legacy_db["workspace"], id_field="workspace_id")
    workflows = EventLog(legacy_db["workflow"], id_field="workflow_id")
    logs = {WORKSPACES.name: workspaces, WORKFLOWS.name: workflows}

    async def sync(spec: EntitySpec) -> SyncWorker:
        log = logs[spec.name]
        worker = SyncWorker(
            spec, lambda _c: ChangeStreamFeed(spec, log), database_url, ctx, options=OPTIONS
        )
        await worker.run(once=True)
        return worker

    for spec in (WORKFLOWS, WORKSPACES):
        await sync(spec)  # the feeds store where they start
    document = workspace_doc(n=4)
    await workspaces.insert(document)
    summary = document["folders"][0]["jobs"][0]["workflows"][0]
    workflow = {
        "workflow_id": summary["workflow_id"],
        "workspace_id": document["workspace_id"],
        "folder_id": document["folders"][0]["folder_id"],
        "job_id": document["folders"][0]["jobs"][0]["job_id"],
        "subscription_id": document["subscription_id"],
        "workflow_name": "Load 0",
        "workFlowDiagram": summary["workFlowDiagram"],
        "version": 1,
        "d_flag": False,
    }
    await workflows.insert(workflow)
    await workflows.update(workflow["workflow_id"], {"version": "2", "description": "edited"})
    for spec in (WORKFLOWS, WORKSPACES):
        assert (await sync(spec)).events_applied == len(logs[spec.name].events)
    before = await row_versions(pg, document["workspace_id"])

    def retire(doc: dict[str, Any]) -> None:
        doc["folders"][1]["jobs"][0]["d_flag"] = True
        doc["folders"][1]["jobs"][0]["reason_to_delete"] = "replaced"

    await workspaces.replace(edited(document, retire))  # legacy's whole-document rewrite
    await sync(WORKSPACES)
    after = await row_versions(pg, document["workspace_id"])
    assert {k for k in before if before[k] != after[k]} == {
        f"jobs:{document['folders'][1]['jobs'][0]['job_id']}",
        f"workspaces:{document['workspace_id']}",
    }
    for spec in (WORKFLOWS, WORKSPACES):
        report = await verify_entity(legacy_db, pg, spec, ctx)
        assert report.clean, report.lines()
    stored = await pg.fetchrow(
        "SELECT version, description FROM workflows WHERE workflow_id = $1",
        workflow["workflow_id"],
    )
    assert (stored["version"], stored["description"]) == (2, "edited")


async def test_history_written_behind_the_proxy_is_found_by_the_sweep(
    legacy_db, pg, database_url, ctx, redis_url
):
    await seed_store(legacy_db, scale="small", dirty=0.0, seed=17)
    await backfill_tree(legacy_db, pg, ctx)
    registry = default_registry()
    versions, backups = registry.get("workflow_versions"), registry.get("workflow_backups")
    entry = await legacy_db["workflow_versions"].find_one({})
    copied = {k: v for k, v in entry.items() if k != "_id"}
    await legacy_db["workflow_versions"].insert_one({**copied, "comment": "checked in by a script"})
    backup = await legacy_db["workflowBkp"].find_one({})
    await legacy_db["workflowBkp"].delete_one({"_id": backup["_id"]})
    redis = aioredis.from_url(redis_url)
    prefix = f"test:{secrets.token_hex(4)}:"
    try:
        for spec in (versions, backups):
            await _poll_once(spec, legacy_db, database_url, ctx, redis, prefix)
    finally:
        await redis.aclose()
    for spec in (versions, backups):
        report = await verify_entity(legacy_db, pg, spec, ctx)
        assert report.clean, report.lines()
    comments = await pg.fetchval(
        "SELECT count(*) FROM workflow_versions WHERE comment = 'checked in by a script'"
    )
    assert comments == 1
    assert not await pg.fetchval(
        "SELECT count(*) FROM workflow_backups WHERE backup_id = $1", str(backup["_id"])
    )


async def test_a_version_naming_no_tenant_sweeps_as_current_and_applies_once_its_workflow_does(
    legacy_db, pg, ctx
):
    """The tenant a version takes from its workflow is not the mapping's: the sweep must not
    see it as a difference, yet must re-apply a version quarantined for want of a workflow."""
    await seed_store(legacy_db, scale="small", dirty=0.0, seed=17)
    versioned = await legacy_db["workflow_versions"].find_one({})
    late = await legacy_db["workflow"].find_one({"workflow_id": versioned["workflow_id"]})
    await legacy_db["workflow"].delete_one({"_id": late["_id"]})
    async for entry in legacy_db["workflow_versions"].find({}):
        await legacy_db["workflow_versions"].update_one(
            {"_id": entry["_id"]}, {"$set": {"workflow_snapshot": {"comment_only": True}}}
        )
    await backfill_tree(legacy_db, pg, ctx)
    versions = default_registry().get("workflow_versions")
    waiting = await legacy_db["workflow_versions"].count_documents(
        {"workflow_id": late["workflow_id"]}
    )
    quarantined = await pg.fetchval(
        "SELECT count(*) FROM migration_quarantine WHERE entity = 'workflow_versions' "
        "AND reason LIKE 'unknown_workflow%' AND resolved_at IS NULL"
    )
    assert quarantined == waiting > 0
    sweeper = Sweeper(
        versions, legacy_db["workflow_versions"], ctx, buckets=4, buckets_per_round=4,
        id_column=versions.legacy_id_column,
    )  # fmt: skip
    differing = (await sweeper.run_round(pg, 0)).differing_ids
    # only the versions still waiting for their workflow differ (mapped vs quarantined)
    assert len(differing) == waiting
    await legacy_db["workflow"].insert_one(late)
    # the workflow arrives; re-reading the ids the sweep named applies its versions
    await backfill_tree(legacy_db, pg, ctx)
    assert (await sweeper.run_round(pg, 0)).differing_ids == []
    tenants = await pg.fetch(
        "SELECT DISTINCT subscription_id FROM workflow_versions WHERE workflow_id = $1",
        late["workflow_id"],
    )
    assert [r[0] for r in tenants] == [late["subscription_id"]]
