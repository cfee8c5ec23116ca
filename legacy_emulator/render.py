"""Stored legacy documents -> the JSON the legacy API answers with (pure functions).

Each entity renders a fixed list of fields, in a fixed order: a field missing
from the stored document is ``null``, unknown extra fields are kept in storage
but never returned, ``_id`` never is. Dirty stored values are read with the
shared readers of :mod:`strangler.contract`, so that every side agrees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from strangler.contract import (
    DirtyValue,
    is_deleted,
    json_safe,
    parse_legacy_datetime,
    render_datetime,
    to_int,
)

__all__ = [
    "ACTIVITY",
    "CONNECTOR",
    "FOLDER",
    "GROUP",
    "JOB",
    "JOB_RUN",
    "MASKED_PASSWORD",
    "ROLE",
    "USER",
    "VERSION",
    "WORKFLOW",
    "WORKFLOW_LISTED",
    "WORKSPACE",
    "Spec",
    "json_safe",
    "render",
    "render_connector",
    "render_job_run",
    "render_tree",
    "sort_key",
]

MASKED_PASSWORD = "********"

Kind = Literal["raw", "datetime", "int", "bool"]
Spec = tuple[tuple[str, Kind], ...]


def _spec(*fields: str, datetimes: Iterable[str] = (), ints: Iterable[str] = (),
          bools: Iterable[str] = ()) -> Spec:  # fmt: skip
    kinds: dict[str, Kind] = {name: "datetime" for name in datetimes}
    kinds.update({name: "int" for name in ints})
    kinds.update({name: "bool" for name in bools})
    return tuple((name, kinds.get(name, "raw")) for name in fields)


WORKSPACE = _spec(
    "workspace_id", "workspace_name", "description", "subscription_id", "owner_id",
    "created_by", "created_at", "updated_by", "updated_at",
    datetimes=("created_at", "updated_at"),
)  # fmt: skip
FOLDER = _spec(
    "folder_id", "folder_name", "description", "created_by", "created_at",
    datetimes=("created_at",),
)  # fmt: skip
JOB = _spec(
    "job_id", "job_name", "description", "environment", "created_by", "created_at",
    "workflow_dependency",
    datetimes=("created_at",),
)  # fmt: skip
WORKFLOW_SUMMARY = _spec("workflow_id", "workflow_name")
_WORKFLOW_FIELDS = (
    "workflow_id", "workspace_id", "folder_id", "job_id", "subscription_id", "workflow_name",
    "description", "environment", "workFlowDiagram", "parameters", "notification", "tags",
    "version", "is_active", "is_checked_out", "checked_out_by", "checked_out_at",
    "source_connectorid", "target_connectorid", "created_by", "created_at", "updated_by",
    "updated_at",
)  # fmt: skip
_WORKFLOW_KINDS: dict[str, Any] = {
    "datetimes": ("checked_out_at", "created_at", "updated_at"),
    "ints": ("version",),
    "bools": ("is_active", "is_checked_out"),
}
WORKFLOW = _spec(*_WORKFLOW_FIELDS, **_WORKFLOW_KINDS)
WORKFLOW_LISTED = _spec(*(f for f in _WORKFLOW_FIELDS if f != "workFlowDiagram"), **_WORKFLOW_KINDS)
VERSION = _spec(
    "workflow_id", "version_number", "change_type", "comment", "workflow_snapshot",
    "created_by", "created_at",
    datetimes=("created_at",), ints=("version_number",),
)  # fmt: skip
JOB_RUN = _spec(
    "job_run_id", "workflow_id", "job_id", "workspace_id", "subscription_id", "status",
    "created_at", "completed_at", "duration_ms", "triggered_by", "trigger_type",
    "error_message", "rows_processed",
    datetimes=("created_at", "completed_at"), ints=("duration_ms", "rows_processed"),
)  # fmt: skip
CONNECTOR = _spec(
    "connector_id", "subscription_id", "connector_name", "connector_type", "description",
    "connection_detail", "is_active", "test_status", "last_tested_at", "created_by",
    "created_at", "updated_at",
    datetimes=("last_tested_at", "created_at", "updated_at"), bools=("is_active",),
)  # fmt: skip
USER = _spec(
    "UserId", "subscription_id", "email", "username", "full_name", "photo_url",
    "user_utc_offset", "is_active", "is_email_verified", "last_login_at", "created_at",
    "updated_at",
    datetimes=("last_login_at", "created_at", "updated_at"),
    bools=("is_active", "is_email_verified"),
)  # fmt: skip
GROUP = _spec(
    "group_id", "subscription_id", "group_name", "description", "users", "created_by",
    "created_at",
    datetimes=("created_at",),
)  # fmt: skip
ROLE = _spec(
    "role_id", "subscription_id", "role_name", "description", "permissions", "users",
    "created_at",
    datetimes=("created_at",),
)  # fmt: skip
ACTIVITY = _spec(
    "subscription_id", "UserId", "action", "object_type", "object_id", "object_name",
    "ip_address", "user_agent", "previous_data", "current_data", "created_at",
    datetimes=("created_at",),
)  # fmt: skip


def _render_value(value: Any, kind: Kind) -> Any:
    if kind == "datetime":
        return render_datetime(value)
    if kind == "int":
        try:
            return to_int(value)
        except DirtyValue:
            return json_safe(value)  # passed through as found, like the legacy serializer
    if kind == "bool":
        return None if value is None else is_deleted(value)  # same truth reading as d_flag
    return json_safe(value)


def render(document: Mapping[str, Any], spec: Spec) -> dict[str, Any]:
    return {name: _render_value(document.get(name), kind) for name, kind in spec}


def render_connector(document: Mapping[str, Any]) -> dict[str, Any]:
    """A connector with its stored plain-text password masked."""
    rendered = render(document, CONNECTOR)
    detail = rendered.get("connection_detail")
    if isinstance(detail, dict) and detail.get("password") is not None:
        detail["password"] = MASKED_PASSWORD
    return rendered


def render_job_run(document: Mapping[str, Any], *, with_logs: bool) -> dict[str, Any]:
    rendered = render(document, JOB_RUN)
    if with_logs:
        logs = document.get("logs")
        rendered["logs"] = [
            {
                "ts": render_datetime(entry.get("ts")),
                "level": json_safe(entry.get("level")),
                "message": json_safe(entry.get("message")),
            }
            for entry in (logs if isinstance(logs, list) else [])
            if isinstance(entry, Mapping)
        ]
    return rendered


def _children(node: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = node.get(key)
    if not isinstance(items, list):
        return []
    return [
        item for item in items if isinstance(item, Mapping) and not is_deleted(item.get("d_flag"))
    ]


def render_job(job: Mapping[str, Any]) -> dict[str, Any]:
    rendered = render(job, JOB)
    rendered["workflows"] = [render(wf, WORKFLOW_SUMMARY) for wf in _children(job, "workflows")]
    return rendered


def render_folder(folder: Mapping[str, Any]) -> dict[str, Any]:
    rendered = render(folder, FOLDER)
    rendered["jobs"] = [render_job(job) for job in _children(folder, "jobs")]
    return rendered


def render_tree(workspace: Mapping[str, Any]) -> dict[str, Any]:
    """A workspace with its visible folders, jobs and workflow summaries, in stored order."""
    rendered = render(workspace, WORKSPACE)
    rendered["folders"] = [render_folder(folder) for folder in _children(workspace, "folders")]
    return rendered


_OLDEST = float("-inf")


def sort_key(document: Mapping[str, Any], id_field: str) -> tuple[float, str]:
    """List order: stored ``created_at`` descending, then the id ascending.

    A ``created_at`` that is missing or cannot be read sorts as the oldest.
    """
    try:
        moment = parse_legacy_datetime(document.get("created_at"))
    except DirtyValue:
        moment = None
    millis = _OLDEST if moment is None else moment.timestamp() * 1000
    return (-millis, str(document.get(id_field, "")))
