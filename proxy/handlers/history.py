"""Job runs and user activity read from PostgreSQL, answering as legacy does.

Legacy's answers are those of ``legacy_emulator/routes/job_runs.py`` and ``activity.py``:
the tenant's entries, filtered by exact stored values, ``from``/``to`` bounds inclusive
(an entry with no readable ``created_at`` is then left out), newest first, a page and the
count of all. Rows convert to legacy documents through the entities' specs
(:mod:`migrators.entities.runs`), as for every other entity; an entry with no readable
date sits at :data:`schema.partitions.NO_DATE`, so ``created_at DESC`` lists it last,
where legacy does.

Every query runs on an index of the partitioned tables (schema 0004) as ``strangler_app``
under row-level security: the tenant's list index for a page, the workflow's for
``workflow_id``, the user's and the object's for ``getActivity``; ``from``/``to`` prune
whole monthly partitions.

``runNow`` starts a run as legacy does (the same answer, the same run document, the same
activity entry) but does not run it in the API process: the run's row, its audit and
outbox rows and its ``run_dispatch`` row (schema 0041) are one transaction, and the run
worker (``strangler runs work``, :mod:`proxy.runs_worker`) takes it from the Redis Stream.

What stays different, on purpose (shadow_rules.yaml): entries written in the same
millisecond by legacy are listed in insertion order; here by their id, newest id first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg

from migrators.entities.runs import SPECS as RUN_SPECS
from migrators.entities.runs import STATUSES
from migrators.spec import Document, MappingContext, Quarantined
from proxy.handlers._pg import (
    LISTED_TOTAL,
    ApiError,
    Call,
    decoded_row,
    listed,
    listed_total,
    ok,
    record_activity,
    record_outbox,
    tenant_transaction,
)
from proxy.handlers.access import Rendered, render_fields
from proxy.handlers.tree_store import load_workflow
from schema.partitions import NO_DATE
from schema.tenancy import ensure_subscription
from strangler.contract import json_safe, new_id, render_datetime
from strangler.exchange import RecordedResponse

__all__ = ["DISPATCH_CHANNEL", "ActivityHandlers", "RunHandlers", "insert_row", "start_run"]

# The channel a committed runNow NOTIFYs (schema 0041): the run worker's dispatcher LISTENs.
DISPATCH_CHANNEL = "run_dispatch"

RUNS_SPEC, ACTIVITY_SPEC = RUN_SPECS
_CONTEXT = MappingContext()

# Rendered fields in legacy's order (legacy_emulator.render JOB_RUN, ACTIVITY).
JOB_RUN: Rendered = (
    ("job_run_id", "raw"), ("workflow_id", "raw"), ("job_id", "raw"), ("workspace_id", "raw"),
    ("subscription_id", "raw"), ("status", "raw"), ("created_at", "datetime"),
    ("completed_at", "datetime"), ("duration_ms", "int"), ("triggered_by", "raw"),
    ("trigger_type", "raw"), ("error_message", "raw"), ("rows_processed", "int"),
)  # fmt: skip
ACTIVITY: Rendered = (
    ("subscription_id", "raw"), ("UserId", "raw"), ("action", "raw"), ("object_type", "raw"),
    ("object_id", "raw"), ("object_name", "raw"), ("ip_address", "raw"), ("user_agent", "raw"),
    ("previous_data", "raw"), ("current_data", "raw"), ("created_at", "datetime"),
)  # fmt: skip

_RUN_COLUMNS = (
    "id, job_run_id, workflow_id, job_id, workspace_id, subscription_id, status, created_at, "
    "completed_at, duration_ms, triggered_by, trigger_type, error_message, rows_processed, "
    "extra"
)
ACTIVITY_COLUMNS = (
    "id, activity_id, subscription_id, user_id, action, object_type, object_id, object_name, "
    "ip_address, user_agent, previous_data, current_data, created_at, extra"
)
_JSONB = ("extra", "logs", "previous_data", "current_data")

# Legacy hides an entry whose d_flag reads as true (strangler.contract.is_deleted); these
# documents have no d_flag of their own, so one found is an unknown field kept in extra.
_FLAG = "extra -> 'd_flag'"
VISIBLE = f"""(NOT extra ? 'd_flag' OR NOT CASE jsonb_typeof({_FLAG})
    WHEN 'string' THEN lower(btrim({_FLAG} #>> '{{}}')) IN ('true', '1', 'yes')
    WHEN 'boolean' THEN ({_FLAG})::boolean
    WHEN 'number' THEN ({_FLAG})::numeric <> 0
    WHEN 'object' THEN {_FLAG} <> '{{}}'::jsonb
    WHEN 'array' THEN jsonb_array_length({_FLAG}) > 0
    ELSE false END)"""


class _Filters:
    """A WHERE clause built from the request, its values as bind parameters only."""

    def __init__(self) -> None:
        self.clauses: list[str] = [VISIBLE]
        self.args: list[Any] = []

    def add(self, clause: str, value: Any) -> None:
        self.args.append(value)
        self.clauses.append(clause.replace("?", f"${len(self.args)}"))

    def window(self, call: Call) -> None:
        """``from``/``to`` as legacy reads them: inclusive, undated entries left out."""
        start, end = call.query_moment("from"), call.query_moment("to")
        if start is None and end is None:
            return
        self.add("created_at > ?", NO_DATE)
        if start is not None:
            self.add("created_at >= ?", start)
        if end is not None:
            self.add("created_at <= ?", end)

    @property
    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.clauses)

    def page_query(
        self, call: Call, columns: str, table: str, order: str
    ) -> tuple[str, str, list[Any], int]:
        """(page SQL, count SQL, the page's arguments, skip), ``from``/``to`` added; the count
        takes the page's arguments but the last two (limit, offset)."""
        self.window(call)
        page = call.page()
        n = len(self.args)
        page_sql = (
            f"SELECT {columns}, {LISTED_TOTAL} FROM {table}{self.sql} "
            f"ORDER BY {order} LIMIT ${n + 1} OFFSET ${n + 2}"
        )
        args = [*self.args, page.per_page, page.skip]
        return page_sql, f"SELECT count(*) FROM {table}{self.sql}", args, page.skip


async def _listed(
    pool: asyncpg.Pool,
    call: Call,
    query: tuple[str, str, list[Any], int],
    document_of: Callable[[Mapping[str, Any]], Document],
    rendered: Rendered,
    message: str,
) -> RecordedResponse:
    """One page of a list query as legacy answers it, with the count of all."""
    page_sql, count_sql, args, skip = query
    async with tenant_transaction(pool, call.caller.subscription_id) as conn:
        rows = await conn.fetch(page_sql, *args)
        total = await listed_total(conn, rows, skip, count_sql, *args[:-2])
    return listed(message, [render_fields(document_of(row), rendered) for row in rows], total)


class RunHandlers:
    entity = "job_runs"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @staticmethod
    def document_of(record: Mapping[str, Any]) -> Document:
        assert RUNS_SPEC.to_document is not None
        row = {"logs": None, **decoded_row(record, _JSONB)}
        return RUNS_SPEC.to_document({"job_runs": [row]}, _CONTEXT)

    @staticmethod
    def list_query(call: Call) -> tuple[str, str, list[Any], int]:
        """(page SQL, count SQL, the page's arguments, skip) of a getRuns request."""
        filters = _Filters()
        workflow_id = call.query_text("workflow_id")
        if workflow_id is not None:
            filters.add("workflow_id = ?", workflow_id)
        status = call.query_text("status")
        if status is not None:  # legacy matches the value stored, dirty ones too
            if status in STATUSES:
                filters.add("status = ?", status)
            else:
                filters.add("extra -> '$unreadable' -> 'status' = to_jsonb(?::text)", status)
        return filters.page_query(call, _RUN_COLUMNS, "job_runs", "created_at DESC, job_run_id")

    async def get_runs(self, call: Call) -> RecordedResponse:
        return await _listed(self._pool, call, self.list_query(call), self.document_of, JOB_RUN,
                             "Runs fetched successfully")  # fmt: skip

    async def get_run(self, call: Call) -> RecordedResponse:
        run_id = call.query_id("job_run_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            row = await conn.fetchrow(
                f"SELECT {_RUN_COLUMNS}, logs FROM job_runs WHERE job_run_id = $1 AND {VISIBLE} "
                "ORDER BY created_at DESC LIMIT 1",
                run_id,
            )
        if row is None:
            raise ApiError(404, "Job run not found")
        assert RUNS_SPEC.to_document is not None
        document = RUNS_SPEC.to_document({"job_runs": [decoded_row(row, _JSONB)]}, _CONTEXT)
        rendered = render_fields(document, JOB_RUN)
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
        return ok("Run fetched successfully", rendered)

    async def run_now(self, call: Call) -> RecordedResponse:
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            answer = await start_run(call, conn)
        return ok("Workflow run queued", answer)


async def insert_row(conn: asyncpg.Connection, table: str, row: Mapping[str, Any]) -> None:
    """One mapped row inserted as it is (jsonb values sent as JSON text)."""
    columns = list(row)
    values = [
        json.dumps(row[c], ensure_ascii=False) if c in _JSONB and row[c] is not None else row[c]
        for c in columns
    ]
    casts = [f"${n}::jsonb" if c in _JSONB else f"${n}" for n, c in enumerate(columns, 1)]
    await conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(casts)})", *values
    )


async def start_run(call: Call, conn: asyncpg.Connection) -> dict[str, Any]:
    """legacy's runNow inside the caller's transaction: the run, its audit and outbox rows,
    and its dispatch row (with a NOTIFY the dispatcher hears once this commits)."""
    workflow = await load_workflow(conn, call.text("workflow_id"))
    caller, now = call.caller, call.now
    run: Document = {
        "job_run_id": new_id("job_run"),
        "workflow_id": workflow["workflow_id"],
        "job_id": workflow["job_id"],
        "workspace_id": workflow["workspace_id"],
        "subscription_id": caller.subscription_id,
        "status": "queued",
        "created_at": now,
        "completed_at": None,
        "duration_ms": None,
        "triggered_by": caller.user_id,
        "trigger_type": "manual",
        "error_message": None,
        "rows_processed": None,
        "logs": [{"ts": now, "level": "INFO", "message": f"Run queued by {caller.user_id}"}],
    }
    mapped = RUNS_SPEC.map_document(run, _CONTEXT)
    if isinstance(mapped, Quarantined):  # built here: a bug, answered 500
        raise RuntimeError(f"run document not mappable: {mapped.reason}")
    await ensure_subscription(conn, caller.subscription_id)
    await insert_row(conn, "job_runs", mapped.rows["job_runs"][0])
    answer = {"job_run_id": run["job_run_id"], "status": "queued"}
    activity = await record_activity(
        conn, call, "executed", "workflow", workflow["workflow_id"], workflow["workflow_name"],
        current=answer,
    )  # fmt: skip
    await record_outbox(
        conn, caller.subscription_id, "job_runs", run["job_run_id"], "insert",
        {"activity": activity},
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO run_dispatch (job_run_id, subscription_id, workflow_id) VALUES ($1, $2, $3)",
        run["job_run_id"],
        caller.subscription_id,
        workflow["workflow_id"],
    )
    await conn.execute(f"NOTIFY {DISPATCH_CHANNEL}")
    return answer


class ActivityHandlers:
    entity = "activity"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @staticmethod
    def document_of(record: Mapping[str, Any]) -> Document:
        assert ACTIVITY_SPEC.to_document is not None
        return ACTIVITY_SPEC.to_document({"user_activity": [decoded_row(record, _JSONB)]}, _CONTEXT)

    @staticmethod
    def list_query(call: Call) -> tuple[str, str, list[Any], int]:
        """As :meth:`RunHandlers.list_query`, for getActivity."""
        filters = _Filters()
        for name, column in (("UserId", "user_id"), ("object_type", "object_type"),
                             ("object_id", "object_id")):  # fmt: skip
            value = call.query_text(name)
            if value is not None:
                filters.add(f"{column} = ?", value)
        order = "created_at DESC, activity_id DESC"
        return filters.page_query(call, ACTIVITY_COLUMNS, "user_activity", order)

    async def get_activity(self, call: Call) -> RecordedResponse:
        return await _listed(self._pool, call, self.list_query(call), self.document_of,
                             ACTIVITY, "Activity fetched successfully")  # fmt: skip
