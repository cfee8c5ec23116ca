"""Verify finds planted differences, redacts secrets, skips young rows, and repairs."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime

import asyncpg
import pytest

from legacy_emulator.generator import SeedSummary
from migrators.cli_backfill import run_backfill
from migrators.cli_verify import run_verify
from migrators.crypto import SecretBox, associated_data
from migrators.feeds import observation_version
from migrators.feeds.sweep import Sweeper
from migrators.origin import ORIGIN_FIELD, origin_marker
from migrators.registry import default_registry
from migrators.spec import MappingContext
from schema.tenancy import PLACEHOLDER, ensure_subscription, enter_sync
from strangler.config import Settings
from strangler.mongo import Database

OURS = ("subscriptions", "users", "connectors")
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")


async def test_verify_finds_planted_differences_and_repair_fixes_them(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    clean_settings: Settings,
    clean_pg: asyncpg.Connection,
    box: SecretBox,
) -> None:
    for entity in OURS:
        await run_backfill(clean_settings, entity, 50, out=io.StringIO())
    victim, changed_secret, gone = [
        r["connector_id"]
        for r in await clean_pg.fetch("SELECT connector_id FROM connectors ORDER BY 1 LIMIT 3")
    ]
    await clean_pg.execute(
        "UPDATE connectors SET description = 'planted' WHERE connector_id = $1", victim
    )
    await clean_pg.execute(
        "UPDATE connectors SET secret_ciphertext = other.secret_ciphertext FROM connectors other "
        "WHERE connectors.connector_id = $1 AND other.connector_id = $2",
        changed_secret,
        victim,
    )  # a ciphertext swapped in from another row must not open (bound to its row)
    await clean_pg.execute("DELETE FROM connectors WHERE connector_id = $1", gone)
    await legacy_db["users"].insert_one(
        {"UserId": "usr_00000000beef", "subscription_id": dirty_seed.tenants[0][0]}
    )
    out = io.StringIO()
    swapped = await run_verify(clean_settings, "connectors", out=out)
    assert f"{changed_secret}: row cannot be read back" in out.getvalue()
    assert "does not open" in out.getvalue() and not swapped[0].clean
    ciphertext, key_id = box.seal(b'{"password":"changed-pw"}', associated_data(changed_secret))
    await clean_pg.execute(
        "UPDATE connectors SET secret_ciphertext = $2, secret_key_id = $3 WHERE connector_id = $1",
        changed_secret,
        ciphertext,
        key_id,
    )
    out = io.StringIO()
    reports = [r for e in OURS for r in await run_verify(clean_settings, e, out=out)]
    text = out.getvalue()
    by_name = {r.entity: r for r in reports}
    assert not by_name["connectors"].clean and not by_name["users"].clean
    assert f"{victim}: fields differ" in text and 'PostgreSQL "planted"' in text
    assert f"{changed_secret}: fields differ" in text
    assert "connection_detail.password: a secret value differs (not shown)" in text
    assert f"{gone}: missing in PostgreSQL" in text
    assert "usr_00000000beef: missing in PostgreSQL" in text
    passwords = [d["connection_detail"]["password"] async for d in legacy_db["connectors"].find()]
    assert not any(p in text for p in passwords) and "changed-pw" not in text

    for entity in OURS:
        await run_verify(clean_settings, entity, repair=True, out=io.StringIO())
    after = [r for e in OURS for r in await run_verify(clean_settings, e, out=io.StringIO())]
    assert all(r.clean for r in after)


async def test_repair_overwrites_a_row_the_sync_wrote(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    clean_settings: Settings,
    clean_pg: asyncpg.Connection,
) -> None:
    await run_backfill(clean_settings, "subscriptions", 50, out=io.StringIO())
    # As the forward sync leaves a row: versioned on its observation scale, a moment ago.
    synced = observation_version(time.time() - 5)
    await clean_pg.execute(
        "UPDATE subscriptions SET company_name = 'stale', source_version = $1", synced
    )
    await run_verify(clean_settings, "subscriptions", repair=True, out=io.StringIO())
    after = await run_verify(clean_settings, "subscriptions", out=io.StringIO())
    assert after[0].clean
    assert (
        await clean_pg.fetchval("SELECT count(*) FROM subscriptions WHERE company_name = 'stale'")
        == 0
    )


async def test_the_reverse_sync_marker_is_neither_migrated_nor_a_difference(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    clean_settings: Settings,
    clean_pg: asyncpg.Connection,
) -> None:
    for entity in OURS:
        await run_backfill(clean_settings, entity, 50, out=io.StringIO())
    marked = await legacy_db["connectors"].find_one({})
    assert marked is not None
    await legacy_db["connectors"].update_one(
        {"_id": marked["_id"]}, {"$set": {ORIGIN_FIELD: origin_marker(7)}}
    )
    report = await run_verify(clean_settings, "connectors", out=io.StringIO())
    assert report[0].clean
    await run_verify(clean_settings, "connectors", repair=True, out=io.StringIO())
    assert not await clean_pg.fetchval(
        "SELECT count(*) FROM connectors WHERE extra ? $1", ORIGIN_FIELD
    )


async def test_rows_younger_than_min_age_are_skipped_not_reported(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    clean_settings: Settings,
    clean_pg: asyncpg.Connection,
) -> None:
    await run_backfill(clean_settings, "subscriptions", 50, out=io.StringIO())
    await clean_pg.execute("UPDATE subscriptions SET company_name = 'racing', synced_at = now()")
    young = await run_verify(clean_settings, "subscriptions", min_age=3600, out=io.StringIO())
    assert young[0].clean and young[0].skipped_young == young[0].postgres_count
    old = await run_verify(clean_settings, "subscriptions", out=io.StringIO())
    assert not old[0].clean


async def test_commands_on_a_database_without_the_schema_say_what_to_run(mongo_url: str) -> None:
    from migrators.stores import SchemaNotReady

    # the server's maintenance database: reachable, and never holds the migration tables
    settings = Settings(mongo_url=mongo_url, database_url=PG_ADMIN_URL)
    with pytest.raises(SchemaNotReady, match="run 'strangler schema upgrade' first"):
        await run_verify(settings, "all", out=io.StringIO())


async def test_verify_reads_rows_back_in_chunks_and_reports_the_same(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    clean_settings: Settings,
    clean_pg: asyncpg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import migrators.verify as verify

    for entity in OURS:
        await run_backfill(clean_settings, entity, 50, out=io.StringIO())
    ids = [r[0] for r in await clean_pg.fetch("SELECT connector_id FROM connectors ORDER BY 1")]
    planted = ids[1::7]  # across many chunks of 3
    await clean_pg.execute(
        "UPDATE connectors SET description = 'planted' WHERE connector_id = ANY($1)", planted
    )
    await clean_pg.execute("DELETE FROM connectors WHERE connector_id = $1", ids[-1])

    whole = (await run_verify(clean_settings, "connectors", out=io.StringIO()))[0]
    monkeypatch.setattr(verify, "_CHUNK", 3)
    chunked = (await run_verify(clean_settings, "connectors", out=io.StringIO()))[0]

    assert chunked.differences == whole.differences
    assert [d.legacy_id for d in whole.differences if d.kind == "fields differ"] == planted
    for difference in whole.differences:  # the fields, read again for these ids only
        if difference.kind == "fields differ":
            (detail,) = difference.details
            assert detail.startswith("description: MongoDB ") and 'PostgreSQL "planted"' in detail
    assert [d.legacy_id for d in whole.differences if d.kind == "missing in PostgreSQL"] == [
        ids[-1]
    ]
    assert (chunked.mongo_count, chunked.postgres_count) == (
        whole.mongo_count,
        whole.postgres_count,
    )


async def test_a_tenant_only_a_token_named_is_neither_deleted_nor_extra_until_its_account_comes(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    clean_settings: Settings,
    clean_pg: asyncpg.Connection,
    ctx: MappingContext,
) -> None:
    await run_backfill(clean_settings, "subscriptions", 50, out=io.StringIO())
    # The new side's first write of a tenant with no Accounts document (LEGACY.md trusts a
    # well-signed token as issued), and a user of it that references the row.
    tenant = "sub_70c3e0000001"
    async with clean_pg.transaction():
        await enter_sync(clean_pg)
        await ensure_subscription(clean_pg, tenant)
    report = await run_verify(clean_settings, "subscriptions", out=io.StringIO())
    assert report[0].clean, report[0].lines()
    [spec] = default_registry().select("subscriptions")
    sweeper = Sweeper(spec, legacy_db["Accounts"], ctx, buckets=16, buckets_per_round=16,
                      id_column="subscription_id")  # fmt: skip
    assert tenant not in (await sweeper.run_round(clean_pg, 0)).differing_ids
    # Its account arrives after all: the sync fills the row in, and it is an account then.
    await legacy_db["Accounts"].insert_one(
        {"subscription_id": tenant, "company_name": "Late Co", "plan_type": "team",
         "status": "active", "created_at": datetime(2026, 1, 2, tzinfo=UTC)}
    )  # fmt: skip
    assert tenant in (await sweeper.run_round(clean_pg, 0)).differing_ids
    await run_verify(clean_settings, "subscriptions", repair=True, out=io.StringIO())
    row = await clean_pg.fetchrow(
        "SELECT company_name, extra ? $2 AS placeholder FROM subscriptions "
        "WHERE subscription_id = $1",
        tenant,
        PLACEHOLDER,
    )
    assert row is not None and (row["company_name"], row["placeholder"]) == ("Late Co", False)
    assert (await run_verify(clean_settings, "subscriptions", out=io.StringIO()))[0].clean
