"""Workspaces, folders and jobs from PostgreSQL, answering as legacy does.

Legacy edits a tree by reading the whole workspace document, changing it in Python and
writing it all back, so concurrent edits of one workspace lose each other's changes, and
the activity entry is a separate insert. Here each edit changes only its rows, under the
workspace row's lock, in one transaction with its audit row and its outbox rows; deleting
a workspace, folder or job soft-deletes everything below it in that same transaction and
drops the deleted workflows from every dependency list.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from proxy.handlers import tree_store as store
from proxy.handlers._pg import (
    ApiError,
    Call,
    created,
    listed,
    ok,
    record_activity,
    tenant_transaction,
)
from proxy.handlers.tree_render import (
    FOLDER,
    WORKSPACE,
    render_folder,
    render_job,
    render_row,
    render_tree,
)
from schema.keys import row_key
from schema.tenancy import ensure_subscription
from strangler.contract import new_id
from strangler.exchange import RecordedResponse

__all__ = ["TreeNodeHandlers"]

Row = dict[str, Any]


async def _unique(conn: asyncpg.Connection, statement: str, *args: Any, message: str) -> None:
    """Run a write that a partial unique index may refuse: a lost race for a name is a 409."""
    try:
        await conn.execute(statement, *args)
    except asyncpg.UniqueViolationError as exc:
        raise ApiError(409, message) from exc


class TreeNodeHandlers:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # --- rendering a subtree ---------------------------------------------------------------

    @staticmethod
    async def _folder_view(conn: asyncpg.Connection, folder: Row) -> dict[str, Any]:
        _, jobs, deps, summaries = await store.fetch_tree(
            conn, folder["workspace_id"], folder_id=folder["folder_id"]
        )
        by_job: dict[str, list[Any]] = {}
        for summary in summaries:
            by_job.setdefault(summary["job_id"], []).append(summary)
        return render_folder(
            folder,
            [
                render_job(job, deps.get(job["job_id"], []), by_job.get(job["job_id"], []))
                for job in jobs
            ],
        )

    @staticmethod
    async def _job_view(conn: asyncpg.Connection, job: Row) -> dict[str, Any]:
        _, _, deps, summaries = await store.fetch_tree(
            conn, job["workspace_id"], folder_id=job["folder_id"], job_id=job["job_id"]
        )
        return render_job(job, deps.get(job["job_id"], []), summaries)

    # --- workspaces ------------------------------------------------------------------------

    async def get_all_workspaces(self, call: Call) -> RecordedResponse:
        page = call.page()
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            rows = await conn.fetch(
                f"SELECT {store.WORKSPACE_COLUMNS}, {store.LISTED_TOTAL} FROM workspaces "
                "WHERE NOT is_deleted "
                "ORDER BY created_at DESC NULLS LAST, workspace_id LIMIT $1 OFFSET $2",
                page.per_page,
                page.skip,
            )
            total = await store.listed_total(
                conn, rows, page.skip, "SELECT count(*) FROM workspaces WHERE NOT is_deleted"
            )
        items = [render_row(row, WORKSPACE) for row in rows]
        return listed("Workspaces fetched successfully", items, total)

    async def get_workspace(self, call: Call) -> RecordedResponse:
        workspace_id = call.query_id("workspace_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            workspace = await store.load_workspace(conn, workspace_id)
            folders, jobs, deps, summaries = await store.fetch_tree(conn, workspace_id)
        tree = render_tree(workspace, folders, jobs, deps, summaries)
        return ok("Workspace fetched successfully", tree)

    async def _check_workspace_name(
        self, conn: asyncpg.Connection, call: Call, name: str, except_id: str | None
    ) -> None:
        if await store.name_taken(
            conn, "workspaces", "workspace_name", "subscription_id",
            call.caller.subscription_id, name, "workspace_id", except_id,
        ):  # fmt: skip
            raise ApiError(409, "Workspace name already exists")

    async def add_workspace(self, call: Call) -> RecordedResponse:
        name = call.text("workspace_name")
        description = call.optional_text("description")
        caller = call.caller
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            await self._check_workspace_name(conn, call, name, None)
            row: Row = {
                "workspace_id": new_id("workspace"),
                "workspace_name": name,
                "description": description,
                "subscription_id": caller.subscription_id,
                "owner_id": caller.user_id,
                "created_by": caller.user_id,
                "created_at": call.now,
                "updated_by": caller.user_id,
                "updated_at": call.now,
            }
            rendered = render_row(row, WORKSPACE)
            await ensure_subscription(conn, caller.subscription_id)
            await _unique(
                conn,
                "INSERT INTO workspaces (id, workspace_id, subscription_id, workspace_name, "
                "description, owner_id, created_by, created_at, updated_by, updated_at, synced_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())",
                row_key("workspace", row["workspace_id"]),
                *(
                    row[c]
                    for c in (
                        "workspace_id",
                        "subscription_id",
                        "workspace_name",
                        "description",
                        "owner_id",
                        "created_by",
                        "created_at",
                        "updated_by",
                        "updated_at",
                    )
                ),
                message="Workspace name already exists",
            )
            await self._audit(
                conn, call, "insert", "created", "workspace", row["workspace_id"], name,
                row["workspace_id"], current=rendered,
            )  # fmt: skip
        return created("Workspace added successfully", rendered)

    async def update_workspace(self, call: Call) -> RecordedResponse:
        workspace_id = call.text("workspace_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            row = dict(await store.load_workspace(conn, workspace_id, lock=True))
            previous = render_row(row, WORKSPACE)
            if call.given("workspace_name"):
                name = call.text("workspace_name")
                await self._check_workspace_name(conn, call, name, workspace_id)
                row["workspace_name"] = name
            if call.given("description"):
                row["description"] = call.optional_text("description")
            row["extra"] = store.without_kept(
                row["extra"],
                [f for f in ("workspace_name", "description") if call.given(f)]
                + ["updated_by", "updated_at"],
            )
            row["updated_by"] = call.caller.user_id
            row["updated_at"] = call.now
            await _unique(
                conn,
                "UPDATE workspaces SET workspace_name = $2, description = $3, updated_by = $4, "
                "updated_at = $5, extra = $6::jsonb, synced_at = now() WHERE workspace_id = $1",
                workspace_id, row["workspace_name"], row["description"], row["updated_by"],
                row["updated_at"], _json(row["extra"]),
                message="Workspace name already exists",
            )  # fmt: skip
            rendered = render_row(row, WORKSPACE)
            await self._audit(
                conn, call, "update", "updated", "workspace", workspace_id,
                rendered["workspace_name"], workspace_id, previous=previous, current=rendered,
            )  # fmt: skip
        return ok("Workspace updated successfully", rendered)

    async def delete_workspace(self, call: Call) -> RecordedResponse:
        workspace_id = call.text("workspace_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            row = await store.load_workspace(conn, workspace_id, lock=True)
            reason = call.optional_text("reason_to_delete")
            previous = render_row(row, WORKSPACE)
            await conn.execute(
                "UPDATE workspaces SET is_deleted = true, deleted_at = $2, reason_to_delete = $3, "
                "updated_by = $4, updated_at = $2, synced_at = now() WHERE workspace_id = $1",
                workspace_id,
                call.now,
                reason,
                call.caller.user_id,
            )
            gone = await store.cascade_delete(conn, call.now, workspace_id=workspace_id)
            await self._after_delete(conn, call, gone)
            await self._audit(
                conn, call, "delete", "deleted", "workspace", workspace_id,
                previous["workspace_name"], workspace_id, previous=previous, workflows=gone,
            )  # fmt: skip
        return ok("Workspace deleted successfully", {"workspace_id": workspace_id})

    # --- folders ---------------------------------------------------------------------------

    async def _check_folder_name(
        self, conn: asyncpg.Connection, workspace_id: str, name: str, current: Row | None
    ) -> None:
        if current is not None and render_row(current, FOLDER)["folder_name"] == name:
            return
        if await store.name_taken(
            conn, "folders", "folder_name", "workspace_id", workspace_id, name, "folder_id", None
        ):
            raise ApiError(409, "Folder name already exists")

    async def add_folder(self, call: Call) -> RecordedResponse:
        workspace_id = call.text("workspace_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            await store.load_workspace(conn, workspace_id, lock=True)
            name = call.text("folder_name")
            description = call.optional_text("description")
            await self._check_folder_name(conn, workspace_id, name, None)
            folder: Row = {
                "folder_id": new_id("folder"),
                "workspace_id": workspace_id,
                "folder_name": name,
                "description": description,
                "created_by": call.caller.user_id,
                "created_at": call.now,
            }
            position = await store.next_position(conn, "folders", "workspace_id", workspace_id)
            await _unique(
                conn,
                "INSERT INTO folders (id, folder_id, subscription_id, workspace_id, folder_name, "
                "description, tree_position, created_by, created_at, synced_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())",
                row_key("folder", folder["folder_id"]), folder["folder_id"],
                call.caller.subscription_id, workspace_id, name, description, position,
                folder["created_by"], folder["created_at"],
                message="Folder name already exists",
            )  # fmt: skip
            await store.touch_workspace(conn, call, workspace_id)
            rendered = render_folder(folder, [])
            await self._audit(
                conn, call, "update", "created", "folder", folder["folder_id"], name,
                workspace_id, current=rendered,
            )  # fmt: skip
        return created("Folder added successfully", rendered)

    async def update_folder(self, call: Call) -> RecordedResponse:
        workspace_id = call.text("workspace_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            await store.load_workspace(conn, workspace_id, lock=True)
            folder = dict(await store.load_folder(conn, workspace_id, call.text("folder_id")))
            previous = await self._folder_view(conn, folder)
            if call.given("folder_name"):
                name = call.text("folder_name")
                await self._check_folder_name(conn, workspace_id, name, folder)
                if name != previous["folder_name"]:
                    folder["folder_name"] = name
                    folder["extra"] = store.without_kept(folder["extra"], ["folder_name"])
            if call.given("description"):
                folder["description"] = call.optional_text("description")
                folder["extra"] = store.without_kept(folder["extra"], ["description"])
            await _unique(
                conn,
                "UPDATE folders SET folder_name = $2, description = $3, extra = $4::jsonb, "
                "synced_at = now() WHERE folder_id = $1",
                folder["folder_id"], folder["folder_name"], folder["description"],
                _json(folder["extra"]),
                message="Folder name already exists",
            )  # fmt: skip
            await store.touch_workspace(conn, call, workspace_id)
            rendered = await self._folder_view(conn, folder)
            await self._audit(
                conn, call, "update", "updated", "folder", folder["folder_id"],
                rendered["folder_name"], workspace_id, previous=previous, current=rendered,
            )  # fmt: skip
        return ok("Folder updated successfully", rendered)

    async def delete_folder(self, call: Call) -> RecordedResponse:
        workspace_id = call.text("workspace_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            await store.load_workspace(conn, workspace_id, lock=True)
            folder = await store.load_folder(conn, workspace_id, call.text("folder_id"))
            folder_id = folder["folder_id"]
            previous = await self._folder_view(conn, dict(folder))
            await conn.execute(
                "UPDATE folders SET is_deleted = true, deleted_at = $2, synced_at = now() "
                "WHERE folder_id = $1",
                folder_id,
                call.now,
            )
            gone = await store.cascade_delete(
                conn, call.now, workspace_id=workspace_id, folder_id=folder_id
            )
            await self._after_delete(conn, call, gone)
            await store.touch_workspace(conn, call, workspace_id)
            await self._audit(
                conn, call, "update", "deleted", "folder", folder_id, previous["folder_name"],
                workspace_id, previous=previous, workflows=gone,
            )  # fmt: skip
        return ok("Folder deleted successfully", {"folder_id": folder_id})

    # --- jobs ------------------------------------------------------------------------------

    async def _check_job_name(
        self, conn: asyncpg.Connection, folder_id: str, name: str, current: str | None
    ) -> None:
        if current is not None and current == name:
            return
        if await store.name_taken(
            conn, "jobs", "job_name", "folder_id", folder_id, name, "job_id", None
        ):
            raise ApiError(409, "Job name already exists")

    async def add_job(self, call: Call) -> RecordedResponse:
        workspace_id = call.text("workspace_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            await store.load_workspace(conn, workspace_id, lock=True)
            folder = await store.load_folder(conn, workspace_id, call.text("folder_id"))
            name = call.text("job_name")
            environment = call.optional_text("environment")
            description = call.optional_text("description")
            await self._check_job_name(conn, folder["folder_id"], name, None)
            job: Row = {
                "job_id": new_id("job"),
                "workspace_id": workspace_id,
                "folder_id": folder["folder_id"],
                "job_name": name,
                "description": description,
                "environment": environment,
                "created_by": call.caller.user_id,
                "created_at": call.now,
            }
            position = await store.next_position(conn, "jobs", "folder_id", folder["folder_id"])
            await _unique(
                conn,
                "INSERT INTO jobs (id, job_id, subscription_id, workspace_id, folder_id, job_name, "
                "description, environment, tree_position, created_by, created_at, synced_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())",
                row_key("job", job["job_id"]), job["job_id"], call.caller.subscription_id,
                workspace_id, folder["folder_id"], name, description, environment, position,
                job["created_by"], job["created_at"],
                message="Job name already exists",
            )  # fmt: skip
            await store.touch_workspace(conn, call, workspace_id)
            rendered = render_job(job, [], [])
            await self._audit(
                conn, call, "update", "created", "job", job["job_id"], name, workspace_id,
                current=rendered,
            )  # fmt: skip
        return created("Job added successfully", rendered)

    async def update_job(self, call: Call) -> RecordedResponse:
        workspace_id = call.text("workspace_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            await store.load_workspace(conn, workspace_id, lock=True)
            folder = await store.load_folder(conn, workspace_id, call.text("folder_id"))
            job = dict(await store.load_job(conn, folder["folder_id"], call.text("job_id")))
            previous = await self._job_view(conn, job)
            if call.given("job_name"):
                name = call.text("job_name")
                await self._check_job_name(conn, folder["folder_id"], name, previous["job_name"])
                if name != previous["job_name"]:
                    job["job_name"] = name
                    job["extra"] = store.without_kept(job["extra"], ["job_name"])
            for field in ("environment", "description"):
                if call.given(field):
                    job[field] = call.optional_text(field)
                    job["extra"] = store.without_kept(job["extra"], [field])
            dependencies = None
            if call.given("workflow_dependency"):
                dependencies = call.optional_list_of_text("workflow_dependency") or []
                job["extra"] = store.without_kept(job["extra"], ["workflow_dependency"])
            await _unique(
                conn,
                "UPDATE jobs SET job_name = $2, environment = $3, description = $4, "
                "extra = $5::jsonb, synced_at = now() WHERE job_id = $1",
                job["job_id"], job["job_name"], job["environment"], job["description"],
                _json(job["extra"]),
                message="Job name already exists",
            )  # fmt: skip
            if dependencies is not None:
                await _replace_dependencies(conn, call, job["job_id"], dependencies)
            await store.touch_workspace(conn, call, workspace_id)
            rendered = await self._job_view(conn, job)
            await self._audit(
                conn, call, "update", "updated", "job", job["job_id"], rendered["job_name"],
                workspace_id, previous=previous, current=rendered,
            )  # fmt: skip
        return ok("Job updated successfully", rendered)

    async def delete_job(self, call: Call) -> RecordedResponse:
        workspace_id = call.text("workspace_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            await store.load_workspace(conn, workspace_id, lock=True)
            folder = await store.load_folder(conn, workspace_id, call.text("folder_id"))
            job = dict(await store.load_job(conn, folder["folder_id"], call.text("job_id")))
            reason = call.optional_text("reason_to_delete")
            previous = await self._job_view(conn, job)
            await conn.execute(
                "UPDATE jobs SET is_deleted = true, deleted_at = $2, reason_to_delete = $3, "
                "synced_at = now() WHERE job_id = $1",
                job["job_id"],
                call.now,
                reason,
            )
            gone = await store.cascade_delete(
                conn, call.now, workspace_id=workspace_id, job_id=job["job_id"]
            )
            await self._after_delete(conn, call, gone)
            await store.touch_workspace(conn, call, workspace_id)
            await self._audit(
                conn, call, "update", "deleted", "job", job["job_id"], previous["job_name"],
                workspace_id, previous=previous, workflows=gone,
            )  # fmt: skip
        return ok("Job deleted successfully", {"job_id": job["job_id"]})

    # --- shared steps ----------------------------------------------------------------------

    @staticmethod
    async def _after_delete(conn: asyncpg.Connection, call: Call, workflows: list[str]) -> None:
        """Workflows deleted with their branch leave every dependency list; the workspaces
        whose lists changed are queued for the reverse sync."""
        changed = await store.drop_dependencies(conn, workflows)
        await store.queue_documents(
            conn, call.caller.subscription_id, "workspace", "update", changed
        )

    @staticmethod
    async def _audit(
        conn: asyncpg.Connection, call: Call, operation: str, action: str, object_type: str,
        object_id: str, object_name: Any, workspace_id: str, *, previous: Any = None,
        current: Any = None, workflows: list[str] | None = None,
    ) -> None:  # fmt: skip
        """The audit row, and the outbox rows of the legacy documents this write changed:
        the workspace document (carrying the activity) and any workflow deleted with it."""
        activity = await record_activity(
            conn, call, action, object_type, object_id, object_name,
            previous=previous, current=current,
        )  # fmt: skip
        subscription_id = call.caller.subscription_id
        await store.queue_documents(
            conn, subscription_id, "workspace", operation, [workspace_id], activity
        )
        await store.queue_documents(conn, subscription_id, "workflow", "delete", workflows or [])


async def _replace_dependencies(
    conn: asyncpg.Connection, call: Call, job_id: str, workflow_ids: list[str]
) -> None:
    """The job's dependency list as given, in order (ids are not checked, as in legacy; a
    repeated id is kept once, at its first place: the table keys on (job, workflow))."""
    await conn.execute("DELETE FROM workflow_dependencies WHERE job_id = $1", job_id)
    unique = list(dict.fromkeys(workflow_ids))
    if unique:
        await conn.executemany(
            "INSERT INTO workflow_dependencies (job_id, workflow_id, subscription_id, position, "
            "synced_at) VALUES ($1, $2, $3, $4, now())",
            [(job_id, wf, call.caller.subscription_id, i) for i, wf in enumerate(unique)],
        )


def _json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value or {})
