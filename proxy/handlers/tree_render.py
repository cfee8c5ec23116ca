"""Rows of the workspace tree -> the JSON legacy answers with (pure functions).

Each entity renders legacy's fixed field list in legacy's order (the emulator's
``legacy_emulator/render.py`` is the reference): a missing value is ``null``, datetimes are
``"YYYY-MM-DD HH:MM:SS"`` UTC, ``_id`` and unknown fields never appear.

Rows written by backfill from dirty documents keep what they could not read in
``extra["$unreadable"][legacy field]`` and a renamed duplicate's name as found in
``extra["$renamed"][column]`` (the convention of :mod:`migrators.entities.common`); both
render as legacy renders the stored value, so a dirty document answers the same on both
sides. No clients, no clock, no ``await``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from migrators.entities.common import from_json
from strangler.contract import (
    LEGACY_DATETIME_FORMAT,
    DirtyValue,
    is_deleted,
    json_safe,
    render_datetime,
    to_int,
)

__all__ = [
    "FOLDER",
    "JOB",
    "VERSION",
    "WORKFLOW",
    "WORKFLOW_LISTED",
    "WORKSPACE",
    "json_safe",
    "render_row",
    "render_tree",
    "render_version",
]

_FORMAT = LEGACY_DATETIME_FORMAT
UNREADABLE = "$unreadable"
RENAMED = "$renamed"
DEPENDENCY = "workflow_dependency"

Kind = Literal["raw", "datetime", "int", "bool", "json"]
# (legacy field, column, kind)
Spec = tuple[tuple[str, str, Kind], ...]

WORKSPACE: Spec = (
    ("workspace_id", "workspace_id", "raw"),
    ("workspace_name", "workspace_name", "raw"),
    ("description", "description", "raw"),
    ("subscription_id", "subscription_id", "raw"),
    ("owner_id", "owner_id", "raw"),
    ("created_by", "created_by", "raw"),
    ("created_at", "created_at", "datetime"),
    ("updated_by", "updated_by", "raw"),
    ("updated_at", "updated_at", "datetime"),
)
FOLDER: Spec = (
    ("folder_id", "folder_id", "raw"),
    ("folder_name", "folder_name", "raw"),
    ("description", "description", "raw"),
    ("created_by", "created_by", "raw"),
    ("created_at", "created_at", "datetime"),
)
# workflow_dependency is not a column: the job's dependency rows, added by the caller.
JOB: Spec = (
    ("job_id", "job_id", "raw"),
    ("job_name", "job_name", "raw"),
    ("description", "description", "raw"),
    ("environment", "environment", "raw"),
    ("created_by", "created_by", "raw"),
    ("created_at", "created_at", "datetime"),
)
WORKFLOW: Spec = (
    ("workflow_id", "workflow_id", "raw"),
    ("workspace_id", "workspace_id", "raw"),
    ("folder_id", "folder_id", "raw"),
    ("job_id", "job_id", "raw"),
    ("subscription_id", "subscription_id", "raw"),
    ("workflow_name", "workflow_name", "raw"),
    ("description", "description", "raw"),
    ("environment", "environment", "raw"),
    ("workFlowDiagram", "workflow_diagram_text", "raw"),
    ("parameters", "parameters", "json"),
    ("notification", "notification", "json"),
    ("tags", "tags", "json"),
    ("version", "version", "int"),
    ("is_active", "is_active", "bool"),
    ("is_checked_out", "is_checked_out", "bool"),
    ("checked_out_by", "checked_out_by", "raw"),
    ("checked_out_at", "checked_out_at", "datetime"),
    ("source_connectorid", "source_connector_id", "raw"),
    ("target_connectorid", "target_connector_id", "raw"),
    ("created_by", "created_by", "raw"),
    ("created_at", "created_at", "datetime"),
    ("updated_by", "updated_by", "raw"),
    ("updated_at", "updated_at", "datetime"),
)
WORKFLOW_LISTED: Spec = tuple(entry for entry in WORKFLOW if entry[0] != "workFlowDiagram")
VERSION: Spec = (
    ("workflow_id", "workflow_id", "raw"),
    ("version_number", "version_number", "int"),
    ("change_type", "change_type", "raw"),
    ("comment", "comment", "raw"),
    ("workflow_snapshot", "workflow_snapshot", "json"),
    ("created_by", "created_by", "raw"),
    ("created_at", "created_at", "datetime"),
)
_WORKFLOW_ORDER = [field for field, _, _ in WORKFLOW]


def _extra(row: Mapping[str, Any]) -> Mapping[str, Any]:
    extra = row.get("extra")
    if isinstance(extra, str):
        extra = {} if extra == "{}" else json.loads(extra)
    return extra if isinstance(extra, Mapping) else {}


def _datetime(value: Any) -> Any:
    if isinstance(value, datetime):  # a timestamptz column: the common case, made cheap
        return (value.astimezone(UTC) if value.tzinfo else value).strftime(_FORMAT)
    return render_datetime(value)


def _int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return to_int(value)
    except DirtyValue:
        return json_safe(value)


def _bool(value: Any) -> Any:
    return None if value is None else is_deleted(value)


def _json(value: Any) -> Any:
    """A jsonb value (text from asyncpg). It holds BSON values as relaxed Extended JSON
    (migrators.entities.common): a date inside a snapshot renders as legacy renders a date.
    Text with no ``"$`` holds no Extended JSON and, with no ``"_id"`` key either (which
    legacy's serializer drops), decodes to exactly what legacy renders."""
    if isinstance(value, str):
        if '"$' not in value and '"_id"' not in value:
            return json.loads(value)
        value = json.loads(value)
    return json_safe(from_json(value))


def _raw(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json_safe(value)


_RENDERERS: dict[Kind, Callable[[Any], Any]] = {
    "raw": _raw,
    "datetime": _datetime,
    "int": _int,
    "bool": _bool,
    "json": _json,
}


def render_row(row: Mapping[str, Any], spec: Spec) -> dict[str, Any]:
    """One row as legacy renders the document it stands for."""
    extra = _extra(row)
    if not extra:
        return {field: _RENDERERS[kind](row.get(column)) for field, column, kind in spec}
    unreadable = extra.get(UNREADABLE) or {}
    renamed = extra.get(RENAMED) or {}
    rendered: dict[str, Any] = {}
    for field, column, kind in spec:
        value = row.get(column)
        if column in renamed:
            value = renamed[column]
        elif value is None and field in unreadable:
            value = from_json(unreadable[field])
        rendered[field] = _RENDERERS[kind](value)
    return rendered


def _snapshot_in_order(snapshot: Any) -> Any:
    """jsonb keeps no key order: a workflow snapshot gets legacy's field order back."""
    if not isinstance(snapshot, dict):
        return snapshot
    known = {key: snapshot[key] for key in _WORKFLOW_ORDER if key in snapshot}
    return known | {key: value for key, value in snapshot.items() if key not in known}


def render_version(row: Mapping[str, Any]) -> dict[str, Any]:
    rendered = render_row(row, VERSION)
    rendered["workflow_snapshot"] = _snapshot_in_order(rendered["workflow_snapshot"])
    return rendered


def render_job(
    job: Mapping[str, Any],
    dependencies: Sequence[str] | None,
    summaries: Iterable[Mapping[str, Any]],
) -> dict[str, Any]:
    """A job with its ``workflow_dependency`` list and its visible workflow summaries."""
    rendered = render_row(job, JOB)
    unreadable = _extra(job).get(UNREADABLE) or {}
    if DEPENDENCY in unreadable:  # a list legacy held in a shape the rows cannot (kept as found)
        rendered[DEPENDENCY] = json_safe(from_json(unreadable[DEPENDENCY]))
    else:
        rendered[DEPENDENCY] = None if dependencies is None else list(dependencies)
    rendered["workflows"] = [
        {"workflow_id": json_safe(s.get("workflow_id")), "workflow_name": _summary_name(s)}
        for s in summaries
    ]
    return rendered


def _summary_name(summary: Mapping[str, Any]) -> Any:
    renamed = _extra(summary).get(RENAMED) or {}
    return json_safe(renamed.get("workflow_name", summary.get("workflow_name")))


def render_folder(folder: Mapping[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    rendered = render_row(folder, FOLDER)
    rendered["jobs"] = jobs
    return rendered


def render_tree(
    workspace: Mapping[str, Any],
    folders: Sequence[Mapping[str, Any]],
    jobs: Sequence[Mapping[str, Any]],
    dependencies: Mapping[str, list[str]],
    summaries: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A workspace with its visible tree, from rows already in tree order.

    ``folders``, ``jobs`` and ``summaries`` hold the visible rows only, each list sorted by
    (parent, tree position); ``dependencies`` maps a job id to its list in order."""
    by_job: dict[str, list[Mapping[str, Any]]] = {}
    for summary in summaries:
        by_job.setdefault(summary["job_id"], []).append(summary)
    by_folder: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        job_id = job["job_id"]
        by_folder.setdefault(job["folder_id"], []).append(
            render_job(job, dependencies.get(job_id, []), by_job.get(job_id, ()))
        )
    rendered = render_row(workspace, WORKSPACE)
    rendered["folders"] = [
        render_folder(folder, by_folder.get(folder["folder_id"], [])) for folder in folders
    ]
    return rendered
