"""Workspaces: the documents that hold each workspace's whole tree."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from legacy_emulator.http import ApiError, Call, created, listed, ok
from legacy_emulator.render import WORKSPACE, render, render_tree
from legacy_emulator.routes import Route
from legacy_emulator.store import (
    find_visible,
    name_taken,
    page_of,
    record_activity,
    save_workspace,
)
from strangler.contract import new_id

__all__ = ["ROUTES", "load_workspace", "touch"]

DUPLICATE = "Workspace name already exists"


async def load_workspace(call: Call, workspace_id: str) -> dict[str, Any]:
    return await find_visible(
        call.emulator.workspaces,
        "workspace_id",
        workspace_id,
        call.caller.subscription_id,
        "Workspace",
    )


def touch(call: Call, workspace: dict[str, Any]) -> None:
    """Stamp a workspace as changed by the caller, now (every edit of its tree does)."""
    workspace["updated_by"] = call.caller.user_id
    workspace["updated_at"] = call.emulator.clock()


async def _check_name(call: Call, name: str, except_id: str | None = None) -> None:
    query = {"subscription_id": call.caller.subscription_id, "workspace_name": name}
    if await name_taken(
        call.emulator.workspaces, query, id_field="workspace_id", except_id=except_id
    ):
        raise ApiError(409, DUPLICATE)


async def get_all_workspaces(call: Call) -> Response:
    documents, total = await page_of(
        call.emulator.workspaces,
        {"subscription_id": call.caller.subscription_id},
        id_field="workspace_id",
        page=call.page(),
        leave_out=("folders",),
    )
    items = [render(document, WORKSPACE) for document in documents]
    return listed("Workspaces fetched successfully", items, total)


async def get_workspace(call: Call) -> Response:
    workspace = await load_workspace(call, call.query_id("workspace_id"))
    return ok("Workspace fetched successfully", render_tree(workspace))


async def add_workspace(call: Call) -> Response:
    name = call.text("workspace_name")
    description = call.optional_text("description")
    await _check_name(call, name)
    now = call.emulator.clock()
    workspace: dict[str, Any] = {
        "workspace_id": new_id("workspace"),
        "workspace_name": name,
        "description": description,
        "subscription_id": call.caller.subscription_id,
        "owner_id": call.caller.user_id,
        "created_by": call.caller.user_id,
        "created_at": now,
        "updated_by": call.caller.user_id,
        "updated_at": now,
        "d_flag": False,
        "reason_to_delete": None,
        "folders": [],
    }
    await call.emulator.workspaces.insert_one(workspace)
    rendered = render(workspace, WORKSPACE)
    await record_activity(
        call, "created", "workspace", workspace["workspace_id"], name, current=rendered
    )
    return created("Workspace added successfully", rendered)


async def update_workspace(call: Call) -> Response:
    workspace = await load_workspace(call, call.text("workspace_id"))
    previous = render(workspace, WORKSPACE)
    if call.given("workspace_name"):
        name = call.text("workspace_name")
        await _check_name(call, name, except_id=workspace["workspace_id"])
        workspace["workspace_name"] = name
    if call.given("description"):
        workspace["description"] = call.optional_text("description")
    touch(call, workspace)
    await save_workspace(call, workspace)
    rendered = render(workspace, WORKSPACE)
    await record_activity(
        call,
        "updated",
        "workspace",
        workspace["workspace_id"],
        workspace.get("workspace_name"),
        previous=previous,
        current=rendered,
    )
    return ok("Workspace updated successfully", rendered)


async def delete_workspace(call: Call) -> Response:
    workspace = await load_workspace(call, call.text("workspace_id"))
    reason = call.optional_text("reason_to_delete")
    previous = render(workspace, WORKSPACE)
    workspace["d_flag"] = True
    workspace["reason_to_delete"] = reason
    touch(call, workspace)
    await save_workspace(call, workspace)
    await record_activity(
        call,
        "deleted",
        "workspace",
        workspace["workspace_id"],
        workspace.get("workspace_name"),
        previous=previous,
    )
    return ok("Workspace deleted successfully", {"workspace_id": workspace["workspace_id"]})


ROUTES: list[Route] = [
    ("GET", "/workspace/getAllWorkspace", get_all_workspaces),
    ("GET", "/workspace/getWorkspace", get_workspace),
    ("POST", "/workspace/addWorkspace", add_workspace),
    ("POST", "/workspace/updateWorkspace", update_workspace),
    ("POST", "/workspace/deleteWorkspace", delete_workspace),
]
