"""What the new side writes, carried back by the reverse sync, is what legacy itself writes.

The same edits go to the emulator and to the new side (same clock, same minted ids). The
new side's outbox rows are then applied by the reverse sync (the tree's specs) into an
empty legacy store: the workspace, workflow and workflow_versions documents it rebuilds,
and the userActivity entries, must equal the emulator's own, except where the new side
differs on purpose (updates bump ``version``; the emulator's copy is given the bumped
value, as the reverse sync gives it in production)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
from tree_handler_support import SECRET, Sides, Tenant

from legacy_emulator.app import create_app
from migrators.origin import ORIGIN_FIELD
from migrators.registry import default_registry
from migrators.reverse import apply_pending
from migrators.spec import MappingContext
from strangler.mongo import Database, open_database

WS, WF = "/workspace", "/workflow"
_SKIPPED = ("_id", ORIGIN_FIELD)


def _comparable(document: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in document.items() if key not in _SKIPPED}


async def _documents(db: Database, collection: str, key: str) -> dict[Any, dict[str, Any]]:
    return {
        (document.get(key), document.get("version_number"), document.get("change_type")): (
            _comparable(document)
        )
        async for document in db[collection].find({})
    }


async def _edits(sides: Sides, tenant: Tenant) -> None:
    """Tree edits of every kind, each sent to both sides."""
    ws = (
        await sides.same(
            "POST", f"{WS}/addWorkspace", tenant, body={"workspace_name": "Ops", "description": "x"}
        )
    )["data"]["workspace_id"]
    sides.advance(1)
    fd = (
        await sides.same(
            "POST",
            f"{WS}/addFolder",
            tenant,
            body={"workspace_id": ws, "folder_name": "a", "description": "first"},
        )
    )["data"]["folder_id"]
    spare = (
        await sides.same(
            "POST", f"{WS}/addFolder", tenant, body={"workspace_id": ws, "folder_name": "b"}
        )
    )["data"]["folder_id"]
    sides.advance(1)
    jb = (
        await sides.same(
            "POST",
            f"{WS}/addJob",
            tenant,
            body={"workspace_id": ws, "folder_id": fd, "job_name": "j", "environment": "prod"},
        )
    )["data"]["job_id"]
    flows = []
    for name in ("copy", "load"):
        sides.advance(1)
        added = await sides.same(
            "POST", f"{WF}/addWorkflow", tenant,
            body={"workspace_id": ws, "folder_id": fd, "job_id": jb, "workflow_name": name,
                  "workFlowDiagram": '{"nodes": [{"id": 1}], "edges": []}', "tags": ["x"],
                  "parameters": {"rows": 10}, "notification": {"on_failure": True}},
        )  # fmt: skip
        flows.append(added["data"]["workflow_id"])
    sides.advance(1)
    await sides.same(
        "POST",
        f"{WS}/updateJob",
        tenant,
        body={
            "workspace_id": ws,
            "folder_id": fd,
            "job_id": jb,
            "workflow_dependency": [flows[1]],
            "description": "deps",
        },
    )
    await sides.same(
        "POST",
        f"{WS}/updateFolder",
        tenant,
        body={"workspace_id": ws, "folder_id": fd, "folder_name": "a2"},
    )
    await sides.same(
        "POST", f"{WS}/updateWorkspace", tenant, body={"workspace_id": ws, "workspace_name": "Ops2"}
    )
    result, _, new = await sides.compare(
        "POST", f"{WF}/updateWorkflow", tenant,
        body={"workflow_id": flows[0], "workflow_name": "copy all", "workFlowDiagram": "broken {"},
    )  # fmt: skip
    assert new.status == 200 and result.kind.value == "expected"
    bumped = new.json()["data"]["version"]
    await sides.db["workflow"].update_one({"workflow_id": flows[0]}, {"$set": {"version": bumped}})
    await sides.db["userActivity"].update_one(
        {"object_id": flows[0], "action": "updated"}, {"$set": {"current_data.version": bumped}}
    )
    sides.advance(1)
    await sides.same(
        "POST", f"{WF}/checkOut", tenant, body={"workflow_id": flows[1], "comment": "mine"}
    )
    sides.advance(1)
    await sides.same(
        "POST", f"{WF}/checkIn", tenant, body={"workflow_id": flows[1], "comment": "done"}
    )
    await sides.same(
        "POST", f"{WS}/deleteFolder", tenant, body={"workspace_id": ws, "folder_id": spare}
    )


async def test_reverse_sync_of_new_side_writes_gives_legacy_documents(
    fresh_sides: Sides, tenant: Tenant
) -> None:
    sides = fresh_sides
    await _edits(sides, tenant)
    behind = open_database(f"memory://tree-new-side-behind-{secrets.token_hex(4)}")
    registry = default_registry()
    for name in ("workflows", "workspaces", "workflow_versions"):
        result = await apply_pending(sides.pool, behind, registry.get(name), MappingContext())
        assert result.failed == 0, result.errors
        assert result.applied > 0
    for collection, key in (
        ("workspace", "workspace_id"), ("workflow", "workflow_id"),
        ("workflow_versions", "workflow_id"),
    ):  # fmt: skip
        wanted = await _documents(sides.db, collection, key)
        assert await _documents(behind, collection, key) == wanted, collection
    order = ("object_type", "action", "object_id")

    async def activity(db: Database) -> list[dict[str, Any]]:
        entries = [_comparable(a) async for a in db["userActivity"].find({})]
        return sorted(entries, key=lambda a: [str(a[k]) for k in order])

    assert await activity(behind) == await activity(sides.db)


async def test_switching_back_to_legacy_after_cascades_shows_what_the_new_side_showed(
    fresh_sides: Sides, tenant: Tenant
) -> None:
    """Deletes that cascade and prune dependency lists, written by the new side only, then
    carried back: legacy serving the rebuilt documents answers every read as the new side
    did (the lists it now holds are the pruned ones; what the new side hid, it hides)."""
    sides = fresh_sides

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await sides.call_new("POST", path, tenant, body=body)
        assert response.status in (200, 201), response.body
        data: dict[str, Any] = response.json()["data"]
        return data

    ws = (await post(f"{WS}/addWorkspace", {"workspace_name": "w"}))["workspace_id"]
    folders, jobs, flows = [], [], []
    for f in range(2):
        folders.append(
            (await post(f"{WS}/addFolder", {"workspace_id": ws, "folder_name": f"f{f}"}))[
                "folder_id"
            ]
        )
        for j in range(2):
            job = await post(
                f"{WS}/addJob", {"workspace_id": ws, "folder_id": folders[-1], "job_name": f"j{j}"}
            )
            jobs.append((folders[-1], job["job_id"]))
            for n in range(2):
                flow = await post(
                    f"{WF}/addWorkflow",
                    {
                        "workspace_id": ws,
                        "folder_id": folders[-1],
                        "job_id": job["job_id"],
                        "workflow_name": f"w{n}",
                    },
                )
                flows.append(flow["workflow_id"])
    folder, job = jobs[3]
    await post(
        f"{WS}/updateJob",
        {"workspace_id": ws, "folder_id": folder, "job_id": job, "workflow_dependency": flows},
    )
    await post(
        f"{WF}/updateWorkflow", {"workflow_id": flows[0], "description": "edited", "version": 1}
    )
    await post(f"{WF}/checkOut", {"workflow_id": flows[1]})
    await post(f"{WF}/checkIn", {"workflow_id": flows[1], "comment": "c"})
    await post(f"{WF}/deleteWorkflow", {"workflow_id": flows[2]})
    await post(
        f"{WS}/deleteJob", {"workspace_id": ws, "folder_id": jobs[2][0], "job_id": jobs[2][1]}
    )
    await post(f"{WS}/deleteFolder", {"workspace_id": ws, "folder_id": folders[0]})

    behind = open_database(f"memory://tree-new-side-back-{secrets.token_hex(4)}")
    for name in ("workflows", "workspaces", "workflow_versions"):
        result = await apply_pending(
            sides.pool, behind, default_registry().get(name), MappingContext()
        )
        assert result.failed == 0, result.errors
    app = create_app(behind, jwt_secret=SECRET)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://legacy") as client:
        back = Sides(client, sides.registry, behind, sides.pool, sides.clock)
        tree = await back.same("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": ws})
        remaining = tree["data"]["folders"]
        assert [f["folder_id"] for f in remaining] == [folders[1]]
        assert [j["job_id"] for j in remaining[0]["jobs"]] == [job]
        assert remaining[0]["jobs"][0]["workflow_dependency"] == flows[6:]
        await back.same("GET", f"{WS}/getAllWorkspace", tenant)
        await back.same("GET", f"{WF}/getWorkflows", tenant, {"workspace_id": ws, "per_page": 100})
        for workflow_id in flows:
            await back.same("GET", f"{WF}/getWorkflow", tenant, {"workflow_id": workflow_id})
            await back.same("GET", f"{WF}/getVersions", tenant, {"workflow_id": workflow_id})
        for _, job_id in jobs:
            await back.same("GET", f"{WF}/getWorkflows", tenant, {"job_id": job_id})
