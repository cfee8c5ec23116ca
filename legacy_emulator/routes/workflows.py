"""Workflows: the ``workflow`` documents, and their summary copies in the workspace tree.

Writes here are several separate operations with no transaction (a legacy
flaw kept on purpose): ``addWorkflow`` inserts the workflow, then rewrites the
workspace document with the new summary, then appends the activity entry; a
failure between the steps leaves the earlier ones in place.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from legacy_emulator.http import ApiError, Call, created, listed, not_found, ok
from legacy_emulator.render import WORKFLOW, WORKFLOW_LISTED, render
from legacy_emulator.routes import Route
from legacy_emulator.routes.tree_nodes import load_folder, load_job
from legacy_emulator.routes.workspaces import load_workspace, touch
from legacy_emulator.store import (
    find_visible,
    name_taken,
    page_of,
    record_activity,
    save_workspace,
)
from legacy_emulator.tree import ensure_children, hidden_branches, locate_workflow
from strangler.contract import is_deleted, new_id

__all__ = ["EMPTY_DIAGRAM", "ROUTES", "load_workflow"]

EMPTY_DIAGRAM = '{"nodes": [], "edges": []}'
DUPLICATE = "Workflow name already exists"
Document = dict[str, Any]


async def _workspace_of(call: Call, workflow: Document) -> Document | None:
    """The workflow's workspace document, deleted or not (``None`` when there is none)."""
    return await call.emulator.workspaces.find_one(
        {
            "workspace_id": workflow.get("workspace_id"),
            "subscription_id": workflow["subscription_id"],
        }
    )


async def load_workflow(call: Call, workflow_id: str) -> Document:
    """The caller's visible workflow: not deleted, and not under a deleted workspace/folder/job."""
    workflow = await find_visible(
        call.emulator.workflows, "workflow_id", workflow_id, call.caller.subscription_id, "Workflow"
    )
    workspace = await _workspace_of(call, workflow)
    if workspace is not None:
        if is_deleted(workspace.get("d_flag")):
            raise not_found("Workflow")
        folders, jobs = hidden_branches(workspace)
        if workflow.get("folder_id") in folders or workflow.get("job_id") in jobs:
            raise not_found("Workflow")
    return workflow


async def _check_name(call: Call, job_id: Any, name: str, except_id: str | None = None) -> None:
    query = {
        "subscription_id": call.caller.subscription_id,
        "job_id": job_id,
        "workflow_name": name,
    }
    if await name_taken(
        call.emulator.workflows, query, id_field="workflow_id", except_id=except_id
    ):
        raise ApiError(409, DUPLICATE)


async def get_workflow(call: Call) -> Response:
    workflow = await load_workflow(call, call.query_id("workflow_id"))
    return ok("Workflow fetched successfully", render(workflow, WORKFLOW))


async def _job_is_visible(call: Call, job_id: str) -> bool:
    query = {"subscription_id": call.caller.subscription_id, "folders.jobs.job_id": job_id}
    projection = {"folders": 1, "d_flag": 1}
    for workspace in await call.emulator.workspaces.find(query, projection).to_list(None):
        if is_deleted(workspace.get("d_flag")):
            continue
        _, hidden_jobs = hidden_branches(workspace)
        if job_id not in hidden_jobs:
            return True
    return False


async def get_workflows(call: Call) -> Response:
    workspace_id = call.query_text("workspace_id")
    job_id = call.query_text("job_id")
    if workspace_id is None and job_id is None:
        raise ApiError(400, "job_id or workspace_id is required")
    query: Document = {"subscription_id": call.caller.subscription_id}
    hidden_folders: set[str] = set()
    hidden_jobs: set[str] = set()
    if workspace_id is not None:
        workspace = await load_workspace(call, workspace_id)
        hidden_folders, hidden_jobs = hidden_branches(workspace)
        query["workspace_id"] = workspace_id
    if job_id is not None:
        if workspace_id is None and not await _job_is_visible(call, job_id):
            raise not_found("Job")
        query["job_id"] = job_id

    def visible(document: Document) -> bool:
        return (
            document.get("folder_id") not in hidden_folders
            and document.get("job_id") not in hidden_jobs
        )

    documents, total = await page_of(
        call.emulator.workflows,
        query,
        id_field="workflow_id",
        page=call.page(),
        keep=visible,
        fields=("folder_id", "job_id"),
        leave_out=("workFlowDiagram",),
    )
    items = [render(document, WORKFLOW_LISTED) for document in documents]
    return listed("Workflows fetched successfully", items, total)


async def add_workflow(call: Call) -> Response:
    workspace = await load_workspace(call, call.text("workspace_id"))
    folder = load_folder(workspace, call.text("folder_id"))
    job = load_job(folder, call.text("job_id"))
    name = call.text("workflow_name")
    diagram = call.optional_text("workFlowDiagram")
    parameters = call.optional_object("parameters")
    notification = call.optional_object("notification")
    tags = call.optional_list_of_text("tags")
    description = call.optional_text("description")
    source = call.optional_text("source_connectorid")
    target = call.optional_text("target_connectorid")
    await _check_name(call, job["job_id"], name)
    now = call.emulator.clock()
    workflow: Document = {
        "workflow_id": new_id("workflow"),
        "workspace_id": workspace["workspace_id"],
        "folder_id": folder["folder_id"],
        "job_id": job["job_id"],
        "subscription_id": call.caller.subscription_id,
        "workflow_name": name,
        "description": description,
        "environment": job.get("environment"),
        "workFlowDiagram": EMPTY_DIAGRAM if diagram is None else diagram,
        "parameters": {} if parameters is None else parameters,
        "notification": notification,
        "tags": [] if tags is None else tags,
        "version": 1,
        "is_active": True,
        "is_checked_out": False,
        "checked_out_by": None,
        "checked_out_at": None,
        "source_connectorid": source,
        "target_connectorid": target,
        "created_by": call.caller.user_id,
        "created_at": now,
        "updated_by": call.caller.user_id,
        "updated_at": now,
        "d_flag": False,
    }
    # Step 1 of 3: the workflow document.
    await call.emulator.workflows.insert_one(workflow)
    # Step 2 of 3: the summary copy in the tree, by rewriting the whole workspace document.
    ensure_children(job, "workflows").append(
        {
            "workflow_id": workflow["workflow_id"],
            "workflow_name": name,
            "d_flag": False,
            "workFlowDiagram": workflow["workFlowDiagram"],
        }
    )
    touch(call, workspace)
    await save_workspace(call, workspace)
    rendered = render(workflow, WORKFLOW)
    # Step 3 of 3: the activity entry.
    await record_activity(
        call, "created", "workflow", workflow["workflow_id"], name, current=rendered
    )
    return created("Workflow added successfully", rendered)


async def _edits(call: Call, workflow: Document) -> Document:
    """The fields ``updateWorkflow`` changes; ``version`` is accepted and ignored."""
    changes: Document = {}
    if call.given("workflow_name"):
        name = call.text("workflow_name")
        if name != workflow.get("workflow_name"):
            await _check_name(call, workflow.get("job_id"), name, workflow["workflow_id"])
        changes["workflow_name"] = name
    for field in (
        "description",
        "environment",
        "workFlowDiagram",
        "source_connectorid",
        "target_connectorid",
    ):
        if call.given(field):
            changes[field] = call.optional_text(field)
    for field in ("parameters", "notification"):
        if call.given(field):
            changes[field] = call.optional_object(field)
    if call.given("tags"):
        changes["tags"] = call.optional_list_of_text("tags")
    if call.given("is_active"):
        changes["is_active"] = call.optional_flag("is_active")
    changes["updated_by"] = call.caller.user_id
    changes["updated_at"] = call.emulator.clock()
    return changes


async def _rename_summary(call: Call, workflow: Document, name: str) -> None:
    """Carry a new name into the tree's summary copy (its diagram is left as it was)."""
    workspace = await _workspace_of(call, workflow)
    placement = None if workspace is None else locate_workflow(workspace, workflow["workflow_id"])
    if workspace is None or placement is None:
        return
    placement.summary["workflow_name"] = name
    touch(call, workspace)
    await save_workspace(call, workspace)


async def update_workflow(call: Call) -> Response:
    workflow = await load_workflow(call, call.text("workflow_id"))
    changes = await _edits(call, workflow)
    previous = render(workflow, WORKFLOW)
    backup = {key: value for key, value in workflow.items() if key != "_id"}
    await call.emulator.workflow_backups.insert_one(backup)
    await call.emulator.workflows.update_one({"_id": workflow["_id"]}, {"$set": changes})
    renamed = "workflow_name" in changes and changes["workflow_name"] != workflow.get(
        "workflow_name"
    )
    workflow.update(changes)
    if renamed:
        await _rename_summary(call, workflow, changes["workflow_name"])
    rendered = render(workflow, WORKFLOW)
    await record_activity(
        call,
        "updated",
        "workflow",
        workflow["workflow_id"],
        workflow.get("workflow_name"),
        previous=previous,
        current=rendered,
    )
    return ok("Workflow updated successfully", rendered)


async def delete_workflow(call: Call) -> Response:
    workflow = await load_workflow(call, call.text("workflow_id"))
    previous = render(workflow, WORKFLOW)
    await call.emulator.workflows.update_one(
        {"_id": workflow["_id"]},
        {
            "$set": {
                "d_flag": True,
                "updated_by": call.caller.user_id,
                "updated_at": call.emulator.clock(),
            }
        },
    )
    workspace = await _workspace_of(call, workflow)
    placement = None if workspace is None else locate_workflow(workspace, workflow["workflow_id"])
    if workspace is not None and placement is not None:
        placement.summary["d_flag"] = True
        touch(call, workspace)
        await save_workspace(call, workspace)
    # Other jobs' workflow_dependency lists still name it: legacy never cleaned them.
    await record_activity(
        call,
        "deleted",
        "workflow",
        workflow["workflow_id"],
        workflow.get("workflow_name"),
        previous=previous,
    )
    return ok("Workflow deleted successfully", {"workflow_id": workflow["workflow_id"]})


ROUTES: list[Route] = [
    ("GET", "/workflow/getWorkflow", get_workflow),
    ("GET", "/workflow/getWorkflows", get_workflows),
    ("POST", "/workflow/addWorkflow", add_workflow),
    ("POST", "/workflow/updateWorkflow", update_workflow),
    ("POST", "/workflow/deleteWorkflow", delete_workflow),
]
