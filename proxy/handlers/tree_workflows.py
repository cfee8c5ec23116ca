"""Workflows, their check-out/check-in and version history, from PostgreSQL.

Answers as legacy does (``legacy_emulator/routes/workflows.py`` and ``versions.py``), and
fixes what the review found:

- ``addWorkflow`` writes the workflow, its tree entry, the workspace stamp, the audit row
  and the outbox rows in one transaction (legacy: three separate writes);
- ``updateWorkflow`` is optimistic-locked: every update bumps ``version``; one that names
  a ``version`` other than the stored one is refused with 409 (legacy: last writer wins).
  Without ``version`` the update applies on top of whatever is stored, as legacy does,
  still serialized by the row lock so no concurrent update is lost;
- ``deleteWorkflow`` also removes the workflow from every job's dependency list;
- ``checkIn`` numbers the new version under the row lock, so two check-ins never write
  the same version number.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from bson import ObjectId

from migrators.entities.tree_fields import parse_diagram
from proxy.handlers import tree_store as store
from proxy.handlers._pg import (
    ApiError,
    Call,
    created,
    decoded_row,
    listed,
    ok,
    record_activity,
    tenant_transaction,
)
from proxy.handlers.tree_render import (
    WORKFLOW,
    WORKFLOW_LISTED,
    render_row,
    render_version,
)
from schema.keys import link_key, row_key
from strangler.contract import new_id
from strangler.exchange import RecordedResponse
from strangler.jsonfast import jsonb_text

__all__ = ["EMPTY_DIAGRAM", "STALE_VERSION", "WorkflowHandlers"]

EMPTY_DIAGRAM = '{"nodes": [], "edges": []}'
DUPLICATE = "Workflow name already exists"
STALE_VERSION = (
    "Workflow was changed by someone else: version {expected} is not the current version "
    "{current}; read it again and reapply your change"
)
Row = dict[str, Any]

# What updateWorkflow may change: (legacy field, column, how it is read from the body).
_EDITABLE = (
    ("description", "description", "text"),
    ("environment", "environment", "text"),
    ("workFlowDiagram", "workflow_diagram_text", "text"),
    ("source_connectorid", "source_connector_id", "text"),
    ("target_connectorid", "target_connector_id", "text"),
    ("parameters", "parameters", "object"),
    ("notification", "notification", "object"),
    ("tags", "tags", "list"),
    ("is_active", "is_active", "flag"),
)
_JSONB = frozenset({"parameters", "notification", "tags", "extra"})
# The columns a workflow write stores (never the keys or the tree placement).
_STORED = (
    "workflow_name", "description", "environment", "workflow_diagram", "workflow_diagram_text",
    "parameters", "notification", "tags", "version", "is_active", "is_checked_out",
    "checked_out_by", "checked_out_at", "source_connector_id", "target_connector_id",
    "updated_by", "updated_at", "extra",
)  # fmt: skip


def parsed_diagram(text: str | None) -> str | None:
    """The diagram string as jsonb text when jsonb can hold it, else ``None`` (kept as text
    only): the migration's own rule (``parse_diagram``), so both sides store the same."""
    value, _ = parse_diagram(text)
    return None if value is None else jsonb_text(value)


def _expected_version(call: Call) -> int | None:
    """The ``version`` the client read, or ``None`` when it sent none."""
    value = call.body.get("version")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(400, "version must be a whole number")
    try:
        return int(value)
    except ValueError as exc:
        raise ApiError(400, "version must be a whole number") from exc


class WorkflowHandlers:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # --- reads -----------------------------------------------------------------------------

    async def get_workflow(self, call: Call) -> RecordedResponse:
        workflow_id = call.query_id("workflow_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            row = await store.load_workflow(conn, workflow_id)
        return ok("Workflow fetched successfully", render_row(row, WORKFLOW))

    async def get_workflows(self, call: Call) -> RecordedResponse:
        workspace_id = call.query_text("workspace_id")
        job_id = call.query_text("job_id")
        if workspace_id is None and job_id is None:
            raise ApiError(400, "job_id or workspace_id is required")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            if workspace_id is not None:
                await store.load_workspace(conn, workspace_id)
                # Legacy hides what the workspace's deleted branches hold.
                where = "w.workspace_id = $1 AND " + store.VISIBLE_WORKFLOW
            else:
                visible_job = await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM jobs j "
                    "JOIN folders f ON f.folder_id = j.folder_id "
                    "JOIN workspaces s ON s.workspace_id = j.workspace_id WHERE j.job_id = $1 "
                    "AND NOT j.is_deleted AND NOT f.is_deleted AND NOT s.is_deleted)",
                    job_id,
                )
                if not visible_job:
                    raise ApiError(404, "Job not found")
                where = "($1::text IS NULL) AND NOT w.is_deleted"
            where += " AND ($2::text IS NULL OR w.job_id = $2)"
            page = call.page()
            rows = await conn.fetch(
                f"SELECT {store.WORKFLOW_COLUMNS}, {store.LISTED_TOTAL} FROM workflows w "
                f"WHERE {where} "
                "ORDER BY w.created_at DESC NULLS LAST, w.workflow_id LIMIT $3 OFFSET $4",
                workspace_id,
                job_id,
                page.per_page,
                page.skip,
            )
            total = await store.listed_total(
                conn, rows, page.skip, f"SELECT count(*) FROM workflows w WHERE {where}",
                workspace_id, job_id,
            )  # fmt: skip
        items = [render_row(row, WORKFLOW_LISTED) for row in rows]
        return listed("Workflows fetched successfully", items, total)

    async def get_versions(self, call: Call) -> RecordedResponse:
        workflow_id = call.query_id("workflow_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            await store.load_workflow(conn, workflow_id)
            page = call.page()
            rows = await conn.fetch(
                "SELECT workflow_id, version_number, change_type, comment, workflow_snapshot, "
                f"created_by, created_at, extra, {store.LISTED_TOTAL} "
                "FROM workflow_versions WHERE workflow_id = $1 "
                "ORDER BY created_at DESC NULLS LAST, version_number DESC, version_id "
                "LIMIT $2 OFFSET $3",
                workflow_id,
                page.per_page,
                page.skip,
            )
            total = await store.listed_total(
                conn, rows, page.skip,
                "SELECT count(*) FROM workflow_versions WHERE workflow_id = $1", workflow_id,
            )  # fmt: skip
        return listed("Versions fetched successfully", [render_version(r) for r in rows], total)

    # --- writes ----------------------------------------------------------------------------

    @staticmethod
    async def _check_name(
        conn: asyncpg.Connection, job_id: Any, name: str, except_id: str | None
    ) -> None:
        if await store.name_taken(
            conn, "workflows", "workflow_name", "job_id", job_id, name, "workflow_id", except_id
        ):
            raise ApiError(409, DUPLICATE)

    async def add_workflow(self, call: Call) -> RecordedResponse:
        workspace_id = call.text("workspace_id")
        caller = call.caller
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            await store.load_workspace(conn, workspace_id, lock=True)
            folder = await store.load_folder(conn, workspace_id, call.text("folder_id"))
            job = await store.load_job(conn, folder["folder_id"], call.text("job_id"))
            name = call.text("workflow_name")
            diagram = call.optional_text("workFlowDiagram")
            parameters = call.optional_object("parameters")
            notification = call.optional_object("notification")
            tags = call.optional_list_of_text("tags")
            description = call.optional_text("description")
            source = call.optional_text("source_connectorid")
            target = call.optional_text("target_connectorid")
            await self._check_name(conn, job["job_id"], name, None)
            text = EMPTY_DIAGRAM if diagram is None else diagram
            row: Row = {
                "workflow_id": new_id("workflow"),
                "workspace_id": workspace_id,
                "folder_id": folder["folder_id"],
                "job_id": job["job_id"],
                "subscription_id": caller.subscription_id,
                "workflow_name": name,
                "description": description,
                "environment": job["environment"],
                "workflow_diagram_text": text,
                "parameters": {} if parameters is None else parameters,
                "notification": notification,
                "tags": [] if tags is None else tags,
                "version": 1,
                "is_active": True,
                "is_checked_out": False,
                "checked_out_by": None,
                "checked_out_at": None,
                "source_connector_id": source,
                "target_connector_id": target,
                "created_by": caller.user_id,
                "created_at": call.now,
                "updated_by": caller.user_id,
                "updated_at": call.now,
                "extra": {},
            }
            position = await store.next_position(
                conn, "workflow_tree_entries", "job_id", job["job_id"]
            )
            await self._insert(conn, row, position)
            await conn.execute(
                "INSERT INTO workflow_tree_entries (id, subscription_id, workspace_id, job_id, "
                "tree_position, workflow_id, workflow_name, summary_diagram, synced_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())",
                link_key("workflow_tree_entry", job["job_id"], str(position)),
                caller.subscription_id, workspace_id, job["job_id"], position,
                row["workflow_id"], name, text,
            )  # fmt: skip
            await store.touch_workspace(conn, call, workspace_id)
            rendered = render_row(row, WORKFLOW)
            await self._audit(
                conn, call, "insert", "created", row, current=rendered, workspaces=[workspace_id]
            )
        return created("Workflow added successfully", rendered)

    async def update_workflow(self, call: Call) -> RecordedResponse:
        workflow_id = call.text("workflow_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            stored = decoded_row(await store.load_workflow(conn, workflow_id, lock=True), _JSONB)
            row = dict(stored)
            previous = render_row(stored, WORKFLOW)
            renamed = False
            edited = ["version", "updated_by", "updated_at"]
            if call.given("workflow_name"):
                name = call.text("workflow_name")
                if name != previous["workflow_name"]:
                    await self._check_name(conn, stored["job_id"], name, workflow_id)
                    row["workflow_name"] = name
                    edited.append("workflow_name")
                    renamed = True
            for field, column, kind in _EDITABLE:
                if not call.given(field):
                    continue
                edited.append(field)
                if kind == "text":
                    row[column] = call.optional_text(field)
                elif kind == "object":
                    row[column] = call.optional_object(field)
                elif kind == "list":
                    row[column] = call.optional_list_of_text(field)
                else:
                    row[column] = call.optional_flag(field)
            expected = _expected_version(call)
            current = stored["version"] or 1
            if expected is not None and expected != current:
                raise ApiError(409, STALE_VERSION.format(expected=expected, current=current))
            row["version"] = current + 1
            row["updated_by"] = call.caller.user_id
            row["updated_at"] = call.now
            row["extra"] = store.without_kept(row["extra"], edited)
            await self._update(conn, row, expected_version=stored["version"])
            workspaces: list[str] = []
            if renamed:
                workspaces = await self._rename_summary(conn, call, row)
            rendered = render_row(row, WORKFLOW)
            await self._audit(
                conn, call, "update", "updated", row, previous=previous, current=rendered,
                workspaces=workspaces,
            )  # fmt: skip
        return ok("Workflow updated successfully", rendered)

    async def delete_workflow(self, call: Call) -> RecordedResponse:
        workflow_id = call.text("workflow_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            row = decoded_row(await store.load_workflow(conn, workflow_id, lock=True), _JSONB)
            previous = render_row(row, WORKFLOW)
            await conn.execute(
                "UPDATE workflows SET is_deleted = true, deleted_at = $2, updated_by = $3, "
                "updated_at = $2, synced_at = now() WHERE workflow_id = $1",
                workflow_id,
                call.now,
                call.caller.user_id,
            )
            placed = await conn.fetch(
                "UPDATE workflow_tree_entries SET is_deleted = true, synced_at = now() "
                "WHERE workflow_id = $1 AND workspace_id IS NOT DISTINCT FROM $2 "
                "RETURNING workspace_id",
                workflow_id,
                row["workspace_id"],
            )
            workspaces = sorted({entry["workspace_id"] for entry in placed})
            for workspace_id in workspaces:
                await store.touch_workspace(conn, call, workspace_id)
            workspaces += await store.drop_dependencies(conn, [workflow_id])
            await self._audit(
                conn, call, "delete", "deleted", row, previous=previous, workspaces=workspaces
            )
        return ok("Workflow deleted successfully", {"workflow_id": workflow_id})

    async def check_out(self, call: Call) -> RecordedResponse:
        return await self._check(call, checking_in=False)

    async def check_in(self, call: Call) -> RecordedResponse:
        return await self._check(call, checking_in=True)

    async def _check(self, call: Call, *, checking_in: bool) -> RecordedResponse:
        workflow_id = call.text("workflow_id")
        user_id = call.caller.user_id
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            stored = decoded_row(await store.load_workflow(conn, workflow_id, lock=True), _JSONB)
            holder = stored["checked_out_by"]
            if stored["is_checked_out"] and holder not in (None, user_id):
                doing = "checked in" if checking_in else "checked out"
                raise ApiError(403, f"Workflow is checked out by {holder}; it cannot be {doing}")
            previous = render_row(stored, WORKFLOW)
            row = dict(stored)
            version = stored["version"] or 1
            if checking_in:
                version += 1
                row.update(
                    version=version, is_checked_out=False, checked_out_by=None,
                    checked_out_at=None, updated_by=user_id, updated_at=call.now,
                )  # fmt: skip
            else:
                row.update(is_checked_out=True, checked_out_by=user_id, checked_out_at=call.now)
            row["extra"] = store.without_kept(
                row["extra"],
                ["version", "is_checked_out", "checked_out_by", "checked_out_at"]
                + (["updated_by", "updated_at"] if checking_in else []),
            )
            await self._update(conn, row, expected_version=stored["version"])
            rendered = render_row(row, WORKFLOW)
            version_id = str(ObjectId())
            await conn.execute(
                "INSERT INTO workflow_versions (id, version_id, subscription_id, workflow_id, "
                "version_number, change_type, comment, workflow_snapshot, created_by, created_at, "
                "synced_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, now())",
                row_key("workflow_version", version_id), version_id, call.caller.subscription_id,
                workflow_id, version, "check_in" if checking_in else "check_out",
                call.optional_text("comment"), json.dumps(rendered, ensure_ascii=False),
                user_id, call.now,
            )  # fmt: skip
            await self._audit(
                conn, call, "update", "updated", row, previous=previous, current=rendered
            )
            await store.queue_documents(
                conn, call.caller.subscription_id, "workflow_versions", "insert", [version_id]
            )
        message = (
            "Workflow checked in successfully"
            if checking_in
            else "Workflow checked out successfully"
        )
        return ok(message, rendered)

    # --- shared steps ----------------------------------------------------------------------

    @staticmethod
    def _values(row: Row) -> list[Any]:
        values = {**row, "workflow_diagram": parsed_diagram(row["workflow_diagram_text"])}
        return [
            json.dumps(values[c], ensure_ascii=False) if c in _JSONB else values[c] for c in _STORED
        ]

    async def _insert(self, conn: asyncpg.Connection, row: Row, position: int) -> None:
        casts = [f"${i}::jsonb" if c in _JSONB else f"${i}" for i, c in enumerate(_STORED, 10)]
        casts[_STORED.index("workflow_diagram")] = (
            f"${_STORED.index('workflow_diagram') + 10}::jsonb"
        )
        try:
            await conn.execute(
                "INSERT INTO workflows (id, workflow_id, subscription_id, workspace_id, folder_id, "
                f"job_id, tree_position, created_by, created_at, {', '.join(_STORED)}, synced_at) "
                f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, {', '.join(casts)}, now())",
                row_key("workflow", row["workflow_id"]), row["workflow_id"],
                row["subscription_id"], row["workspace_id"], row["folder_id"], row["job_id"],
                position, row["created_by"], row["created_at"], *self._values(row),
            )  # fmt: skip
        except asyncpg.UniqueViolationError as exc:
            raise ApiError(409, DUPLICATE) from exc

    async def _update(self, conn: asyncpg.Connection, row: Row, *, expected_version: Any) -> None:
        """Store the row; the version guard holds even if a caller forgot the row lock."""
        casts = [f"${i}::jsonb" if c in _JSONB else f"${i}" for i, c in enumerate(_STORED, 3)]
        casts[_STORED.index("workflow_diagram")] = (
            f"${_STORED.index('workflow_diagram') + 3}::jsonb"
        )
        sets = ", ".join(f"{c} = {cast}" for c, cast in zip(_STORED, casts, strict=True))
        try:
            status = await conn.execute(
                f"UPDATE workflows SET {sets}, synced_at = now() "
                "WHERE workflow_id = $1 AND version IS NOT DISTINCT FROM $2",
                row["workflow_id"],
                expected_version,
                *self._values(row),
            )
        except asyncpg.UniqueViolationError as exc:
            raise ApiError(409, DUPLICATE) from exc
        if status != "UPDATE 1":
            raise ApiError(409, STALE_VERSION.format(expected=expected_version, current="newer"))

    @staticmethod
    async def _rename_summary(conn: asyncpg.Connection, call: Call, row: Row) -> list[str]:
        """Carry a new name into the tree's summary copy (its diagram stays as it was)."""
        placed = await conn.fetch(
            "UPDATE workflow_tree_entries SET workflow_name = $2, synced_at = now() "
            "WHERE workflow_id = $1 AND workspace_id IS NOT DISTINCT FROM $3 "
            "RETURNING workspace_id",
            row["workflow_id"],
            row["workflow_name"],
            row["workspace_id"],
        )
        workspaces = sorted({entry["workspace_id"] for entry in placed})
        for workspace_id in workspaces:
            await store.touch_workspace(conn, call, workspace_id)
        return workspaces

    @staticmethod
    async def _audit(
        conn: asyncpg.Connection, call: Call, operation: str, action: str, row: Row, *,
        previous: Any = None, current: Any = None, workspaces: list[str] | None = None,
    ) -> None:  # fmt: skip
        activity = await record_activity(
            conn, call, action, "workflow", row["workflow_id"], current["workflow_name"]
            if current else previous["workflow_name"], previous=previous, current=current,
        )  # fmt: skip
        subscription_id = call.caller.subscription_id
        await store.queue_documents(
            conn, subscription_id, "workflow", operation, [row["workflow_id"]], activity
        )
        await store.queue_documents(conn, subscription_id, "workspace", "update", workspaces or [])
