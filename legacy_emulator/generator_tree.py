"""One workspace at a time: its tree document and the workflow documents it summarizes.

Built together so that, in clean data, every tree entry has its ``workflow``
document (same id, name, ``d_flag``, diagram and placement) and vice versa;
the dirt breaks exactly that on purpose, and counts each break.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from legacy_emulator import generator_documents as docs
from legacy_emulator.generator_diagram import Diagram, diagram
from legacy_emulator.generator_dirt import Dirt, FieldSpec
from legacy_emulator.generator_plan import (
    ARCHIVE_JOBS,
    ARCHIVE_WORKFLOWS_PER_JOB,
    TenantPlan,
    WorkspacePlan,
)
from legacy_emulator.generator_scales import ANCHOR, IdMint

__all__ = ["SPECS", "TenantContext", "build_workspace", "early"]

Document = dict[str, Any]

_WORKFLOW_SPEC = FieldSpec(
    datetimes=("created_at", "updated_at", "checked_out_at"),
    optional=(
        "description",
        "parameters",
        "notification",
        "tags",
        "checked_out_by",
        "checked_out_at",
        "source_connectorid",
        "target_connectorid",
        "updated_by",
    ),
    numbers=("version",),
    d_flag=True,
    created_by=True,
)

SPECS: dict[str, FieldSpec] = {
    "Accounts": FieldSpec(datetimes=("created_at",), optional=("plan_type",)),
    "users": FieldSpec(
        datetimes=("last_login_at", "created_at", "updated_at"),
        optional=("photo_url", "user_utc_offset", "last_login_at", "full_name", "updated_at"),
    ),
    "groups": FieldSpec(
        datetimes=("created_at",), optional=("description", "created_by"), created_by=True
    ),
    "roles": FieldSpec(optional=("description",)),
    "connectors": FieldSpec(
        datetimes=("last_tested_at", "created_at", "updated_at"),
        optional=("description", "last_tested_at", "test_status", "updated_at"),
        numbers=("connection_detail.port",),
        d_flag=True,
        created_by=True,
    ),
    "workspace": FieldSpec(
        datetimes=("created_at", "updated_at"),
        optional=("description", "reason_to_delete", "updated_by", "updated_at"),
        d_flag=True,
        created_by=True,
    ),
    "folder": FieldSpec(
        datetimes=("created_at",), optional=("description",), d_flag=True, created_by=True
    ),
    "job": FieldSpec(
        datetimes=("created_at",),
        optional=("description", "environment", "reason_to_delete"),
        d_flag=True,
        created_by=True,
    ),
    "workflow": _WORKFLOW_SPEC,
    "workflowBkp": _WORKFLOW_SPEC,
    "workflow_versions": FieldSpec(
        datetimes=("created_at",),
        optional=("comment",),
        numbers=("version_number",),
        created_by=True,
    ),
    "jobRun": FieldSpec(
        datetimes=("created_at", "completed_at"),
        optional=("completed_at", "duration_ms", "error_message", "rows_processed", "triggered_by"),
        numbers=("duration_ms", "rows_processed"),
    ),
    "userActivity": FieldSpec(
        datetimes=("created_at",),
        optional=("ip_address", "user_agent", "previous_data", "current_data", "object_name"),
    ),
}


@dataclass
class TenantContext:
    """What later documents of a tenant refer to, kept while the tenant is built."""

    plan: TenantPlan
    connector_ids: list[str] = field(default_factory=list)
    connector_names: list[str] = field(default_factory=list)
    workspace_names: list[str] = field(default_factory=list)
    # (object_type, object_id, object_name) that activity entries may point at
    targets: list[tuple[str, str, str]] = field(default_factory=list)
    # (workflow_id, job_id, workspace_id, subscription_id) of live workflows, for job runs
    runnable: list[tuple[str, str, str, str]] = field(default_factory=list)


def early(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A time after ``start``, more often soon after it (things are created, then used)."""
    span = max(end - start, timedelta(seconds=1))
    moment = start + span * (rng.random() ** 2)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _deleted(rng: random.Random, rate: float) -> bool:
    return rng.random() < rate


def build_workspace(
    rng: random.Random, mint: IdMint, dirt: Dirt, tenant: TenantContext, plan: WorkspacePlan
) -> Iterator[tuple[str, Document]]:
    """Yield (collection, document) for the workflows of one workspace, then the workspace."""
    sub = tenant.plan.subscription_id
    users = tenant.plan.user_ids
    workspace_id = mint("ws_")
    created_at = early(rng, tenant.plan.created_at, ANCHOR - timedelta(days=7))
    name = docs.workspace_name(rng)
    if name in tenant.workspace_names:
        name = f"{name} {len(tenant.workspace_names) + 1}"
    if tenant.workspace_names and dirt.hit("duplicate_workspace_name"):
        name = rng.choice(tenant.workspace_names)
    tenant.workspace_names.append(name)
    deleted = _deleted(rng, 0.03)
    owner = rng.choice(users)
    workspace: Document = {
        "workspace_id": workspace_id,
        "workspace_name": name,
        "description": f"{name} pipelines",
        "subscription_id": sub,
        "owner_id": owner,
        "created_by": owner,
        "created_at": created_at,
        "updated_by": rng.choice(users),
        "updated_at": early(rng, created_at, ANCHOR),
        "d_flag": deleted,
        "reason_to_delete": "no longer used" if deleted else None,
        "folders": [],
    }
    if not deleted:
        tenant.targets.append(("workspace", workspace_id, name))
    for jobs in plan.folders:
        folder = _folder(rng, mint, users, created_at)
        for versions in jobs:
            job = _job(rng, mint, users, folder["created_at"])
            place = {
                "subscription_id": sub,
                "workspace_id": workspace_id,
                "folder_id": folder["folder_id"],
                "job_id": job["job_id"],
            }
            live = not (deleted or folder["d_flag"] or job["d_flag"])
            yield from _fill_job(rng, mint, dirt, tenant, job, place, versions, live, wide=False)
            folder["jobs"].append(job)
        workspace["folders"].append(folder)
    if plan.oversized:
        yield from _archive(rng, mint, dirt, tenant, workspace)
    for folder in workspace["folders"]:
        for job in folder["jobs"]:
            dirt.apply(job, SPECS["job"])
        dirt.apply(folder, SPECS["folder"])
    dirt.apply(workspace, SPECS["workspace"])
    workspace["_id"] = mint.object_id(created_at)
    yield "workspace", workspace


def _folder(rng: random.Random, mint: IdMint, users: list[str], after: datetime) -> Document:
    created_at = early(rng, after, ANCHOR - timedelta(days=5))
    name = f"{rng.choice(('Daily', 'Hourly', 'Adhoc', 'Backfill', 'Reports'))} {rng.randrange(99)}"
    return {
        "folder_id": mint("fd_"),
        "folder_name": name,
        "description": f"{name} jobs",
        "created_by": rng.choice(users),
        "created_at": created_at,
        "d_flag": _deleted(rng, 0.02),
        "jobs": [],
    }


def _job(rng: random.Random, mint: IdMint, users: list[str], after: datetime) -> Document:
    deleted = _deleted(rng, 0.03)
    return {
        "job_id": mint("jb_"),
        "job_name": docs.workflow_name(rng).replace("Load", "Job"),
        "description": "scheduled job",
        "environment": rng.choice(("dev", "staging", "prod")),
        "created_by": rng.choice(users),
        "created_at": early(rng, after, ANCHOR - timedelta(days=4)),
        "d_flag": deleted,
        "reason_to_delete": "replaced" if deleted else None,
        "workflow_dependency": [],
        "workflows": [],
    }


def _fill_job(
    rng: random.Random,
    mint: IdMint,
    dirt: Dirt,
    tenant: TenantContext,
    job: Document,
    place: dict[str, str],
    versions: tuple[tuple[int, int], ...],
    live: bool,
    wide: bool,
) -> Iterator[tuple[str, Document]]:
    names: list[str] = []
    for version, backups in versions:
        workflow_id = mint("wf_")
        name = docs.workflow_name(rng)
        while name in names:
            name = docs.workflow_name(rng)
        if names and dirt.hit("duplicate_workflow_name"):
            name = rng.choice(names)
        names.append(name)
        if wide:
            drawing = diagram(rng, tenant.connector_ids, size=60, wide=True)
        else:
            drawing = diagram(rng, tenant.connector_ids)
        text = drawing.text()
        created_at = early(rng, job["created_at"], ANCHOR - timedelta(days=3))
        deleted = wide or _deleted(rng, 0.03)
        document = docs.workflow(
            rng,
            {"workflow_id": workflow_id, **place},
            name,
            text,
            version,
            tenant.plan.user_ids,
            tenant.connector_ids,
            created_at,
            deleted,
        )
        if version > 1 or backups:
            yield from _history(rng, mint, dirt, document, drawing, backups)
        # one diagram fault per workflow, so that each stays visible and countable
        summary_text = text
        if dirt.hit("diagram_invalid_json"):
            document["workFlowDiagram"] = summary_text = text[: len(text) // 2]
        elif dirt.hit("diagram_empty"):
            document["workFlowDiagram"] = summary_text = ""
        elif len(drawing.nodes) > 1 and dirt.hit("stale_summary"):
            summary_text = drawing.previous().text()
        summary = {
            "workflow_id": workflow_id,
            "workflow_name": name,
            "d_flag": deleted,
            "workFlowDiagram": summary_text,
        }
        if not dirt.hit("workflow_missing_from_tree"):
            job["workflows"].append(summary)
        if live and not deleted:
            tenant.runnable.append(
                (workflow_id, place["job_id"], place["workspace_id"], place["subscription_id"])
            )
            tenant.targets.append(("workflow", workflow_id, name))
        dirt.apply(document, SPECS["workflow"])
        # after the field-level dirt, so that no dropped field hides the broken reference
        linked = [key for key in ("source_connectorid", "target_connectorid") if document.get(key)]
        if linked and dirt.hit("dangling_connector"):
            document[rng.choice(linked)] = mint("cn_")
        document["_id"] = mint.object_id(created_at)
        yield "workflow", document
    # the run order of the job's workflows; single-workflow jobs have none
    if len(job["workflows"]) > 1:
        job["workflow_dependency"] = [entry["workflow_id"] for entry in job["workflows"]]
    if dirt.hit("dangling_dependency"):
        job["workflow_dependency"].append(mint("wf_"))
    if dirt.hit("tree_entry_without_workflow"):
        job["workflows"].append(
            {
                "workflow_id": mint("wf_"),
                "workflow_name": docs.workflow_name(rng),
                "d_flag": False,
                "workFlowDiagram": diagram(rng, tenant.connector_ids, size=12).text(),
            }
        )


def _history(
    rng: random.Random,
    mint: IdMint,
    dirt: Dirt,
    document: Document,
    drawing: Diagram,
    backups: int,
) -> Iterator[tuple[str, Document]]:
    """The check-out/check-in pairs that raised the version, and the backup copies."""
    version = document["version"]
    older_text = drawing.previous().text()
    moments = sorted(
        early(rng, document["created_at"], ANCHOR) for _ in range(2 * (version - 1) + backups)
    )
    users = [document["created_by"], document["updated_by"]]
    for number in range(2, version + 1):
        out_at, in_at = moments.pop(0), moments.pop(0)
        snapshot = {**document, "version": number - 1, "workFlowDiagram": older_text}
        change = "restore" if rng.random() < 0.1 else "check_out"
        for kind, at, label in ((change, out_at, number - 1), ("check_in", in_at, number)):
            if kind == "check_in":
                text = document["workFlowDiagram"] if number == version else older_text
                snapshot = {**snapshot, "version": number, "workFlowDiagram": text}
            entry = docs.workflow_version(rng, snapshot, label, kind, rng.choice(users), at)
            dirt.apply(entry, SPECS["workflow_versions"])
            entry["_id"] = mint.object_id(at)
            yield "workflow_versions", entry
    for _ in range(backups):
        copied_at = moments.pop(0)
        backup = {**document, "workFlowDiagram": older_text, "updated_at": copied_at}
        dirt.apply(backup, SPECS["workflowBkp"])
        backup["_id"] = mint.object_id(copied_at)
        yield "workflowBkp", backup


def _archive(
    rng: random.Random, mint: IdMint, dirt: Dirt, tenant: TenantContext, workspace: Document
) -> Iterator[tuple[str, Document]]:
    """Years of soft-deleted jobs whose wide diagrams stay in the tree: several MB."""
    dirt.counts["oversized_workspace"] += 1
    folder = _folder(rng, mint, tenant.plan.user_ids, workspace["created_at"])
    folder.update(folder_name="Archive", d_flag=True)
    for _ in range(ARCHIVE_JOBS):
        job = _job(rng, mint, tenant.plan.user_ids, folder["created_at"])
        job.update(d_flag=True, reason_to_delete="archived")
        place = {
            "subscription_id": tenant.plan.subscription_id,
            "workspace_id": workspace["workspace_id"],
            "folder_id": folder["folder_id"],
            "job_id": job["job_id"],
        }
        versions = ((1, 0),) * ARCHIVE_WORKFLOWS_PER_JOB
        yield from _fill_job(rng, mint, dirt, tenant, job, place, versions, False, wide=True)
        folder["jobs"].append(job)
    workspace["folders"].append(folder)
