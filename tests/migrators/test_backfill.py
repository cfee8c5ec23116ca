"""Backfill of a dirty seed, resumption after a kill, mixed _id types, idempotence."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import io
import json
from collections import Counter
from typing import Any

import asyncpg
import pytest
from bson import ObjectId

from legacy_emulator.generator import SeedSummary
from migrators.backfill import backfill_entity
from migrators.cli_backfill import run_backfill
from migrators.cli_verify import run_verify
from migrators.registry import default_registry
from migrators.spec import MappingContext
from strangler.config import Settings
from strangler.contract import is_deleted
from strangler.mongo import Database

REGISTRY = default_registry()
ACCOUNTS = REGISTRY.get("subscriptions")
DIRT_OF_THESE_COLLECTIONS = {
    "datetime_as_string", "datetime_as_epoch_ms", "optional_field_missing",
    "optional_field_null", "d_flag_missing", "d_flag_as_string", "number_as_string",
    "duplicate_connector_name", "dangling_created_by", "unknown_field",
}  # fmt: skip


async def _all(db: Database, collection: str) -> list[dict[str, Any]]:
    return [d async for d in db[collection].find({})]


_DATETIMES = ("created_at", "updated_at", "last_tested_at", "last_login_at")
_OPTIONAL = {
    "Accounts": ("plan_type",),
    "users": ("photo_url", "user_utc_offset", "last_login_at", "full_name", "updated_at"),
    "connectors": ("description", "last_tested_at", "test_status", "updated_at"),
}
_KNOWN_EXTRA = {"__v", "migratedFrom", "tmp_fix_2023", "legacyNotes", "isSample"}


def _dirt_found(collection: str, documents: list[dict[str, Any]]) -> Counter[str]:
    """The field-level dirt kinds visible in these documents (the generator counts its
    injections across all collections; this tells which reached these three)."""
    found: Counter[str] = Counter()
    for d in documents:
        for name in _DATETIMES:
            value = d.get(name)
            found["datetime_as_string"] += isinstance(value, str)
            found["datetime_as_epoch_ms"] += isinstance(value, int)
        found["optional_field_missing"] += any(f not in d for f in _OPTIONAL[collection])
        found["optional_field_null"] += any(f in d and d[f] is None for f in _OPTIONAL[collection])
        found["unknown_field"] += bool(_KNOWN_EXTRA & set(d))
        if collection == "connectors":
            found["d_flag_missing"] += "d_flag" not in d
            found["d_flag_as_string"] += isinstance(d.get("d_flag"), str)
            found["number_as_string"] += isinstance(d["connection_detail"].get("port"), str)
    return +found


async def _plant_unmappable(db: Database) -> None:
    no_id = {"connector_name": "no id", "connection_detail": {"password": "PLANTED-pw-1"}}
    orphan = {
        "connector_id": "cn_0000000000ff",
        "subscription_id": "sub_0000000000ff",
        "connection_detail": {"password": "PLANTED-pw-2"},
        "connector_name": "orphan",
    }
    await db["connectors"].insert_many([no_id, orphan])


async def test_dirty_seed_every_document_migrated_or_quarantined_no_password_leaks(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    clean_settings: Settings,
    clean_pg: asyncpg.Connection,
) -> None:
    assert DIRT_OF_THESE_COLLECTIONS <= {k for k, n in dirty_seed.dirt.items() if n}
    found: Counter[str] = Counter()
    for collection in ("Accounts", "users", "connectors"):
        found += _dirt_found(collection, await _all(legacy_db, collection))
    structural = {"duplicate_connector_name", "dangling_created_by"}  # checked below
    assert set(found) == DIRT_OF_THESE_COLLECTIONS - structural
    await _plant_unmappable(legacy_db)
    out = io.StringIO()
    summaries = await run_backfill(clean_settings, "all", 7, out=out)
    reports = await run_verify(clean_settings, "all", out=out)
    by_name = {s.entity: s for s in summaries}
    for summary in summaries:  # nothing lost: read = rows + quarantined
        collection = summary.collection
        documents = await _all(legacy_db, collection)
        table = REGISTRY.get(summary.entity).tables[0]
        rows = await clean_pg.fetchval(f"SELECT count(*) FROM {table}")
        quarantined = sum(summary.result.quarantined.values())
        assert summary.result.read == len(documents) == rows + quarantined
    assert by_name["connectors"].result.quarantined == Counter(
        {"missing_id": 1, "unknown_subscription": 1}
    )
    assert all(r.clean for r in reports), out.getvalue()  # every value round-trips

    connectors = await _all(legacy_db, "connectors")
    users = {u["UserId"] for u in await _all(legacy_db, "users")}
    notes = by_name["connectors"].result.notes
    dangling = {i for i, n in notes if n.kind == "dangling_created_by"}
    has_owner = [  # the migrated ones: the two planted documents are quarantined
        c for c in connectors
        if c.get("connector_id") and c.get("subscription_id") != "sub_0000000000ff"
    ]  # fmt: skip
    expected = {c["connector_id"] for c in has_owner if c.get("created_by") not in users}
    expected -= {c.get("connector_id") for c in has_owner if not c.get("created_by")}
    assert dangling == expected and dangling  # kept and reported
    names = Counter(
        (c.get("subscription_id"), c.get("connector_name"))
        for c in has_owner
        if not is_deleted(c.get("d_flag"))
    )
    renamed = [n for _, n in notes if n.kind == "renamed_duplicate"]
    assert len(renamed) == sum(n - 1 for n in names.values()) > 0
    rows = {r["connector_id"]: r for r in await clean_pg.fetch("SELECT * FROM connectors")}
    for document in has_owner:
        row = rows[document["connector_id"]]
        extra = json.loads(row["extra"])
        assert {k for k in document if k in _KNOWN_EXTRA} == set(extra) - {"$renamed"}
        assert row["is_deleted"] is is_deleted(document.get("d_flag"))
        port = document["connection_detail"].get("port")
        assert row["connection_detail"].find(f'"port": {port!r}'.replace("'", '"')) >= 0

    passwords = [c["connection_detail"]["password"] for c in connectors]
    dumped = "\n".join(
        [r[0] for r in await clean_pg.fetch("SELECT row_to_json(c)::text FROM connectors c")]
        + [r[0] for r in await clean_pg.fetch("SELECT row_to_json(q)::text FROM "
                                              "migration_quarantine q")]
    )  # fmt: skip
    for password in passwords:
        assert password not in dumped and password.encode().hex() not in dumped
        assert password not in out.getvalue()


async def test_killed_backfill_resumes_without_rereading_or_skipping(
    legacy_db: Database, dirty_seed: SeedSummary, clean_pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    users = REGISTRY.get("users")
    await backfill_entity(legacy_db, clean_pg, ACCOUNTS, ctx)

    class Killed(BaseException):
        pass

    batches = []

    def kill_after_two(line: str) -> None:
        batches.append(line)
        if len(batches) == 2:
            raise Killed

    with pytest.raises(Killed):
        await backfill_entity(
            legacy_db, clean_pg, users, ctx, batch_size=4, progress=kill_after_two
        )
    assert await clean_pg.fetchval("SELECT count(*) FROM users") == 8
    resumed = await backfill_entity(legacy_db, clean_pg, users, ctx, batch_size=4)
    total = await legacy_db["users"].count_documents({})
    assert resumed.resumed and resumed.result.read == total - 8  # nothing read twice
    assert await clean_pg.fetchval("SELECT count(DISTINCT user_id) FROM users") == total
    query = "SELECT user_id, source_version, synced_at FROM users ORDER BY 1"
    before = await clean_pg.fetch(query)
    again = await backfill_entity(legacy_db, clean_pg, users, ctx, batch_size=4)
    assert not again.resumed and again.result.read == total and again.result.written == 0
    assert await clean_pg.fetch(query) == before  # a second run changes nothing


async def test_mixed_id_types_are_all_read_even_across_a_resume(
    legacy_db: Database, clean_pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    ids: list[Any] = [
        ObjectId(), "a-string", 7, 2.5, 2**40, ObjectId(), "b-string", {"k": 1},
        dt.datetime(2020, 1, 1), b"\x01\x02", True, 3,
    ]  # fmt: skip
    await legacy_db["Accounts"].insert_many(
        [{"_id": i, "subscription_id": f"sub_{n:012x}"} for n, i in enumerate(ids)]
    )

    class Killed(BaseException):
        pass

    def kill(line: str) -> None:
        if line.startswith("subscriptions: 6/"):
            raise Killed

    with pytest.raises(Killed):
        await backfill_entity(legacy_db, clean_pg, ACCOUNTS, ctx, batch_size=3, progress=kill)
    resumed = await backfill_entity(legacy_db, clean_pg, ACCOUNTS, ctx, batch_size=3)
    assert resumed.result.read == len(ids) - 6
    assert await clean_pg.fetchval("SELECT count(*) FROM subscriptions") == len(ids)
    assert resumed.not_read == 0


def test_commands_through_the_cli_print_summaries_and_never_a_password(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    clean_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from strangler.cli import main

    key = base64.b64encode(clean_settings.connector_keys.keys["k1"]).decode()
    monkeypatch.setenv("MONGO_URL", clean_settings.mongo_url)
    monkeypatch.setenv("DATABASE_URL", clean_settings.database_url)
    monkeypatch.setenv("CONNECTOR_KEYS", f"k1:{key}")
    assert main(["backfill", "all", "--batch-size", "9"]) == 0
    assert main(["verify", "all"]) == 0
    monkeypatch.setenv("CONNECTOR_KEYS", f"k1:{key},k2:{base64.b64encode(b'k' * 32).decode()}")
    assert main(["secrets", "rotate", "--batch", "4"]) == 0
    assert main(["verify", "connectors"]) == 0  # still opens every secret, now under k2
    assert main(["backfill", "nonsense"]) == 2
    output = capsys.readouterr()
    text = output.out + output.err + caplog.text
    assert "backfill summary:" in text and "connectors: clean" in text
    assert "rotated 24 connector secret(s) to key 'k2'" in text
    assert "unknown entity 'nonsense'" in text
    passwords = asyncio.run(_passwords(legacy_db))
    assert len(passwords) == 24 and not any(p in text for p in passwords) and key not in text


async def _passwords(db: Database) -> list[str]:
    return [d["connection_detail"]["password"] async for d in db["connectors"].find()]


async def test_a_batch_lost_to_a_concurrent_writer_is_tried_again_at_its_version(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    clean_pg: asyncpg.Connection,
    ctx: MappingContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import migrators.backfill as backfill_module
    from migrators.writer import BatchRejected

    real = backfill_module.write_batch
    calls: list[list[int]] = []

    async def deadlocked_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(sorted({item.version for item in args[2]}))
        if len(calls) == 1:
            cause = asyncpg.DeadlockDetectedError("deadlock detected")
            raise BatchRejected("rejected") from cause
        return await real(*args, **kwargs)

    monkeypatch.setattr(backfill_module, "write_batch", deadlocked_once)
    summary = await backfill_entity(legacy_db, clean_pg, ACCOUNTS, ctx, clock=lambda: 77)
    assert summary.result.written == 3 and calls == [[77], [77]]


async def test_backfill_cancelled_inside_a_batch_resumes_complete(
    legacy_db: Database, dirty_seed: SeedSummary, database_url: str, ctx: MappingContext
) -> None:
    users = REGISTRY.get("users")
    first = await asyncpg.connect(database_url)
    await backfill_entity(legacy_db, first, ACCOUNTS, ctx)
    loop = asyncio.get_running_loop()
    task: asyncio.Task[Any] | None = None

    def cancel_during_the_next_batch(line: str) -> None:
        if line.startswith("users: 9/") and task is not None:
            loop.call_soon(task.cancel)  # lands while the next batch is being written

    task = asyncio.create_task(
        backfill_entity(
            legacy_db, first, users, ctx, batch_size=3, progress=cancel_during_the_next_batch
        )
    )
    with pytest.raises(asyncio.CancelledError):
        await task
    first.terminate()  # the process died: its connection with it
    second = await asyncpg.connect(database_url)
    try:
        committed = await second.fetchval("SELECT count(*) FROM users")
        assert 9 <= committed < 30
        resumed = await backfill_entity(legacy_db, second, users, ctx, batch_size=3)
        assert resumed.resumed and resumed.result.read == 30 - committed
        assert await second.fetchval("SELECT count(DISTINCT user_id) FROM users") == 30
    finally:
        await second.close()


async def test_a_second_backfill_of_the_same_entity_is_refused_while_one_runs(
    legacy_db: Database, dirty_seed: SeedSummary, database_url: str, ctx: MappingContext
) -> None:
    from migrators.backfill import BackfillBusy

    holder, other = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        await holder.execute(
            "SELECT pg_advisory_lock(hashtext($1))", "strangler backfill:subscriptions"
        )
        with pytest.raises(BackfillBusy, match="another backfill of subscriptions"):
            await backfill_entity(legacy_db, other, ACCOUNTS, ctx)
        await holder.execute(
            "SELECT pg_advisory_unlock(hashtext($1))", "strangler backfill:subscriptions"
        )
        assert (await backfill_entity(legacy_db, other, ACCOUNTS, ctx)).result.written == 3
    finally:
        await holder.close()
        await other.close()
