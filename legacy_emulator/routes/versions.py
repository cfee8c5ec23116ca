"""Check-out, check-in and the version history of a workflow.

A workflow checked out by one user cannot be checked out or checked in by
another (403); the user who holds it may repeat either. ``updateWorkflow``
does not look at the check-out at all (legacy never enforced it there).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from legacy_emulator.http import ApiError, Call, listed, ok
from legacy_emulator.render import VERSION, WORKFLOW, render, sort_key
from legacy_emulator.routes import Route
from legacy_emulator.routes.workflows import load_workflow
from legacy_emulator.store import page_of, record_activity
from strangler.contract import DirtyValue, is_deleted, to_int

__all__ = ["ROUTES", "stored_version"]

Document = dict[str, Any]


def stored_version(workflow: Document) -> int:
    """The workflow's version as stored; a missing or unreadable one counts as the first."""
    try:
        version = to_int(workflow.get("version"))
    except DirtyValue:
        version = None
    return 1 if version is None else version


def _refuse_other_holder(call: Call, workflow: Document, doing: str) -> None:
    holder = workflow.get("checked_out_by")
    if is_deleted(workflow.get("is_checked_out")) and holder not in (None, call.caller.user_id):
        raise ApiError(403, f"Workflow is checked out by {holder}; it cannot be {doing}")


async def _write(
    call: Call, workflow: Document, changes: Document, version: int, change_type: str
) -> Document:
    """Apply ``changes``, then add the history entry, then the activity (three writes)."""
    previous = render(workflow, WORKFLOW)
    await call.emulator.workflows.update_one({"_id": workflow["_id"]}, {"$set": changes})
    workflow.update(changes)
    rendered = render(workflow, WORKFLOW)
    await call.emulator.workflow_versions.insert_one(
        {
            "workflow_id": workflow["workflow_id"],
            "version_number": version,
            "change_type": change_type,
            "comment": call.optional_text("comment"),
            "workflow_snapshot": rendered,
            "created_by": call.caller.user_id,
            "created_at": call.emulator.clock(),
        }
    )
    await record_activity(
        call,
        "updated",
        "workflow",
        workflow["workflow_id"],
        workflow.get("workflow_name"),
        previous=previous,
        current=rendered,
    )
    return rendered


async def check_out(call: Call) -> Response:
    workflow = await load_workflow(call, call.text("workflow_id"))
    _refuse_other_holder(call, workflow, "checked out")
    changes = {
        "is_checked_out": True,
        "checked_out_by": call.caller.user_id,
        "checked_out_at": call.emulator.clock(),
    }
    rendered = await _write(call, workflow, changes, stored_version(workflow), "check_out")
    return ok("Workflow checked out successfully", rendered)


async def check_in(call: Call) -> Response:
    workflow = await load_workflow(call, call.text("workflow_id"))
    _refuse_other_holder(call, workflow, "checked in")
    version = stored_version(workflow) + 1
    changes = {
        "version": version,
        "is_checked_out": False,
        "checked_out_by": None,
        "checked_out_at": None,
        "updated_by": call.caller.user_id,
        "updated_at": call.emulator.clock(),
    }
    rendered = await _write(call, workflow, changes, version, "check_in")
    return ok("Workflow checked in successfully", rendered)


def _newest_first(entry: Document) -> tuple[float, int]:
    created, _ = sort_key(entry, "workflow_id")
    try:
        number = to_int(entry.get("version_number")) or 0
    except DirtyValue:
        number = 0
    return (created, -number)


async def get_versions(call: Call) -> Response:
    workflow = await load_workflow(call, call.query_id("workflow_id"))
    entries, total = await page_of(
        call.emulator.workflow_versions,
        {"workflow_id": workflow["workflow_id"]},
        id_field="workflow_id",
        page=call.page(),
        fields=("version_number",),
        order=_newest_first,
    )
    items = [render(entry, VERSION) for entry in entries]
    return listed("Versions fetched successfully", items, total)


ROUTES: list[Route] = [
    ("POST", "/workflow/checkOut", check_out),
    ("POST", "/workflow/checkIn", check_in),
    ("GET", "/workflow/getVersions", get_versions),
]
