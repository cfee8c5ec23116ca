"""Monthly partitions of job_runs and user_activity: ahead of time, with a default behind."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from schema.partitions import (
    Month,
    ensure_partitions,
    months_around,
    partition_coverage,
    partition_name,
)
from schema.tenancy import ensure_subscription, enter_tenant

SUB = "sub_00000000beef"


def test_months_wrap_across_years():
    assert Month(2026, 12).shifted(1) == Month(2027, 1)
    assert Month(2026, 1).shifted(-1) == Month(2025, 12)
    assert Month(2026, 11).shifted(-23) == Month(2024, 12)
    assert months_around(Month(2026, 12), back=1, ahead=2) == [
        Month(2026, 11), Month(2026, 12), Month(2027, 1), Month(2027, 2),
    ]  # fmt: skip
    assert Month(2026, 2).end == datetime(2026, 3, 1, tzinfo=UTC)
    assert partition_name("job_runs", Month(2027, 3)) == "job_runs_2027_03"


async def where_is(conn: asyncpg.Connection, table: str, column: str, legacy_id: str) -> str:
    return str(
        await conn.fetchval(
            f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = $1", legacy_id
        )
    )


async def insert_run(conn: asyncpg.Connection, job_run_id: str, created_at: datetime) -> None:
    await conn.execute(
        "INSERT INTO job_runs (id, job_run_id, subscription_id, status, created_at) "
        "VALUES (gen_random_uuid(), $1, $2, 'completed', $3)",
        job_run_id,
        SUB,
        created_at,
    )


@pytest.fixture
async def conn(migrated_database_url):
    connection = await asyncpg.connect(migrated_database_url)
    await ensure_subscription(connection, SUB)
    try:
        yield connection
    finally:
        await connection.close()


async def current_month(conn: asyncpg.Connection) -> Month:
    return Month.of(await conn.fetchval("SELECT now()"))


async def test_rows_no_month_covers_land_in_the_default_partition(conn):
    await insert_run(conn, "run_000000000f01", datetime(2099, 6, 1, tzinfo=UTC))
    await insert_run(conn, "run_000000000f02", datetime(1999, 6, 1, tzinfo=UTC))
    await conn.execute(
        "INSERT INTO user_activity (id, activity_id, subscription_id, created_at) "
        "VALUES (gen_random_uuid(), 'act_1', $1, '1970-01-01T00:00:00Z')",
        SUB,
    )
    assert await where_is(conn, "job_runs", "job_run_id", "run_000000000f01") == "job_runs_default"
    assert await where_is(conn, "job_runs", "job_run_id", "run_000000000f02") == "job_runs_default"
    assert await where_is(conn, "user_activity", "activity_id", "act_1") == "user_activity_default"


async def test_upgrade_created_this_month_and_three_ahead_and_rerunning_creates_nothing(conn):
    now = await current_month(conn)
    await insert_run(conn, "run_000000000f03", now.start)
    assert await where_is(conn, "job_runs", "job_run_id", "run_000000000f03") == partition_name(
        "job_runs", now
    )
    coverage = {c.table: c for c in await partition_coverage(conn)}
    assert coverage["job_runs"].months == tuple(months_around(now, back=1, ahead=3))
    assert await ensure_partitions(conn, 3) == []


async def test_more_months_ahead_are_created_on_demand(conn):
    now = await current_month(conn)
    created = await ensure_partitions(conn, months_ahead=5)
    assert created == [
        partition_name(table, now.shifted(offset))
        for table in ("job_runs", "user_activity")
        for offset in (4, 5)
    ]


async def test_creating_a_month_moves_its_rows_out_of_the_default_partition(conn):
    later = (await current_month(conn)).shifted(6)
    moment = later.start.replace(day=15, hour=12)
    await insert_run(conn, "run_000000000f04", moment)
    await insert_run(conn, "run_000000000f05", later.end)  # first instant of the month after
    assert await where_is(conn, "job_runs", "job_run_id", "run_000000000f04") == "job_runs_default"

    lines: list[str] = []
    created = await ensure_partitions(conn, months_ahead=6, progress=lines.append)

    name = partition_name("job_runs", later)
    assert name in created
    assert await where_is(conn, "job_runs", "job_run_id", "run_000000000f04") == name
    assert await where_is(conn, "job_runs", "job_run_id", "run_000000000f05") == "job_runs_default"
    assert f"created partition {name}, moved 1 rows out of job_runs_default" in lines
    # The moved row kept its values, its uniqueness and its tenant's visibility.
    with pytest.raises(asyncpg.UniqueViolationError):
        await insert_run(conn, "run_000000000f04", moment)
    async with conn.transaction():
        await enter_tenant(conn, SUB)
        status = await conn.fetchval(
            "SELECT status FROM job_runs WHERE job_run_id = 'run_000000000f04'"
        )
    assert status == "completed"


async def test_history_in_the_default_partition_is_carved_into_months(conn):
    await insert_run(conn, "run_000000000f06", datetime(2019, 5, 31, 23, 59, tzinfo=UTC))
    await insert_run(conn, "run_000000000f07", datetime(2019, 5, 1, tzinfo=UTC))
    created = await ensure_partitions(conn, from_default=True)
    assert created == ["job_runs_2019_05"]
    rows = await conn.fetchval("SELECT count(*) FROM job_runs_2019_05")
    assert rows == 2
    assert await conn.fetchval("SELECT count(*) FROM job_runs_default") == 0


async def test_a_table_held_by_a_long_transaction_is_skipped_not_waited_for(
    conn, migrated_database_url
):
    reader = await asyncpg.connect(migrated_database_url)
    try:
        transaction = reader.transaction()
        await transaction.start()
        await reader.fetchval("SELECT count(*) FROM job_runs")  # holds a lock until it ends
        lines: list[str] = []
        created = await ensure_partitions(
            conn, months_ahead=4, lock_timeout_ms=200, progress=lines.append
        )
        await transaction.rollback()
    finally:
        await reader.close()
    now = await current_month(conn)
    assert created == [partition_name("user_activity", now.shifted(4))]
    assert any(line.startswith("job_runs: busy") for line in lines)
    # Once the table is free, the next run catches up.
    assert await ensure_partitions(conn, months_ahead=4) == [
        partition_name("job_runs", now.shifted(4))
    ]
