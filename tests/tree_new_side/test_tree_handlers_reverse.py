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

from tree_handler_support import Sides, Tenant

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
