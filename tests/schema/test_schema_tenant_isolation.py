"""Tenant isolation enforced by PostgreSQL itself, table by table.

Every table with a ``subscription_id`` column is a tenant table. The catalog
test finds them all in a migrated database, so a new tenant table without
forced row-level security and the tenant policy fails. The behaviour tests run
for every table the migrations hand to ``strangler_enable_tenant_isolation``
(read from the files, so the list is known when tests are collected; the
catalog test checks it is the same list) and need one row template below: a
new tenant table without one fails until it is added to ROW_OF_TENANT.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio

from schema.files import load_migrations
from schema.tenancy import APP_ROLE, SYNC_ROLE, ensure_subscription, enter_sync, enter_tenant

# One row of a tenant, per tenant table. Fields: {sub} the tenant, {ws} {fd} {jb} {grp} {role}
# its base rows (see seed_tenant), {tag} unique per row.
ROW_OF_TENANT: dict[str, str] = {
    "subscriptions": "INSERT INTO subscriptions (id, subscription_id) "
    "VALUES (gen_random_uuid(), '{sub}')",
    "users": "INSERT INTO users (id, user_id, subscription_id, email) "
    "VALUES (gen_random_uuid(), 'usr_{tag}', '{sub}', '{tag}@example.com')",
    "connectors": "INSERT INTO connectors (id, connector_id, subscription_id, connector_name) "
    "VALUES (gen_random_uuid(), 'cn_{tag}', '{sub}', 'C {tag}')",
    "workspaces": "INSERT INTO workspaces (id, workspace_id, subscription_id, workspace_name) "
    "VALUES (gen_random_uuid(), 'ws_{tag}', '{sub}', 'W {tag}')",
    "folders": "INSERT INTO folders (id, folder_id, subscription_id, workspace_id) "
    "VALUES (gen_random_uuid(), 'fd_{tag}', '{sub}', '{ws}')",
    "jobs": "INSERT INTO jobs (id, job_id, subscription_id, workspace_id, folder_id) "
    "VALUES (gen_random_uuid(), 'jb_{tag}', '{sub}', '{ws}', '{fd}')",
    "workflows": "INSERT INTO workflows (id, workflow_id, subscription_id, job_id) "
    "VALUES (gen_random_uuid(), 'wf_{tag}', '{sub}', '{jb}')",
    "workflow_dependencies": "INSERT INTO workflow_dependencies "
    "(job_id, workflow_id, subscription_id, position) VALUES ('{jb}', 'wf_{tag}', '{sub}', 0)",
    "workflow_versions": "INSERT INTO workflow_versions "
    "(id, version_id, subscription_id, workflow_id, version_number) "
    "VALUES (gen_random_uuid(), 'ver_{tag}', '{sub}', 'wf_{tag}', 1)",
    "groups": "INSERT INTO groups (id, group_id, subscription_id, group_name) "
    "VALUES (gen_random_uuid(), 'grp_{tag}', '{sub}', 'G {tag}')",
    "user_groups": "INSERT INTO user_groups (group_id, user_id, subscription_id, position) "
    "VALUES ('{grp}', 'usr_{tag}', '{sub}', 0)",
    "roles": "INSERT INTO roles (id, role_id, subscription_id, role_name) "
    "VALUES (gen_random_uuid(), 'role_{tag}', '{sub}', 'R {tag}')",
    "user_roles": "INSERT INTO user_roles (role_id, user_id, subscription_id, position) "
    "VALUES ('{role}', 'usr_{tag}', '{sub}', 0)",
    "object_permissions": "INSERT INTO object_permissions (subscription_id, object_type, "
    "object_id, principal_type, principal_id, permission) "
    "VALUES ('{sub}', 'workspace', '{ws}', 'user', 'usr_{tag}', 'read')",
    "job_runs": "INSERT INTO job_runs (id, job_run_id, subscription_id, created_at) "
    "VALUES (gen_random_uuid(), 'run_{tag}', '{sub}', now())",
    "user_activity": "INSERT INTO user_activity (id, activity_id, subscription_id, created_at) "
    "VALUES (gen_random_uuid(), 'act_{tag}', '{sub}', now())",
    "user_sessions": "INSERT INTO user_sessions (subscription_id, user_id, token_sha256, "
    "expires_at) VALUES ('{sub}', 'usr_{tag}', sha256('{tag}'::bytea), now() + interval '1h')",
    "websocket_connections": "INSERT INTO websocket_connections "
    "(subscription_id, user_id, channel, instance_id) "
    "VALUES ('{sub}', 'usr_{tag}', 'activity', 'proxy-1')",
    "migration_outbox": "INSERT INTO migration_outbox "
    "(subscription_id, entity, legacy_id, operation, payload) "
    "VALUES ('{sub}', 'workspace', 'ws_{tag}', 'insert', '{{}}')",
}
ROW_OF_TENANT.update({
    # Tables of the workspace-tree migration (0020).
    "workflow_tree_entries": "INSERT INTO workflow_tree_entries (id, subscription_id, "
    "workspace_id, job_id, tree_position, workflow_id) "
    "VALUES (gen_random_uuid(), '{sub}', '{ws}', '{jb}', 0, 'wf_{tag}')",
    "workflow_backups": "INSERT INTO workflow_backups (id, backup_id, subscription_id, snapshot) "
    "VALUES (gen_random_uuid(), 'bkp_{tag}', '{sub}', '{{}}')",
    # The run queue's outbox (0041).
    "run_dispatch": "INSERT INTO run_dispatch (job_run_id, subscription_id, workflow_id) "
    "VALUES ('run_{tag}', '{sub}', 'wf_{tag}')",
})  # fmt: skip
_ISOLATED = re.compile(r"strangler_enable_tenant_isolation\('(\w+)'\)")
TENANT_TABLES = sorted(
    {table for migration in load_migrations() for table in _ISOLATED.findall(migration.sql)}
)
RLS_VIOLATION = "new row violates row-level security policy"


@dataclass(frozen=True)
class Tenant:
    """A tenant whose base rows share its tag: ws_<tag>, fd_<tag>, jb_<tag>, ..."""

    tag: str

    @property
    def sub(self) -> str:
        return f"sub_{self.tag}"

    def row(self, table: str, tag: str | None = None) -> str:
        if table not in ROW_OF_TENANT:
            pytest.fail(f"tenant table {table} has no row template: add one to ROW_OF_TENANT")
        t = self.tag
        return ROW_OF_TENANT[table].format(
            tag=tag or secrets.token_hex(6),
            sub=self.sub,
            ws=f"ws_{t}",
            fd=f"fd_{t}",
            jb=f"jb_{t}",
            grp=f"grp_{t}",
            role=f"role_{t}",
        )


def new_tenant() -> Tenant:
    return Tenant(secrets.token_hex(6))


async def seed_tenant(conn: asyncpg.Connection, tenant: Tenant) -> None:
    """The tenant's base rows, then one more row in every tenant table."""
    async with conn.transaction():
        await enter_sync(conn)
        await ensure_subscription(conn, tenant.sub)
        for table in ("workspaces", "folders", "jobs", "groups", "roles"):
            await conn.execute(tenant.row(table, tag=tenant.tag))
        for table in TENANT_TABLES:
            if table != "subscriptions" and table in ROW_OF_TENANT:
                await conn.execute(tenant.row(table))


async def connect_as(url: str, user: str) -> asyncpg.Connection:
    parts = urlsplit(url)
    return await asyncpg.connect(
        urlunsplit(parts._replace(netloc=f"{user}@{parts.hostname}:{parts.port or 5432}"))
    )


@dataclass(frozen=True)
class Tenants:
    url: str
    a: Tenant
    b: Tenant


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tenants(shared_migrated_database_url: str) -> AsyncIterator[Tenants]:
    url = shared_migrated_database_url
    a, b = new_tenant(), new_tenant()
    conn = await asyncpg.connect(url)
    try:
        await seed_tenant(conn, a)
        await seed_tenant(conn, b)
    finally:
        await conn.close()
    yield Tenants(url, a, b)


async def count_as_sync(conn: asyncpg.Connection, table: str, sub: str) -> int:
    async with conn.transaction():
        await enter_sync(conn)
        return int(
            await conn.fetchval(f"SELECT count(*) FROM {table} WHERE subscription_id = $1", sub)
        )


async def discovered_tenant_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') "
        "AND NOT c.relispartition AND a.attname = 'subscription_id' AND NOT a.attisdropped "
        "ORDER BY 1"
    )
    return [row["relname"] for row in rows]


async def test_every_tenant_table_forces_row_level_security_keyed_on_the_tenant(tenants):
    conn = await asyncpg.connect(tenants.url)
    try:
        tables = await discovered_tenant_tables(conn)
        flags = {
            row["relname"]: (row["relrowsecurity"], row["relforcerowsecurity"], row["owner"])
            for row in await conn.fetch(
                "SELECT relname, relrowsecurity, relforcerowsecurity, "
                "pg_get_userbyid(relowner) AS owner FROM pg_class "
                "WHERE relname = ANY($1::text[]) AND relnamespace = 'public'::regnamespace",
                tables,
            )
        }
        policies = {
            row["tablename"]: row
            for row in await conn.fetch(
                "SELECT tablename, qual, with_check, permissive, cmd, roles FROM pg_policies "
                "WHERE schemaname = 'public'"
            )
        }
    finally:
        await conn.close()

    assert tables, "no tenant table found"
    offenders = [t for t in tables if flags[t][:2] != (True, True)]
    assert not offenders, f"tenant tables without ENABLEd and FORCEd RLS: {offenders}"
    assert not [t for t in tables if flags[t][2] == APP_ROLE], f"{APP_ROLE} owns a table"
    for table in tables:
        policy = policies.get(table)
        assert policy is not None, f"{table} has no policy"
        expected = "(subscription_id = current_setting('app.subscription_id'::text, true))"
        assert (policy["qual"], policy["with_check"], policy["cmd"]) == (expected, expected, "ALL")


async def test_the_tables_tested_below_are_exactly_the_tenant_tables(tenants):
    conn = await asyncpg.connect(tenants.url)
    try:
        tables = await discovered_tenant_tables(conn)
    finally:
        await conn.close()
    assert tables == TENANT_TABLES, (
        "every table with subscription_id must be passed to strangler_enable_tenant_isolation"
    )


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_without_a_tenant_setting_the_app_sees_nothing(tenants, table):
    conn = await asyncpg.connect(tenants.url)
    try:
        assert await count_as_sync(conn, table, tenants.a.sub) >= 1
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0
    finally:
        await conn.close()


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_tenant_reads_only_its_own_rows(tenants, table):
    conn = await asyncpg.connect(tenants.url)
    try:
        async with conn.transaction():
            await enter_tenant(conn, tenants.a.sub)
            seen = await conn.fetch(f"SELECT DISTINCT subscription_id FROM {table}")
            by_b = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE subscription_id = $1", tenants.b.sub
            )
    finally:
        await conn.close()
    assert [row["subscription_id"] for row in seen] == [tenants.a.sub]
    assert by_b == 0


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_tenant_cannot_update_or_delete_another_tenants_rows(tenants, table):
    conn = await asyncpg.connect(tenants.url)
    try:
        before = await count_as_sync(conn, table, tenants.b.sub)
        async with conn.transaction():
            await enter_tenant(conn, tenants.a.sub)
            updated = await conn.execute(
                f"UPDATE {table} SET subscription_id = subscription_id WHERE subscription_id = $1",
                tenants.b.sub,
            )
            deleted = await conn.execute(
                f"DELETE FROM {table} WHERE subscription_id = $1", tenants.b.sub
            )
        after = await count_as_sync(conn, table, tenants.b.sub)
    finally:
        await conn.close()
    assert (updated, deleted) == ("UPDATE 0", "DELETE 0")
    assert after == before >= 1


@pytest.mark.parametrize("table", TENANT_TABLES)
async def test_tenant_cannot_insert_or_move_a_row_into_another_tenant(tenants, table):
    conn = await asyncpg.connect(tenants.url)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=RLS_VIOLATION):
            async with conn.transaction():
                await enter_tenant(conn, tenants.a.sub)
                await conn.execute(tenants.b.row(table))
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match=RLS_VIOLATION):
            async with conn.transaction():
                await enter_tenant(conn, tenants.a.sub)
                await conn.execute(
                    f"UPDATE {table} SET subscription_id = $1 WHERE subscription_id = $2",
                    tenants.b.sub,
                    tenants.a.sub,
                )
        # The same statements are fine for the tenant's own rows.
        async with conn.transaction():
            await enter_tenant(conn, tenants.a.sub)
            if table != "subscriptions":
                await conn.execute(tenants.a.row(table))
            moved = await conn.execute(
                f"UPDATE {table} SET subscription_id = $1 WHERE subscription_id = $1",
                tenants.a.sub,
            )
        assert moved != "UPDATE 0"
    finally:
        await conn.close()


async def test_setting_ends_with_the_transaction(tenants):
    conn = await asyncpg.connect(tenants.url)
    try:
        async with conn.transaction():
            await enter_tenant(conn, tenants.a.sub)
            assert await conn.fetchval("SELECT count(*) FROM workspaces") >= 1
        async with conn.transaction():
            await conn.execute(f"SET LOCAL ROLE {APP_ROLE}")
            assert await conn.fetchval("SELECT count(*) FROM workspaces") == 0
    finally:
        await conn.close()


async def test_sync_role_sees_every_tenant(tenants):
    conn = await asyncpg.connect(tenants.url)
    try:
        async with conn.transaction():
            await enter_sync(conn)
            subs = {
                row["subscription_id"]
                for row in await conn.fetch(
                    "SELECT subscription_id FROM workspaces "
                    "WHERE subscription_id = ANY($1::text[])",
                    [tenants.a.sub, tenants.b.sub],
                )
            }
    finally:
        await conn.close()
    assert subs == {tenants.a.sub, tenants.b.sub}


async def test_app_login_cannot_reach_the_bypass_or_around_the_policies(tenants):
    conn = await connect_as(tenants.url, APP_ROLE)
    try:
        assert await conn.fetchval("SELECT count(*) FROM workspaces") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"SET ROLE {SYNC_ROLE}")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("ALTER TABLE workspaces DISABLE ROW LEVEL SECURITY")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM job_runs_default")  # partitions: no grant
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM migration_quarantine")
        # A made-up "bypass" setting means nothing: only the role attribute bypasses.
        await conn.execute("SELECT set_config('app.bypass_rls', 'on', false)")
        assert await conn.fetchval("SELECT count(*) FROM workspaces") == 0
        async with conn.transaction():
            await enter_tenant(conn, tenants.b.sub)
            assert await conn.fetchval("SELECT count(*) FROM workspaces") >= 1
    finally:
        await conn.close()
