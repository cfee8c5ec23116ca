"""The model's constraints: what the database itself refuses and what it lets through."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from schema.files import MIGRATIONS_DIR
from schema.keys import row_key
from schema.runner import upgrade
from schema.tenancy import ensure_subscription, enter_sync


@pytest.fixture
async def conn(shared_migrated_database_url) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(shared_migrated_database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def tenant(conn) -> str:
    sub = f"sub_{secrets.token_hex(6)}"
    async with conn.transaction():
        await enter_sync(conn)
        await ensure_subscription(conn, sub)
    return sub


def fresh(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


async def add_workspace(conn, sub: str, name: str, *, deleted: bool = False) -> str:
    workspace_id = fresh("ws")
    await conn.execute(
        "INSERT INTO workspaces (id, workspace_id, subscription_id, workspace_name, is_deleted) "
        "VALUES ($1, $2, $3, $4, $5)",
        row_key("workspace", workspace_id),
        workspace_id,
        sub,
        name,
        deleted,
    )
    return workspace_id


async def test_names_are_unique_among_live_rows_only(conn, tenant):
    await add_workspace(conn, tenant, "Sales", deleted=True)
    await add_workspace(conn, tenant, "Sales", deleted=True)
    await add_workspace(conn, tenant, "Sales")
    with pytest.raises(asyncpg.UniqueViolationError, match="workspaces_name_unique"):
        await add_workspace(conn, tenant, "Sales")
    other = f"sub_{secrets.token_hex(6)}"
    await ensure_subscription(conn, other)
    await add_workspace(conn, other, "Sales")  # another tenant may use the name


async def test_user_emails_are_unique_per_tenant_whatever_their_case(conn, tenant):
    insert = (
        "INSERT INTO users (id, user_id, subscription_id, email) "
        "VALUES (gen_random_uuid(), $1, $2, $3)"
    )
    await conn.execute(insert, fresh("usr"), tenant, "Ann@Example.com")
    with pytest.raises(asyncpg.UniqueViolationError, match="users_email_unique"):
        await conn.execute(insert, fresh("usr"), tenant, "ann@example.COM")
    await conn.execute(insert, fresh("usr"), tenant, None)
    await conn.execute(insert, fresh("usr"), tenant, None)  # missing emails do not collide


async def test_usernames_are_unique_per_tenant(conn, tenant):
    insert = (
        "INSERT INTO users (id, user_id, subscription_id, username) "
        "VALUES (gen_random_uuid(), $1, $2, $3)"
    )
    await conn.execute(insert, fresh("usr"), tenant, "ann")
    with pytest.raises(asyncpg.UniqueViolationError, match="users_username_unique"):
        await conn.execute(insert, fresh("usr"), tenant, "ann")
    await conn.execute(insert, fresh("usr"), tenant, "Ann")  # legacy compares them exactly


async def test_usernames_already_duplicated_are_renamed_by_the_upgrade_and_kept(
    empty_database_url, tmp_path
):
    """A database migrated before usernames were unique: the upgrade resolves its
    duplicates as the writer does (the earliest keeps the name) instead of failing."""
    older = tmp_path / "older"
    older.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if path.name < "0030":
            (older / path.name).write_text(path.read_text())
    await upgrade(empty_database_url, progress=lambda _line: None, migrations_dir=older)
    connection = await asyncpg.connect(empty_database_url)
    try:
        await ensure_subscription(connection, "sub_000000000001")
        for user_id, created in (("usr_b", "2021-01-01"), ("usr_a", "2020-01-01"), ("usr_c", None)):
            await connection.execute(
                "INSERT INTO users (id, user_id, subscription_id, username, created_at) "
                "VALUES (gen_random_uuid(), $1, 'sub_000000000001', 'ann', $2::text::timestamptz)",
                user_id, created,
            )  # fmt: skip
        await upgrade(empty_database_url, progress=lambda _line: None)
        rows = await connection.fetch(
            "SELECT user_id, username, extra -> '$renamed' ->> 'username' AS found "
            "FROM users ORDER BY user_id"
        )
    finally:
        await connection.close()
    assert [tuple(r) for r in rows] == [
        ("usr_a", "ann", None),
        ("usr_b", "ann [usr_b]", "ann"),
        ("usr_c", "ann [usr_c]", "ann"),
    ]


async def test_connector_secrets_are_never_stored_in_the_clear(conn, tenant):
    insert = (
        "INSERT INTO connectors (id, connector_id, subscription_id, connection_detail, "
        "secret_ciphertext, secret_key_id) VALUES (gen_random_uuid(), $1, $2, $3::jsonb, $4, $5)"
    )
    detail = json.dumps({"host": "db", "port": 5432, "password": "hunter2"})
    with pytest.raises(asyncpg.CheckViolationError, match="connectors_detail_without_password"):
        await conn.execute(insert, fresh("cn"), tenant, detail, None, None)
    with pytest.raises(asyncpg.CheckViolationError, match="connectors_secret_has_key"):
        await conn.execute(insert, fresh("cn"), tenant, "{}", b"\x01" * 40, None)
    await conn.execute(insert, fresh("cn"), tenant, '{"host": "db"}', b"\x01" * 40, "k1")
    column_type = await conn.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'connectors'::regclass AND attname = 'secret_ciphertext'"
    )
    assert column_type == "bytea"


async def test_workflow_diagram_text_comes_back_byte_for_byte(conn, tenant):
    original = '{ "nodes":[{"id":"a","type":"src"}],\n  "edges":[] }'
    broken = '{"nodes": [ '
    insert = (
        "INSERT INTO workflows (id, workflow_id, subscription_id, workflow_diagram_text, "
        "workflow_diagram) VALUES (gen_random_uuid(), $1, $2, $3, $4::jsonb) RETURNING workflow_id"
    )
    parsed_id = await conn.fetchval(insert, fresh("wf"), tenant, original, original)
    broken_id = await conn.fetchval(insert, fresh("wf"), tenant, broken, None)
    rows = {
        r["workflow_id"]: r
        for r in await conn.fetch(
            "SELECT workflow_id, workflow_diagram_text, workflow_diagram -> 'nodes' -> 0 ->> 'id' "
            "AS first_node FROM workflows WHERE workflow_id = ANY($1::text[])",
            [parsed_id, broken_id],
        )
    }
    assert rows[parsed_id]["workflow_diagram_text"] == original
    assert rows[parsed_id]["first_node"] == "a"
    assert rows[broken_id]["workflow_diagram_text"] == broken
    with pytest.raises(asyncpg.CheckViolationError, match="workflows_diagram_has_text"):
        await conn.execute(insert, fresh("wf"), tenant, None, original)


@pytest.mark.parametrize(
    ("table", "columns", "values", "constraint"),
    [
        ("job_runs", "status", "'paused'", "job_runs_status_known"),
        ("job_runs", "duration_ms", "-1", "job_runs_duration_natural"),
        ("workflows", "version", "0", "workflows_version_positive"),
        ("workspaces", "deleted_at", "now()", "workspaces_deleted_at_only_when_deleted"),
        ("user_activity", "action", "'liked'", "user_activity_action_known"),
    ],
)
async def test_values_outside_the_legacy_contract_are_refused_by_name(
    conn, tenant, table, columns, values, constraint
):
    key_column = {"job_runs": "job_run_id", "workflows": "workflow_id",
                  "workspaces": "workspace_id", "user_activity": "activity_id"}[table]  # fmt: skip
    with pytest.raises(asyncpg.CheckViolationError, match=constraint):
        await conn.execute(
            f"INSERT INTO {table} (id, {key_column}, subscription_id, created_at, {columns}) "
            f"VALUES (gen_random_uuid(), $1, $2, now(), {values})",
            fresh("x"),
            tenant,
        )


async def test_a_tree_can_be_written_children_first_within_one_transaction(conn, tenant):
    ws, fd, jb = fresh("ws"), fresh("fd"), fresh("jb")
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO jobs (id, job_id, subscription_id, workspace_id, folder_id) "
            "VALUES (gen_random_uuid(), $1, $2, $3, $4)",
            jb, tenant, ws, fd,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO folders (id, folder_id, subscription_id, workspace_id) "
            "VALUES (gen_random_uuid(), $1, $2, $3)",
            fd, tenant, ws,
        )  # fmt: skip
        await conn.execute(
            "INSERT INTO workspaces (id, workspace_id, subscription_id) "
            "VALUES (gen_random_uuid(), $1, $2)",
            ws, tenant,
        )  # fmt: skip
    # A job whose folder never arrives is refused when its transaction commits.
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO jobs (id, job_id, subscription_id, workspace_id, folder_id) "
                "VALUES (gen_random_uuid(), $1, $2, $3, $4)",
                fresh("jb"), tenant, ws, fresh("fd"),
            )  # fmt: skip
