"""jobRun and userActivity -> monthly partitions -> documents: lossless, each row in its month."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st
from migrator_strategies import MISSING, assemble, dirty_datetimes, extra_fields, ids, texts

from legacy_emulator.generator import seed_store
from migrators.backfill import backfill_entity, legacy_id_of
from migrators.entities.runs import SPECS
from migrators.registry import default_registry
from migrators.spec import Mapped, MappingContext, Quarantined
from migrators.tree_apply import load_rows
from migrators.verify import verify_entity
from schema.partitions import NO_DATE
from schema.tenancy import enter_sync

RUNS, ACTIVITY = SPECS
CTX = MappingContext()
SUB = "sub_000000000001"

counts = st.one_of(
    st.integers(0, 2**40), st.sampled_from(["1234", "12.0", "-5", "abc", "", None, MISSING, -3])
)
logs = st.one_of(
    st.lists(
        st.fixed_dictionaries(
            {"ts": dirty_datetimes.filter(lambda v: v is not MISSING),
             "level": st.sampled_from(["INFO", "WARN"]), "message": st.text(max_size=10)}
        ),
        max_size=3,
    ),
    st.sampled_from([None, MISSING, "not a list", []]),
)  # fmt: skip
run_documents = st.builds(
    lambda rid, fields, extra: assemble({"job_run_id": "run_" + rid, **fields}, extra),
    ids,
    st.fixed_dictionaries(
        {
            "subscription_id": st.just(SUB),
            "workflow_id": texts,
            "job_id": texts,
            "workspace_id": texts,
            "status": st.sampled_from(["queued", "running", "completed", "failed", "done", None]),
            "created_at": dirty_datetimes,
            "completed_at": dirty_datetimes,
            "duration_ms": counts,
            "triggered_by": texts,
            "trigger_type": st.sampled_from(["manual", "scheduled", "webhook", "cron", MISSING]),
            "error_message": texts,
            "rows_processed": counts,
            "logs": logs,
        }
    ),
    extra_fields,
)
activity_documents = st.builds(
    lambda fields, extra: assemble(fields, extra),
    st.fixed_dictionaries(
        {
            "subscription_id": st.just(SUB),
            "UserId": texts,
            "action": st.sampled_from(["created", "updated", "viewed", "login", None]),
            "object_type": texts,
            "object_id": texts,
            "object_name": texts,
            "ip_address": texts,
            "user_agent": texts,
            "previous_data": st.one_of(st.none(), st.just(MISSING), extra_fields),
            "current_data": st.one_of(st.none(), st.just(MISSING), extra_fields, st.text()),
            "created_at": dirty_datetimes,
        }
    ),
    extra_fields,
)


def _round_trip(spec, document: dict[str, Any]) -> Mapped | None:
    outcome = spec.map_document(document, CTX)
    if isinstance(outcome, Quarantined):  # PostgreSQL text and jsonb hold no NUL
        assert outcome.reason == "nul_character" and "\\x00" in repr(document)
        return None
    assert spec.to_document(outcome.rows, CTX) == spec.normalize(document)
    (row,) = outcome.rows[spec.tables[0]]
    assert isinstance(row["created_at"], datetime)  # the partition key is never NULL
    return outcome


@settings(max_examples=200)
@given(run_documents)
def test_run_round_trip_is_the_normalized_document(document: dict[str, Any]) -> None:
    _round_trip(RUNS, document)


@settings(max_examples=200)
@given(activity_documents)
def test_activity_round_trip_is_the_normalized_document(document: dict[str, Any]) -> None:
    outcome = _round_trip(ACTIVITY, document)
    if outcome is not None:
        assert outcome.rows["user_activity"][0]["activity_id"] == str(document["_id"])


OID = ObjectId.from_datetime(datetime(2023, 5, 17, 12, 0, tzinfo=UTC))


@pytest.mark.parametrize(
    ("created_at", "_id", "row_moment", "note"),
    [
        ("2024-02-03 04:05:06", OID, datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC), None),
        (1700000000000, OID, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC), None),
        (MISSING, OID, NO_DATE, "no_valid_date"),
        ("not a date", OID, NO_DATE, "no_valid_date"),
        (None, "legacy-string-id", NO_DATE, "no_valid_date"),
        ("", OID, NO_DATE, "no_valid_date"),
    ],
)
def test_created_at_places_the_row_and_comes_back_as_found(
    created_at: Any, _id: Any, row_moment: datetime, note: str | None
) -> None:
    document = {"_id": _id, "job_run_id": "run_1", "subscription_id": SUB, "status": "queued"}
    if created_at is not MISSING:
        document["created_at"] = created_at
    outcome = RUNS.map_document(document, CTX)
    assert isinstance(outcome, Mapped)
    assert outcome.rows["job_runs"][0]["created_at"] == row_moment
    assert note is None or note in {n.kind for n in outcome.notes}
    rebuilt = RUNS.to_document(outcome.rows, CTX)
    assert rebuilt == RUNS.normalize(document)
    if created_at in (MISSING, None):
        assert rebuilt["created_at"] is None  # the stand-in never leaks into the document


@pytest.mark.parametrize(
    ("stored", "column", "kept"),
    [(1234, 1234, False), ("1234", 1234, False), ("12.0", 12, False), ("abc", None, True),
     (-5, None, True), (None, None, False)],
)  # fmt: skip
def test_counts_stored_as_strings_are_read_and_dirt_kept(stored: Any, column: Any, kept: bool):
    document = {"job_run_id": "run_1", "subscription_id": SUB, "duration_ms": stored,
                "created_at": datetime(2024, 1, 1)}  # fmt: skip
    outcome = _round_trip(RUNS, document)
    assert outcome is not None
    row = outcome.rows["job_runs"][0]
    assert row["duration_ms"] == column
    assert ("duration_ms" in row["extra"].get("$unreadable", {})) is kept
    # read as a number (the normalized form verify compares), or given back as found
    assert RUNS.to_document(outcome.rows, CTX)["duration_ms"] == (stored if kept else column)


@pytest.mark.parametrize(
    ("spec", "document"),
    [
        (RUNS, {"job_run_id": "", "subscription_id": SUB}),
        (RUNS, {"job_run_id": None, "subscription_id": SUB}),
        (RUNS, {"job_run_id": "run_1"}),
        (ACTIVITY, {"_id": OID, "action": "viewed"}),
        (ACTIVITY, {"_id": OID, "subscription_id": 7}),
    ],
)
def test_documents_without_id_or_tenant_are_quarantined(spec, document) -> None:
    assert isinstance(spec.map_document(document, CTX), Quarantined)


async def _partition_counts(pg, table: str) -> dict[str, int]:
    rows = await pg.fetch(
        f"SELECT tableoid::regclass::text AS part, count(*) AS n FROM {table} GROUP BY 1"
    )
    return {r["part"]: r["n"] for r in rows}


async def _backfill(legacy_db, pg, ctx):
    registry = default_registry()
    results = {}
    for spec in registry:
        results[spec.name] = await backfill_entity(legacy_db, pg, spec, ctx)
    return results


async def test_every_seeded_run_and_entry_lands_in_its_month_and_round_trips(legacy_db, pg, ctx):
    await seed_store(legacy_db, scale="small", dirty=0.0, seed=3)
    await _backfill(legacy_db, pg, ctx)
    for spec in SPECS:
        table = spec.tables[0]
        async with pg.transaction():
            await enter_sync(pg)
            rows = await load_rows(pg, spec)
            parts = await _partition_counts(pg, table)
            misplaced = await pg.fetchval(
                f"SELECT count(*) FROM {table} WHERE tableoid::regclass::text <> "
                f"'{table}_' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY_MM')"
            )
        documents = await legacy_db[spec.collection].find({}).to_list(None)
        assert len(rows) == len(documents) > 100
        assert misplaced == 0, parts  # every row in its month's partition, none in default
        assert f"{table}_default" not in parts
        for document in documents:
            rebuilt = spec.to_document(rows[legacy_id_of(spec, document)], ctx)
            assert rebuilt == spec.normalize(document), spec.name
        report = await verify_entity(legacy_db, pg, spec, ctx)
        assert report.clean, report.lines()


async def test_dirty_dates_are_placed_reported_and_verify_clean(legacy_db, pg, ctx):
    await seed_store(legacy_db, scale="small", dirty=0.0, seed=3)
    run = await legacy_db["jobRun"].find_one({})
    tenant = run["subscription_id"]
    await legacy_db["jobRun"].insert_many(
        [
            # an old run of 2019 whose month no partition covered yet: created on demand
            {"job_run_id": "run_00000000old1", "subscription_id": tenant, "status": "completed",
             "created_at": "2019-03-04 05:06:07", "duration_ms": "1500", "logs": []},
            # no readable date: the default partition, the value kept as found
            {"_id": OID, "job_run_id": "run_00000000old2", "subscription_id": tenant,
             "status": "failed", "created_at": "31/31/2020 99:99"},
            # no date and no ObjectId: the default partition
            {"_id": "imported-17", "job_run_id": "run_00000000old3", "subscription_id": tenant,
             "status": "queued"},
            # a date no month should be made for (year 9999): the default partition too
            {"job_run_id": "run_00000000old4", "subscription_id": tenant, "status": "queued",
             "created_at": datetime(9999, 1, 1)},
        ]
    )  # fmt: skip
    results = await _backfill(legacy_db, pg, ctx)
    notes = {(legacy_id, n.kind) for legacy_id, n in results["job_runs"].result.notes}
    assert ("run_00000000old2", "no_valid_date") in notes
    assert ("run_00000000old3", "no_valid_date") in notes
    placed = dict(
        await pg.fetch(
            "SELECT job_run_id, tableoid::regclass::text FROM job_runs "
            "WHERE job_run_id LIKE 'run_00000000old%'"
        )
    )
    assert placed == {
        "run_00000000old1": "job_runs_2019_03",
        "run_00000000old2": "job_runs_default",
        "run_00000000old3": "job_runs_default",
        "run_00000000old4": "job_runs_default",
    }
    report = await verify_entity(legacy_db, pg, RUNS, ctx)
    assert report.clean, report.lines()
    # a second backfill writes nothing: every row is found again in its partition
    again = await backfill_entity(legacy_db, pg, RUNS, ctx)
    assert again.result.written == 0


async def test_a_run_whose_created_at_was_corrected_moves_to_its_new_month(legacy_db, pg, ctx):
    await seed_store(legacy_db, scale="small", dirty=0.0, seed=3)
    run = await legacy_db["jobRun"].find_one({})
    await legacy_db["jobRun"].insert_one(
        {"job_run_id": "run_000000000mov", "subscription_id": run["subscription_id"],
         "status": "queued", "created_at": "2020-01-15 00:00:00"}
    )  # fmt: skip
    await _backfill(legacy_db, pg, ctx)
    await legacy_db["jobRun"].update_one(
        {"job_run_id": "run_000000000mov"}, {"$set": {"created_at": datetime(2021, 6, 1)}}
    )
    await backfill_entity(legacy_db, pg, RUNS, ctx)
    where = await pg.fetch(
        "SELECT tableoid::regclass::text AS part FROM job_runs WHERE job_run_id = $1",
        "run_000000000mov",
    )
    assert [r["part"] for r in where] == ["job_runs_2021_06"]  # one row, in its new month
    report = await verify_entity(legacy_db, pg, RUNS, ctx)
    assert report.clean, report.lines()
