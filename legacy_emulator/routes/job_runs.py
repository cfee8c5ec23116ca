"""Job runs: ``runNow`` starts one, ``getRuns``/``getRun`` read them.

Runs stay listed after their workflow is deleted (they are history, and
legacy never touched them on delete).
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from legacy_emulator.http import Call, listed, ok
from legacy_emulator.render import render_job_run
from legacy_emulator.routes import Route
from legacy_emulator.routes.workflows import load_workflow
from legacy_emulator.store import find_visible, page_of, record_activity
from strangler.contract import DirtyValue, new_id, parse_legacy_datetime

__all__ = ["ROUTES", "created_within"]

Document = dict[str, Any]


async def run_now(call: Call) -> Response:
    workflow = await load_workflow(call, call.text("workflow_id"))
    now = call.emulator.clock()
    run: Document = {
        "job_run_id": new_id("job_run"),
        "workflow_id": workflow["workflow_id"],
        "job_id": workflow.get("job_id"),
        "workspace_id": workflow.get("workspace_id"),
        "subscription_id": call.caller.subscription_id,
        "status": "queued",
        "created_at": now,
        "completed_at": None,
        "duration_ms": None,
        "triggered_by": call.caller.user_id,
        "trigger_type": "manual",
        "error_message": None,
        "rows_processed": None,
        "logs": [{"ts": now, "level": "INFO", "message": f"Run queued by {call.caller.user_id}"}],
    }
    await call.emulator.job_runs.insert_one(run)
    call.emulator.runner.start(run, workflow.get("workFlowDiagram"))
    answer = {"job_run_id": run["job_run_id"], "status": "queued"}
    await record_activity(
        call,
        "executed",
        "workflow",
        workflow["workflow_id"],
        workflow.get("workflow_name"),
        current=answer,
    )
    return ok("Workflow run queued", answer)


def created_within(start: Any, end: Any) -> Any:
    def keep(document: Document) -> bool:
        if start is None and end is None:
            return True
        try:
            moment = parse_legacy_datetime(document.get("created_at"))
        except DirtyValue:
            return False
        if moment is None:
            return False
        return (start is None or moment >= start) and (end is None or moment <= end)

    return keep


async def get_runs(call: Call) -> Response:
    query: Document = {"subscription_id": call.caller.subscription_id}
    for name in ("workflow_id", "status"):
        value = call.query_text(name)
        if value is not None:
            query[name] = value
    keep = created_within(call.query_moment("from"), call.query_moment("to"))
    runs, total = await page_of(
        call.emulator.job_runs,
        query,
        id_field="job_run_id",
        page=call.page(),
        keep=keep,
        leave_out=("logs",),
    )
    items = [render_job_run(run, with_logs=False) for run in runs]
    return listed("Runs fetched successfully", items, total)


async def get_run(call: Call) -> Response:
    run = await find_visible(
        call.emulator.job_runs,
        "job_run_id",
        call.query_id("job_run_id"),
        call.caller.subscription_id,
        "Job run",
    )
    return ok("Run fetched successfully", render_job_run(run, with_logs=True))


ROUTES: list[Route] = [
    ("POST", "/workflow/runNow", run_now),
    ("GET", "/jobRun/getRuns", get_runs),
    ("GET", "/jobRun/getRun", get_run),
]
