"""The migration runner against the real PostgreSQL: apply, re-apply, refuse, wait, roll back."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from schema.errors import (
    MigrationChanged,
    MigrationFailed,
    MigrationLayoutError,
    RoleSetupError,
    SchemaError,
)
from schema.files import MIGRATIONS_DIR, load_migrations
from schema.runner import status, upgrade
from schema.tenancy import APP_ROLE, SYNC_ROLE, ensure_subscription, enter_sync, enter_tenant
from strangler.errors import ServiceUnavailable

MODEL_TABLES = {
    "subscriptions", "users", "groups", "roles", "user_groups", "user_roles", "workspaces",
    "folders", "jobs", "workflows", "workflow_dependencies", "connectors", "object_permissions",
    "job_runs", "workflow_versions", "user_activity", "user_sessions", "websocket_connections",
    "migration_feed_positions", "migration_quarantine", "migration_dead_letters",
    "migration_outbox", "migration_backfill_checkpoints", "routing_flag_changes",
}  # fmt: skip


def quiet(_line: str) -> None:
    pass


async def tables_of(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'p') AND NOT relispartition"
        )
    finally:
        await conn.close()
    return {row["relname"] for row in rows}


async def recorded(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        return [
            r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")
        ]
    finally:
        await conn.close()


def copy_migrations(tmp_path: Path, *extra: tuple[str, str]) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    (directory / "0001_first.sql").write_text("CREATE TABLE first_table (id int PRIMARY KEY);\n")
    for name, sql in extra:
        (directory / name).write_text(sql)
    return directory


async def test_upgrade_of_an_empty_database_creates_the_whole_model(empty_database_url):
    lines: list[str] = []
    applied = await upgrade(empty_database_url, progress=lines.append)

    expected = [m.name for m in load_migrations()]
    assert applied == expected
    assert MODEL_TABLES <= await tables_of(empty_database_url)
    assert await recorded(empty_database_url) == sorted(expected)
    assert any(line.startswith("applying 0001_core_model.sql") for line in lines)

    report = await status(empty_database_url)
    assert report.exists and not report.pending and not report.problems
    assert {m.state for m in report.migrations} == {"applied"}
    assert {c.table for c in report.partitions} == {"job_runs", "user_activity"}
    # The month before, the current month and three ahead, plus the default partition.
    assert all(len(c.months) == 5 and c.default_rows == 0 for c in report.partitions)


async def test_second_upgrade_applies_nothing(migrated_database_url):
    lines: list[str] = []
    assert await upgrade(migrated_database_url, progress=lines.append) == []
    assert "nothing to apply" in lines[-1]


async def test_upgrade_creates_a_missing_database_and_says_so(
    empty_database_url, scratch_databases, tmp_path
):
    directory = copy_migrations(tmp_path)
    url = empty_database_url + "_new"
    lines: list[str] = []
    try:
        report = await status(url, migrations_dir=directory)
        assert not report.exists and report.pending == ["0001_first.sql"]
        await upgrade(url, progress=lines.append, migrations_dir=directory)
        assert "did not exist: created it" in lines[0]
        assert "first_table" in await tables_of(url)
    finally:
        await scratch_databases.drop(url)


async def test_unreachable_server_names_database_url():
    with pytest.raises(ServiceUnavailable) as caught:
        await upgrade("postgresql://root@127.0.0.1:1/nowhere", progress=quiet)
    assert str(caught.value).startswith("DATABASE_URL: cannot reach")


async def test_changed_applied_migration_is_refused_and_nothing_runs(empty_database_url, tmp_path):
    directory = copy_migrations(tmp_path)
    await upgrade(empty_database_url, progress=quiet, migrations_dir=directory)
    (directory / "0001_first.sql").write_text("CREATE TABLE first_table (id bigint PRIMARY KEY);\n")
    (directory / "0002_second.sql").write_text("CREATE TABLE second_table (id int);\n")

    with pytest.raises(MigrationChanged) as caught:
        await upgrade(empty_database_url, progress=quiet, migrations_dir=directory)

    assert "0001_first.sql" in str(caught.value)
    assert "new migration" in str(caught.value)
    assert "second_table" not in await tables_of(empty_database_url)
    report = await status(empty_database_url, migrations_dir=directory)
    assert [(m.name, m.state) for m in report.migrations] == [
        ("0001_first.sql", "changed"),
        ("0002_second.sql", "pending"),
    ]


async def test_failed_migration_rolls_back_whole_and_is_not_recorded(empty_database_url, tmp_path):
    broken = "CREATE TABLE second_table (id int);\nINSERT INTO second_table VALUES (1 / 0);\n"
    directory = copy_migrations(tmp_path, ("0002_second.sql", broken))

    with pytest.raises(MigrationFailed) as caught:
        await upgrade(empty_database_url, progress=quiet, migrations_dir=directory)

    assert "0002_second.sql" in str(caught.value) and "division by zero" in str(caught.value)
    assert await recorded(empty_database_url) == ["0001_first.sql"]
    assert "second_table" not in await tables_of(empty_database_url)

    # Never recorded, so fixing the file is not a "change": the next run applies it.
    (directory / "0002_second.sql").write_text("CREATE TABLE second_table (id int);\n")
    assert await upgrade(empty_database_url, progress=quiet, migrations_dir=directory) == [
        "0002_second.sql"
    ]


async def test_migrations_apply_in_number_order_not_name_order(empty_database_url, tmp_path):
    directory = copy_migrations(
        tmp_path,
        ("0010_later.sql", "ALTER TABLE needed ADD COLUMN b int;\n"),
        ("0002_needed.sql", "CREATE TABLE needed (a int);\n"),
    )
    applied = await upgrade(empty_database_url, progress=quiet, migrations_dir=directory)
    assert applied == ["0001_first.sql", "0002_needed.sql", "0010_later.sql"]


async def test_misnamed_or_transaction_controlling_files_are_refused(empty_database_url, tmp_path):
    directory = copy_migrations(tmp_path, ("2_bad.sql", "SELECT 1;"))
    with pytest.raises(MigrationLayoutError, match=r"2_bad\.sql"):
        await upgrade(empty_database_url, progress=quiet, migrations_dir=directory)
    (directory / "2_bad.sql").unlink()
    (directory / "0002_commits.sql").write_text("CREATE TABLE t (a int);\nCOMMIT;\n")
    with pytest.raises(MigrationLayoutError, match=r"0002_commits\.sql"):
        await upgrade(empty_database_url, progress=quiet, migrations_dir=directory)
    assert "first_table" not in await tables_of(empty_database_url)


async def test_two_concurrent_upgrades_one_waits_and_the_second_applies_nothing(
    empty_database_url, tmp_path
):
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    blocker = await asyncpg.connect(empty_database_url)
    try:
        # Hold the runners' lock so that both are demonstrably waiting at the same time.
        await blocker.execute("SELECT pg_advisory_lock(x'5354524E474C4552'::bigint)")
        first_lines: list[str] = []
        second_lines: list[str] = []
        first = asyncio.create_task(
            upgrade(empty_database_url, progress=first_lines.append, migrations_dir=directory)
        )
        second = asyncio.create_task(
            upgrade(empty_database_url, progress=second_lines.append, migrations_dir=directory)
        )
        for _ in range(200):
            waiting = await blocker.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            if waiting == 2:
                break
            await asyncio.sleep(0.05)
        assert waiting == 2
        assert not first.done() and not second.done()
        await blocker.execute("SELECT pg_advisory_unlock(x'5354524E474C4552'::bigint)")
        results = await asyncio.gather(first, second)
    finally:
        await blocker.close()

    expected = [m.name for m in load_migrations(directory)]
    assert sorted(results, key=len) == [[], expected]
    assert await recorded(empty_database_url) == sorted(expected)
    assert any("waiting" in line for line in first_lines + second_lines)


async def test_non_superuser_owner_needs_the_roles_granted_and_is_itself_under_the_policies(
    scratch_databases,
):
    tag = secrets.token_hex(4)
    owner, name = f"strangler_test_owner_{tag}", f"strangler_test_owned_{tag}"
    admin = await asyncpg.connect(scratch_databases.admin_url)
    server = urlsplit(scratch_databases.admin_url)
    url = urlunsplit(
        server._replace(netloc=f"{owner}@{server.hostname}:{server.port or 5432}", path=f"/{name}")
    )
    try:
        await admin.execute(f"CREATE ROLE {owner} LOGIN")
        await admin.execute(f"CREATE DATABASE {name} OWNER {owner}")
        with pytest.raises(RoleSetupError, match=f"not a member of {APP_ROLE}"):
            await upgrade(url, progress=quiet)
        await admin.execute(f"GRANT {APP_ROLE}, {SYNC_ROLE} TO {owner}")
        assert await upgrade(url, progress=quiet) == [m.name for m in load_migrations()]

        conn = await asyncpg.connect(url)
        try:
            async with conn.transaction():
                await enter_sync(conn)
                await ensure_subscription(conn, "sub_00000000c0de")
            # RLS is FORCEd: the tables' owner sees nothing unless it says which tenant ...
            assert await conn.fetchval("SELECT count(*) FROM subscriptions") == 0
            async with conn.transaction():
                await enter_tenant(conn, "sub_00000000c0de")
                assert await conn.fetchval("SELECT count(*) FROM subscriptions") == 1
            # ... or switches to the bypass role explicitly.
            async with conn.transaction():
                await enter_sync(conn)
                assert await conn.fetchval("SELECT count(*) FROM subscriptions") == 1
        finally:
            await conn.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"DROP ROLE IF EXISTS {owner}")
        await admin.close()


async def test_two_upgrades_racing_to_create_the_database_both_succeed(
    empty_database_url, scratch_databases, tmp_path
):
    directory = copy_migrations(tmp_path)
    url = empty_database_url + "_raced"
    try:
        results = await asyncio.gather(
            upgrade(url, progress=quiet, migrations_dir=directory),
            upgrade(url, progress=quiet, migrations_dir=directory),
        )
    finally:
        await scratch_databases.drop(url)
    assert sorted(results, key=len) == [[], ["0001_first.sql"]]


async def test_what_postgresql_refuses_becomes_a_schema_error_with_its_message(empty_database_url):
    conn = await asyncpg.connect(empty_database_url)
    try:
        await conn.execute("CREATE TABLE schema_migrations (name text)")  # not the runner's
    finally:
        await conn.close()
    with pytest.raises(SchemaError, match=r'column "checksum" does not exist') as caught:
        await status(empty_database_url)
    assert isinstance(caught.value.__cause__, asyncpg.PostgresError)
