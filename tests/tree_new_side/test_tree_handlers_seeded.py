"""The new side reads a backfilled, dirty seed exactly as legacy reads the documents.

The generator's small data set with production dirt (dates as strings and epoch numbers,
``d_flag`` as strings, duplicate names, invalid or empty diagrams, stale summaries,
dangling dependencies) is seeded into the emulator and backfilled into PostgreSQL with the
tree's specs; then every read endpoint of every tenant is asked of both sides: every
workspace list page, every workspace's tree, every workspace's and job's workflow list,
every workflow and its versions."""

from __future__ import annotations

import base64
import secrets
from collections import Counter
from typing import Any

import asyncpg
import pytest
from tree_handler_support import Sides, Tenant, open_sides

from legacy_emulator.generator import seed_store
from migrators.backfill import backfill_entity
from migrators.crypto import SecretBox
from migrators.registry import default_registry
from shadow_compare.model import Verdict
from strangler.config import ConnectorKeys

WS, WF = "/workspace", "/workflow"


@pytest.fixture
async def seeded(migrated_database_url: str) -> Any:
    pool = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=4)
    try:
        async for sides in open_sides(pool):
            summary = await seed_store(sides.db, scale="small", dirty=0.05, seed=7)
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            ctx = SecretBox(ConnectorKeys.parse(f"k1:{key}", None)).context()
            async with pool.acquire() as conn:
                for spec in default_registry():
                    await backfill_entity(sides.db, conn, spec, ctx)
            yield sides, summary
    finally:
        await pool.close()


async def _compare(
    sides: Sides, tally: Counter[str], tenant: Tenant, path: str, **params: Any
) -> Any:
    result, legacy, new = await sides.compare("GET", path, tenant, params)
    regressions = [d for d in result.differences if d.verdict is Verdict.REGRESSION]
    assert not regressions, (
        f"GET {path} {params}:\n legacy {legacy.status} {legacy.body[:2000]!r}\n"
        f" new {new.status} {new.body[:2000]!r}\n"
        + "\n".join(str(d.to_json()) for d in regressions)
    )
    tally[f"{path} {legacy.status}"] += 1
    tally["expected differences"] += len(result.differences)
    return legacy.json()


async def test_every_read_of_a_dirty_seed_matches_legacy(seeded: Any) -> None:
    sides, summary = seeded
    tally: Counter[str] = Counter()
    for subscription_id, user_id in summary.tenants:
        tenant = Tenant(subscription_id, user_id)
        page, workspaces = 1, []
        while True:
            listed = await _compare(
                sides, tally, tenant, f"{WS}/getAllWorkspace", page=page, per_page=7
            )
            workspaces += [w["workspace_id"] for w in listed["data"]]
            if not listed["data"]:
                break
            page += 1
        deleted = [
            d["workspace_id"]
            async for d in sides.db["workspace"].find({"subscription_id": subscription_id})
            if d["workspace_id"] not in workspaces
        ]
        for workspace_id in workspaces + deleted:
            await _compare(sides, tally, tenant, f"{WS}/getWorkspace", workspace_id=workspace_id)
            await _compare(
                sides, tally, tenant, f"{WF}/getWorkflows", workspace_id=workspace_id, per_page=100
            )
        jobs = {
            job.get("job_id")
            async for w in sides.db["workspace"].find({"subscription_id": subscription_id})
            for folder in (w.get("folders") or [])
            if isinstance(folder, dict)
            for job in (folder.get("jobs") or [])
            if isinstance(job, dict)
        }
        for job_id in sorted(j for j in jobs if isinstance(j, str)):
            await _compare(sides, tally, tenant, f"{WF}/getWorkflows", job_id=job_id, per_page=100)
        async for workflow in sides.db["workflow"].find({"subscription_id": subscription_id}):
            workflow_id = workflow.get("workflow_id")
            await _compare(sides, tally, tenant, f"{WF}/getWorkflow", workflow_id=workflow_id)
            await _compare(
                sides, tally, tenant, f"{WF}/getVersions", workflow_id=workflow_id, per_page=100
            )
    # Every kind of answer was exercised: found, hidden (deleted above), listed.
    assert tally[f"{WS}/getWorkspace 200"] > 10 and tally[f"{WS}/getWorkspace 404"] > 0
    assert tally[f"{WF}/getWorkflow 200"] > 100 and tally[f"{WF}/getWorkflow 404"] > 0
    assert tally[f"{WF}/getVersions 200"] > 100


async def test_edits_of_a_dirty_seed_match_legacy(seeded: Any) -> None:
    """Edits of backfilled dirty rows answer as legacy's edits of the documents, and read
    back the same: what backfill kept as found (unreadable values, renamed duplicates)
    gives way to what the edit sets."""
    sides, summary = seeded
    edited = Counter[str]()
    for subscription_id, user_id in summary.tenants:
        tenant = Tenant(subscription_id, user_id)
        listed = await sides.same("GET", f"{WS}/getAllWorkspace", tenant, {"per_page": 100})
        for workspace in listed["data"][:4]:
            ws = workspace["workspace_id"]
            tree = await sides.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": ws})
            for folder in tree["data"]["folders"][:2]:
                body = {
                    "workspace_id": ws,
                    "folder_id": folder["folder_id"],
                    "description": "edited",
                }
                await sides.same("POST", f"{WS}/updateFolder", tenant, body=body)
                for job in folder["jobs"][:2]:
                    body = {
                        "workspace_id": ws,
                        "folder_id": folder["folder_id"],
                        "job_id": job["job_id"],
                        "job_name": job["job_name"],
                        "environment": "qa",
                    }
                    await sides.same("POST", f"{WS}/updateJob", tenant, body=body)
                    edited["jobs"] += 1
                    for summary_entry in job["workflows"][:2]:
                        workflow_id = summary_entry["workflow_id"]
                        body = {"workflow_id": workflow_id, "description": "edited", "tags": ["e"]}
                        result, _, new = await sides.compare(
                            "POST", f"{WF}/updateWorkflow", tenant, body=body
                        )
                        assert {(d.verdict, d.rule) for d in result.differences} <= {
                            (Verdict.EXPECTED, "update-bumps-version")
                        }, [d.to_json() for d in result.differences]
                        if new.status == 200:
                            edited["workflows"] += 1
                            version = new.json()["data"]["version"]
                            await sides.db["workflow"].update_one(
                                {"workflow_id": workflow_id}, {"$set": {"version": version}}
                            )
                            await sides.same(
                                "GET", f"{WF}/getWorkflow", tenant, {"workflow_id": workflow_id}
                            )
            await sides.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": ws})
            body = {"workspace_id": ws, "description": "edited"}
            await sides.same("POST", f"{WS}/updateWorkspace", tenant, body=body)
        await sides.same("GET", f"{WS}/getAllWorkspace", tenant, {"per_page": 100})
    assert edited["jobs"] > 10 and edited["workflows"] > 10
