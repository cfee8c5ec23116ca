"""Every query the new side runs for a legacy endpoint (LEGACY.md section 3) uses an index.

The queries run as the application role under row-level security, with their
parameters bound, against tables big enough for the planner to prefer an index
when one fits; a sequential scan of any table or partition holding more than
SMALL_RELATION rows fails the test, and so does a paginated list that sorts
instead of reading an index in order.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from schema.partitions import ensure_partitions
from schema.runner import upgrade
from schema.tenancy import enter_tenant

TENANTS = 50
SMALL_RELATION = 1000
SORTS = {"Sort", "Incremental Sort"}
MAX_PER_PAGE = 100


def legacy(prefix: str, n: int) -> str:
    return f"{prefix}_{n:012x}"


TENANT = legacy("sub", 7)  # row n of every generated table belongs to tenant n % TENANTS
NOW = datetime.now(UTC)


def ident(prefix: str) -> str:
    return f"'{prefix}_' || lpad(to_hex(g), 12, '0')"


def ref(prefix: str, expr: str) -> str:
    return f"'{prefix}_' || lpad(to_hex({expr}), 12, '0')"


SUB = ref("sub", f"g % {TENANTS}")
# (table, rows, columns, expressions over g); ages spread rows over months and tie orders.
GENERATED: list[tuple[str, int, str, str]] = [
    ("subscriptions", TENANTS, "id, subscription_id, created_at",
     f"gen_random_uuid(), {ident('sub')}, now()"),
    ("workspaces", 10000, "id, workspace_id, subscription_id, workspace_name, created_at, "
     "is_deleted", f"gen_random_uuid(), {ident('ws')}, {SUB}, 'W' || g, "
     "now() - g * interval '1 minute', g % 20 = 0"),
    ("folders", 10000, "id, folder_id, subscription_id, workspace_id, folder_name, tree_position, "
     "created_at", f"gen_random_uuid(), {ident('fd')}, {SUB}, {ident('ws')}, 'F' || g, 0, now()"),
    ("jobs", 10000, "id, job_id, subscription_id, workspace_id, folder_id, job_name, "
     "tree_position, created_at", f"gen_random_uuid(), {ident('jb')}, {SUB}, {ident('ws')}, "
     f"{ident('fd')}, 'J' || g, 0, now()"),
    ("workflows", 20000, "id, workflow_id, subscription_id, workspace_id, folder_id, job_id, "
     "workflow_name, tree_position, version, created_at", f"gen_random_uuid(), {ident('wf')}, "
     f"{SUB}, {ref('ws', 'g % 10000')}, {ref('fd', 'g % 10000')}, {ref('jb', 'g % 10000')}, "
     "'WF' || g, g / 10000, 1, now() - g * interval '1 minute'"),
    ("workflow_versions", 20000, "id, version_id, subscription_id, workflow_id, version_number, "
     "change_type, created_at", f"gen_random_uuid(), {ident('ver')}, {SUB}, "
     f"{ref('wf', 'g % 10000')}, g / 10000 + 1, 'check_in', now() - g * interval '1 minute'"),
    ("workflow_dependencies", 10000, "job_id, workflow_id, subscription_id, position",
     f"{ident('jb')}, {ref('wf', 'g + 10000')}, {SUB}, 0"),
    ("connectors", 10000, "id, connector_id, subscription_id, connector_name, connector_type, "
     "created_at", f"gen_random_uuid(), {ident('cn')}, {SUB}, 'C' || g, "
     "(ARRAY['postgres', 'mysql', 's3', 'snowflake'])[g % 4 + 1], now() - g * interval '1 s'"),
    ("users", 10000, "id, user_id, subscription_id, email, created_at",
     f"gen_random_uuid(), {ident('usr')}, {SUB}, 'u' || g || '@example.com', now()"),
    ("groups", 5000, "id, group_id, subscription_id, group_name, created_at",
     f"gen_random_uuid(), {ident('grp')}, {SUB}, 'G' || g, now()"),
    ("user_groups", 10000, "group_id, user_id, subscription_id, position",
     f"{ref('grp', 'g % 5000')}, {ident('usr')}, {SUB}, g / 5000"),
    ("roles", 5000, "id, role_id, subscription_id, role_name, created_at",
     f"gen_random_uuid(), {ident('role')}, {SUB}, 'R' || g, now()"),
    ("user_roles", 10000, "role_id, user_id, subscription_id, position",
     f"{ref('role', 'g % 5000')}, {ident('usr')}, {SUB}, g / 5000"),
    ("job_runs", 30000, "id, job_run_id, subscription_id, workflow_id, job_id, status, "
     "trigger_type, created_at", f"gen_random_uuid(), {ident('run')}, {SUB}, "
     f"{ref('wf', 'g % 20000')}, {ref('jb', 'g % 10000')}, "
     "(ARRAY['queued', 'running', 'completed', 'failed'])[g % 4 + 1], 'manual', "
     "now() - g * interval '6 minutes'"),
    ("user_activity", 30000, "id, activity_id, subscription_id, user_id, action, object_type, "
     "object_id, created_at", f"gen_random_uuid(), {ident('act')}, {SUB}, "
     f"{ref('usr', 'g % 10000')}, 'updated', "
     "(ARRAY['workspace', 'folder', 'job', 'workflow', 'connector'])[g % 5 + 1], "
     f"{ref('wf', 'g % 20000')}, now() - g * interval '4 minutes'"),
]  # fmt: skip

PAGE = (20, 0)
A_DAY_AGO, A_WEEK_AGO = NOW - timedelta(days=1), NOW - timedelta(days=7)
# name -> (SQL as the new side runs it, parameters). Ids below all belong to TENANT.
QUERIES: dict[str, tuple[str, tuple[Any, ...]]] = {
    "getAllWorkspace": (
        "SELECT * FROM workspaces WHERE subscription_id = $1 AND NOT is_deleted "
        "ORDER BY created_at DESC NULLS LAST, workspace_id LIMIT $2 OFFSET $3", (TENANT, *PAGE)),
    "getAllWorkspace total": (
        "SELECT count(*) FROM workspaces WHERE subscription_id = $1 AND NOT is_deleted",
        (TENANT,)),
    "getWorkspace": (
        "SELECT * FROM workspaces WHERE workspace_id = $1 AND NOT is_deleted",
        (legacy("ws", 7),)),
    "getWorkspace folders": (
        "SELECT * FROM folders WHERE workspace_id = $1 ORDER BY tree_position, folder_id",
        (legacy("ws", 7),)),
    "getWorkspace jobs": (
        "SELECT * FROM jobs WHERE workspace_id = $1", (legacy("ws", 7),)),
    "getWorkspace workflow summaries": (
        "SELECT workflow_id, workflow_name, is_deleted, job_id FROM workflows "
        "WHERE job_id = ANY($1::text[]) ORDER BY job_id, tree_position, workflow_id",
        ([legacy("jb", 7), legacy("jb", 57)],)),
    "addWorkspace duplicate name": (
        "SELECT 1 FROM workspaces WHERE subscription_id = $1 AND workspace_name = $2 "
        "AND NOT is_deleted", (TENANT, "W57")),
    "addFolder duplicate name": (
        "SELECT 1 FROM folders WHERE workspace_id = $1 AND folder_name = $2 AND NOT is_deleted",
        (legacy("ws", 7), "F7")),
    "updateFolder": (
        "SELECT * FROM folders WHERE folder_id = $1 AND workspace_id = $2",
        (legacy("fd", 7), legacy("ws", 7))),
    "updateJob": (
        "SELECT * FROM jobs WHERE job_id = $1 AND folder_id = $2",
        (legacy("jb", 7), legacy("fd", 7))),
    "updateJob dependencies": (
        "SELECT workflow_id FROM workflow_dependencies WHERE job_id = $1 ORDER BY position",
        (legacy("jb", 7),)),
    "getWorkflow": ("SELECT * FROM workflows WHERE workflow_id = $1", (legacy("wf", 7),)),
    "getWorkflows by job": (
        "SELECT * FROM workflows WHERE job_id = $1 AND NOT is_deleted "
        "ORDER BY created_at DESC NULLS LAST, workflow_id LIMIT $2 OFFSET $3",
        (legacy("jb", 7), *PAGE)),
    "getWorkflows by job total": (
        "SELECT count(*) FROM workflows WHERE job_id = $1 AND NOT is_deleted",
        (legacy("jb", 7),)),
    "getWorkflows by workspace": (
        "SELECT * FROM workflows WHERE workspace_id = $1 AND NOT is_deleted "
        "ORDER BY created_at DESC NULLS LAST, workflow_id LIMIT $2 OFFSET $3",
        (legacy("ws", 7), *PAGE)),
    "addWorkflow duplicate name": (
        "SELECT 1 FROM workflows WHERE job_id = $1 AND workflow_name = $2 AND NOT is_deleted",
        (legacy("jb", 7), "WF7")),
    "deleteWorkflow dependency cleanup": (
        "DELETE FROM workflow_dependencies WHERE workflow_id = $1", (legacy("wf", 10007),)),
    "checkIn next version": (
        "SELECT max(version_number) FROM workflow_versions WHERE workflow_id = $1",
        (legacy("wf", 7),)),
    "getVersions": (
        "SELECT * FROM workflow_versions WHERE workflow_id = $1 "
        "ORDER BY created_at DESC NULLS LAST, version_id LIMIT $2 OFFSET $3",
        (legacy("wf", 7), *PAGE)),
    "getRuns": (
        "SELECT * FROM job_runs WHERE subscription_id = $1 "
        "ORDER BY created_at DESC, job_run_id LIMIT $2 OFFSET $3", (TENANT, *PAGE)),
    "getRuns by workflow": (
        "SELECT * FROM job_runs WHERE workflow_id = $1 "
        "ORDER BY created_at DESC, job_run_id LIMIT $2 OFFSET $3", (legacy("wf", 7), *PAGE)),
    "getRuns total": ("SELECT count(*) FROM job_runs WHERE subscription_id = $1", (TENANT,)),
    "getRuns by workflow total": (
        "SELECT count(*) FROM job_runs WHERE workflow_id = $1", (legacy("wf", 7),)),
    "getRuns by status": (
        "SELECT * FROM job_runs WHERE subscription_id = $1 AND status = $2 "
        "ORDER BY created_at DESC, job_run_id LIMIT $3 OFFSET $4", (TENANT, "failed", *PAGE)),
    "getRuns by time range": (
        "SELECT * FROM job_runs WHERE subscription_id = $1 AND created_at >= $2 "
        "AND created_at < $3 ORDER BY created_at DESC, job_run_id LIMIT $4 OFFSET $5",
        (TENANT, A_WEEK_AGO, A_DAY_AGO, *PAGE)),
    "getRuns by workflow and time range": (
        "SELECT * FROM job_runs WHERE workflow_id = $1 AND created_at >= $2 AND created_at < $3 "
        "ORDER BY created_at DESC, job_run_id LIMIT $4 OFFSET $5",
        (legacy("wf", 7), A_WEEK_AGO, NOW, *PAGE)),
    "getRun": ("SELECT * FROM job_runs WHERE job_run_id = $1", (legacy("run", 7),)),
    "getConnectors": (
        "SELECT * FROM connectors WHERE subscription_id = $1 AND NOT is_deleted "
        "ORDER BY created_at DESC NULLS LAST, connector_id LIMIT $2 OFFSET $3", (TENANT, *PAGE)),
    "getConnectors by type": (
        "SELECT * FROM connectors WHERE subscription_id = $1 AND connector_type = $2 "
        "AND NOT is_deleted ORDER BY created_at DESC NULLS LAST, connector_id LIMIT $3 OFFSET $4",
        (TENANT, "mysql", *PAGE)),
    "getConnector": ("SELECT * FROM connectors WHERE connector_id = $1", (legacy("cn", 7),)),
    "addConnector duplicate name": (
        "SELECT 1 FROM connectors WHERE subscription_id = $1 AND connector_name = $2 "
        "AND NOT is_deleted", (TENANT, "C7")),
    "getUsers": (
        "SELECT * FROM users WHERE subscription_id = $1 "
        "ORDER BY created_at DESC NULLS LAST, user_id LIMIT $2 OFFSET $3", (TENANT, *PAGE)),
    "getUser": ("SELECT * FROM users WHERE user_id = $1", (legacy("usr", 7),)),
    "addUser duplicate email": (
        "SELECT 1 FROM users WHERE subscription_id = $1 AND lower(email) = lower($2)",
        (TENANT, "u7@example.com")),
    "getGroups": (
        "SELECT * FROM groups WHERE subscription_id = $1 "
        "ORDER BY created_at DESC NULLS LAST, group_id LIMIT $2 OFFSET $3", (TENANT, *PAGE)),
    "getGroups members": (
        "SELECT group_id, user_id FROM user_groups WHERE group_id = ANY($1::text[]) "
        "ORDER BY group_id, position", ([legacy("grp", 7), legacy("grp", 57)],)),
    "removeUserFromGroup": (
        "SELECT 1 FROM user_groups WHERE group_id = $1 AND user_id = $2",
        (legacy("grp", 7), legacy("usr", 7))),
    "getRoles": (
        "SELECT * FROM roles WHERE subscription_id = $1 "
        "ORDER BY created_at DESC NULLS LAST, role_id LIMIT $2 OFFSET $3", (TENANT, *PAGE)),
    "getRoles members": (
        "SELECT role_id, user_id FROM user_roles WHERE role_id = ANY($1::text[]) "
        "ORDER BY role_id, position", ([legacy("role", 7), legacy("role", 57)],)),
    "getActivity": (
        "SELECT * FROM user_activity WHERE subscription_id = $1 "
        "ORDER BY created_at DESC, activity_id LIMIT $2 OFFSET $3", (TENANT, *PAGE)),
    "getActivity by user": (
        "SELECT * FROM user_activity WHERE subscription_id = $1 AND user_id = $2 "
        "ORDER BY created_at DESC, activity_id LIMIT $3 OFFSET $4",
        (TENANT, legacy("usr", 7), *PAGE)),
    "getActivity by object": (
        "SELECT * FROM user_activity WHERE subscription_id = $1 AND object_id = $2 "
        "ORDER BY created_at DESC, activity_id LIMIT $3 OFFSET $4",
        (TENANT, legacy("wf", 7), *PAGE)),
    "getActivity by object type and object": (
        "SELECT * FROM user_activity WHERE subscription_id = $1 AND object_type = $2 "
        "AND object_id = $3 ORDER BY created_at DESC, activity_id LIMIT $4 OFFSET $5",
        (TENANT, "job", legacy("wf", 7), *PAGE)),
    "getActivity by object type": (
        "SELECT * FROM user_activity WHERE subscription_id = $1 AND object_type = $2 "
        "ORDER BY created_at DESC, activity_id LIMIT $3 OFFSET $4", (TENANT, "job", *PAGE)),
    "getActivity by user and time range": (
        "SELECT * FROM user_activity WHERE subscription_id = $1 AND user_id = $2 "
        "AND created_at >= $3 AND created_at < $4 "
        "ORDER BY created_at DESC, activity_id LIMIT $5 OFFSET $6",
        (TENANT, legacy("usr", 7), A_WEEK_AGO, NOW, *PAGE)),
    "getActivity total": (
        "SELECT count(*) FROM user_activity WHERE subscription_id = $1", (TENANT,)),
    "getActivity by user total": (
        "SELECT count(*) FROM user_activity WHERE subscription_id = $1 AND user_id = $2",
        (TENANT, legacy("usr", 7))),
}  # fmt: skip


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def big_database(scratch_databases) -> AsyncIterator[str]:
    url = await scratch_databases.create("strangler_test_plans")
    try:
        await upgrade(url, progress=lambda _line: None)
        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                for table, rows, columns, values in GENERATED:
                    await conn.execute(
                        f"INSERT INTO {table} ({columns}) SELECT {values} "
                        f"FROM generate_series(0, {rows - 1}) AS g"
                    )
            # As after a backfill of history: old months get their own partitions.
            await ensure_partitions(conn, from_default=True)
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
        yield url
    finally:
        await scratch_databases.drop(url)


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def plan_problems(plan: dict[str, Any], sizes: dict[str, float], paginated: bool) -> list[str]:
    """Sequential scans of big relations, and (for a page) sorts of more than a page."""
    problems = [
        f"Seq Scan on {node['Relation Name']}"
        for node in plan_nodes(plan)
        if node["Node Type"] == "Seq Scan" and sizes.get(node["Relation Name"], 0) > SMALL_RELATION
    ]
    if paginated:
        # A page must come in index order: sorting a tenant's whole list to cut one page
        # out of it is what the ordering indexes exist to avoid. Sorting a handful of
        # rows that an index found (fewer than a page) is fine.
        problems += [
            f"{node['Node Type']} of {node['Plan Rows']} rows"
            for node in plan_nodes(plan)
            if node["Node Type"] in SORTS and node["Plan Rows"] > MAX_PER_PAGE
        ]
    return problems


async def explain(conn: asyncpg.Connection, name: str) -> tuple[dict[str, Any], list[str]]:
    """The plan of query ``name`` as the application runs it, and what is wrong with it."""
    sql, params = QUERIES[name]
    sizes = {
        row["relname"]: row["reltuples"]
        for row in await conn.fetch(
            "SELECT relname, reltuples FROM pg_class WHERE relkind = 'r' "
            "AND relnamespace = 'public'::regnamespace"
        )
    }
    async with conn.transaction():
        await enter_tenant(conn, TENANT)
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *params)
    plan = json.loads(raw)[0]["Plan"]
    return plan, plan_problems(plan, sizes, paginated=" LIMIT " in sql)


@pytest.mark.parametrize("name", sorted(QUERIES))
async def test_legacy_query_uses_an_index(big_database, name):
    sql, params = QUERIES[name]
    conn = await asyncpg.connect(big_database)
    try:
        plan, problems = await explain(conn, name)
        if sql.startswith("SELECT"):
            async with conn.transaction():
                await enter_tenant(conn, TENANT)
                found = await conn.fetch(sql, *params)
            assert found, f"{name} found nothing: the generated data does not exercise it"
    finally:
        await conn.close()
    assert not problems, f"{name}: {problems}\n{json.dumps(plan, indent=1)}"


async def test_the_check_fails_when_the_ordering_index_is_missing(big_database):
    conn = await asyncpg.connect(big_database)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("DROP INDEX workspaces_tenant_list, workspaces_name_unique")
            _plan, problems = await explain(conn, "getAllWorkspace")
        finally:
            await tx.rollback()
    finally:
        await conn.close()
    assert problems and problems[0].startswith(("Seq Scan on workspaces", "Sort of"))
