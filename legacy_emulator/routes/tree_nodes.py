"""Folders and jobs: nodes inside a workspace document's tree.

Every edit reads the whole workspace document, changes it in Python and
writes the whole document back (legacy's way, and the race the migration
removes: two edits of one workspace at the same time lose one of them).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from legacy_emulator.http import ApiError, Call, created, not_found, ok
from legacy_emulator.render import render_folder, render_job
from legacy_emulator.routes import Route
from legacy_emulator.routes.workspaces import load_workspace, touch
from legacy_emulator.store import record_activity, save_workspace
from legacy_emulator.tree import ensure_children, find_child, visible_names
from strangler.contract import new_id

__all__ = ["ROUTES", "load_folder", "load_job"]

Node = dict[str, Any]


def load_folder(workspace: Node, folder_id: str) -> Node:
    folder = find_child(workspace, "folders", "folder_id", folder_id)
    if folder is None:
        raise not_found("Folder")
    return folder


def load_job(folder: Node, job_id: str) -> Node:
    job = find_child(folder, "jobs", "job_id", job_id)
    if job is None:
        raise not_found("Job")
    return job


def _check_name(parent: Node, key: str, name_field: str, name: str, current: Node | None) -> None:
    if current is not None and current.get(name_field) == name:
        return
    if name in visible_names(parent, key, name_field):
        raise ApiError(409, f"{'Folder' if key == 'folders' else 'Job'} name already exists")


async def _save(call: Call, workspace: Node) -> None:
    touch(call, workspace)
    await save_workspace(call, workspace)


# --- folders ------------------------------------------------------------------------------


async def add_folder(call: Call) -> Response:
    workspace = await load_workspace(call, call.text("workspace_id"))
    name = call.text("folder_name")
    description = call.optional_text("description")
    _check_name(workspace, "folders", "folder_name", name, None)
    folder: Node = {
        "folder_id": new_id("folder"),
        "folder_name": name,
        "description": description,
        "created_by": call.caller.user_id,
        "created_at": call.emulator.clock(),
        "d_flag": False,
        "jobs": [],
    }
    ensure_children(workspace, "folders").append(folder)
    await _save(call, workspace)
    rendered = render_folder(folder)
    await record_activity(call, "created", "folder", folder["folder_id"], name, current=rendered)
    return created("Folder added successfully", rendered)


async def update_folder(call: Call) -> Response:
    workspace = await load_workspace(call, call.text("workspace_id"))
    folder = load_folder(workspace, call.text("folder_id"))
    previous = render_folder(folder)
    if call.given("folder_name"):
        name = call.text("folder_name")
        _check_name(workspace, "folders", "folder_name", name, folder)
        folder["folder_name"] = name
    if call.given("description"):
        folder["description"] = call.optional_text("description")
    await _save(call, workspace)
    rendered = render_folder(folder)
    await record_activity(
        call,
        "updated",
        "folder",
        str(folder.get("folder_id")),
        folder.get("folder_name"),
        previous=previous,
        current=rendered,
    )
    return ok("Folder updated successfully", rendered)


async def delete_folder(call: Call) -> Response:
    workspace = await load_workspace(call, call.text("workspace_id"))
    folder = load_folder(workspace, call.text("folder_id"))
    previous = render_folder(folder)
    folder["d_flag"] = True
    await _save(call, workspace)
    folder_id = str(folder.get("folder_id"))
    await record_activity(
        call, "deleted", "folder", folder_id, folder.get("folder_name"), previous=previous
    )
    return ok("Folder deleted successfully", {"folder_id": folder_id})


# --- jobs ---------------------------------------------------------------------------------


async def add_job(call: Call) -> Response:
    workspace = await load_workspace(call, call.text("workspace_id"))
    folder = load_folder(workspace, call.text("folder_id"))
    name = call.text("job_name")
    environment = call.optional_text("environment")
    description = call.optional_text("description")
    _check_name(folder, "jobs", "job_name", name, None)
    job: Node = {
        "job_id": new_id("job"),
        "job_name": name,
        "description": description,
        "environment": environment,
        "created_by": call.caller.user_id,
        "created_at": call.emulator.clock(),
        "d_flag": False,
        "reason_to_delete": None,
        "workflow_dependency": [],
        "workflows": [],
    }
    ensure_children(folder, "jobs").append(job)
    await _save(call, workspace)
    rendered = render_job(job)
    await record_activity(call, "created", "job", job["job_id"], name, current=rendered)
    return created("Job added successfully", rendered)


async def update_job(call: Call) -> Response:
    workspace = await load_workspace(call, call.text("workspace_id"))
    folder = load_folder(workspace, call.text("folder_id"))
    job = load_job(folder, call.text("job_id"))
    previous = render_job(job)
    if call.given("job_name"):
        name = call.text("job_name")
        _check_name(folder, "jobs", "job_name", name, job)
        job["job_name"] = name
    for field in ("environment", "description"):
        if call.given(field):
            job[field] = call.optional_text(field)
    if call.given("workflow_dependency"):
        # Legacy stores the list as given: ids are not checked against existing workflows.
        job["workflow_dependency"] = call.optional_list_of_text("workflow_dependency") or []
    await _save(call, workspace)
    rendered = render_job(job)
    await record_activity(
        call,
        "updated",
        "job",
        str(job.get("job_id")),
        job.get("job_name"),
        previous=previous,
        current=rendered,
    )
    return ok("Job updated successfully", rendered)


async def delete_job(call: Call) -> Response:
    workspace = await load_workspace(call, call.text("workspace_id"))
    folder = load_folder(workspace, call.text("folder_id"))
    job = load_job(folder, call.text("job_id"))
    reason = call.optional_text("reason_to_delete")
    previous = render_job(job)
    job["d_flag"] = True
    job["reason_to_delete"] = reason
    await _save(call, workspace)
    job_id = str(job.get("job_id"))
    await record_activity(call, "deleted", "job", job_id, job.get("job_name"), previous=previous)
    return ok("Job deleted successfully", {"job_id": job_id})


ROUTES: list[Route] = [
    ("POST", "/workspace/addFolder", add_folder),
    ("POST", "/workspace/updateFolder", update_folder),
    ("POST", "/workspace/deleteFolder", delete_folder),
    ("POST", "/workspace/addJob", add_job),
    ("POST", "/workspace/updateJob", update_job),
    ("POST", "/workspace/deleteJob", delete_job),
]
