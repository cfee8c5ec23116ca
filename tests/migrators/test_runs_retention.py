"""Retention of the time series: whole old partitions dropped after a dry run, never brought
back by the sync, left out by verify; verify over a time window."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from legacy_emulator.generator import seed_store
from migrators.backfill import backfill_entity
from migrators.entities.runs import SPECS
from migrators.registry import default_registry
from migrators.verify import verify_entity
from schema.partitions import Month, apply_retention, parse_retention, retention_plan
from strangler.cli import main

RUNS, ACTIVITY = SPECS
OLD = ("run_0000000old19", "2019-03-04 05:06:07")
OLDER = ("run_0000000old18", datetime(2018, 7, 1, 12, 0))


async def _seeded(legacy_db, pg, ctx) -> None:
    await seed_store(legacy_db, scale="small", dirty=0.0, seed=3)
    run = await legacy_db["jobRun"].find_one({})
    await legacy_db["jobRun"].insert_many(
        [
            {"job_run_id": run_id, "subscription_id": run["subscription_id"],
             "status": "completed", "created_at": created}
            for run_id, created in (OLD, OLDER)
        ]
    )  # fmt: skip
    for spec in default_registry():
        await backfill_entity(legacy_db, pg, spec, ctx)


async def _partitions(pg) -> set[str]:
    rows = await pg.fetch("SELECT relname FROM pg_class WHERE relname LIKE 'job_runs_%'")
    return {r["relname"] for r in rows}


@pytest.mark.parametrize(
    ("text", "months"), [("12mo", 12), ("12", 12), ("18m", 18), ("2y", 24), (" 3MO ", 3)]
)
def test_retention_is_read_in_months(text: str, months: int) -> None:
    assert parse_retention(text) == months


@pytest.mark.parametrize("text", ["0", "0mo", "-1", "12 months", "y", ""])
def test_retention_that_keeps_nothing_or_is_unreadable_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is no retention"):
        parse_retention(text)


async def test_retention_lists_then_drops_whole_partitions_and_nothing_comes_back(
    legacy_db, pg, ctx
):
    await _seeded(legacy_db, pg, ctx)
    before = await _partitions(pg)
    assert {"job_runs_2019_03", "job_runs_2018_07"} <= before
    total = await pg.fetchval("SELECT count(*) FROM job_runs")

    plan = await retention_plan(pg, 12)
    named = {p.name: p.rows for p in plan.partitions}
    assert named["job_runs_2019_03"] == 1 and named["job_runs_2018_07"] == 1
    now = await pg.fetchval("SELECT now()")
    assert all(p.month.end <= Month.of(now).shifted(-12).start for p in plan.partitions)
    assert not any(n.endswith("_default") for n in named)  # never the default partition
    # a plan is a dry run: nothing is gone yet
    assert await pg.fetchval("SELECT count(*) FROM job_runs") == total

    dropped = await apply_retention(pg, plan)
    assert set(dropped) == set(named)
    assert not (set(named) & await _partitions(pg))
    kept = await pg.fetchval("SELECT count(*) FROM job_runs")
    assert kept == total - sum(p.rows for p in plan.partitions if p.table == "job_runs")

    # the documents are still in MongoDB: a backfill (as the sweep would) does not bring
    # them back, nor their partitions, and verify leaves them out
    again = await backfill_entity(legacy_db, pg, RUNS, ctx)
    assert again.result.written == 0
    assert await pg.fetchval("SELECT count(*) FROM job_runs") == kept
    assert not (set(named) & await _partitions(pg))
    report = await verify_entity(legacy_db, pg, RUNS, ctx)
    assert report.clean, report.lines()
    assert report.postgres_count == report.mongo_count == kept


async def test_verify_compares_one_time_window_and_finds_a_difference_in_it(legacy_db, pg, ctx):
    await _seeded(legacy_db, pg, ctx)
    since, until = datetime(2019, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)
    report = await verify_entity(legacy_db, pg, RUNS, ctx, since=since, until=until)
    assert report.clean and report.mongo_count == report.postgres_count == 1
    assert "[2019-01-01 00:00 .. 2020-01-01 00:00)" in report.lines()[0]
    await pg.execute(
        "UPDATE job_runs SET status = 'failed' WHERE job_run_id = ANY($1::text[])",
        [OLD[0], OLDER[0]],
    )
    report = await verify_entity(legacy_db, pg, RUNS, ctx, since=since, until=until)
    assert [d.legacy_id for d in report.differences] == [OLD[0]]  # 2018's is outside
    everything = await verify_entity(legacy_db, pg, RUNS, ctx)
    assert {d.legacy_id for d in everything.differences} == {OLD[0], OLDER[0]}


def test_the_command_lists_first_and_drops_with_apply(migrated_database_url, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)

    async def old_rows() -> None:
        conn = await asyncpg.connect(migrated_database_url)
        try:
            await conn.execute(
                "INSERT INTO subscriptions (id, subscription_id) "
                "VALUES (gen_random_uuid(), 'sub_000000000001')"
            )
            await conn.execute(
                "CREATE TABLE job_runs_2020_02 PARTITION OF job_runs "
                "FOR VALUES FROM ('2020-02-01+00') TO ('2020-03-01+00')"
            )
            await conn.execute(
                "INSERT INTO job_runs (id, job_run_id, subscription_id, created_at) "
                "VALUES (gen_random_uuid(), 'run_1', 'sub_000000000001', '2020-02-10+00')"
            )
        finally:
            await conn.close()

    asyncio.run(old_rows())
    assert main(["schema", "partitions", "--retain", "12mo"]) == 0
    out = capsys.readouterr().out
    assert "  job_runs_2020_02: 1 rows" in out
    assert "dry run: nothing dropped; add --apply to drop them" in out
    assert main(["schema", "partitions", "--retain", "12mo", "--apply"]) == 0
    out = capsys.readouterr().out
    assert "dropped 1 partition(s)" in out
    assert main(["schema", "partitions", "--retain", "12mo"]) == 0
    assert "nothing to drop" in capsys.readouterr().out
    assert main(["schema", "partitions", "--apply"]) == 2
    assert "give --retain N too" in capsys.readouterr().err
