"""``strangler legacy indexes``: the plan names what is missing, apply creates it once, an
existing index with other options is a clash left alone, TTL fields that are no date are
counted."""

from __future__ import annotations

import secrets
from datetime import datetime

from legacy_emulator.generator_plan import COLLECTIONS
from legacy_emulator.indexes import RELIEF, RETAINED, apply_plan, plan_indexes
from strangler.mongo import open_database


def _db():
    return open_database(f"memory://indexes-{secrets.token_hex(4)}")


def test_relief_indexes_are_on_legacy_collections_and_never_unique() -> None:
    assert {spec.collection for spec in RELIEF} <= set(COLLECTIONS)
    assert all("unique" not in spec.options() for spec in RELIEF + RETAINED)
    assert all(spec.expire_after_seconds for spec in RETAINED)
    assert len({spec.name for spec in RELIEF + RETAINED}) == len(RELIEF + RETAINED)


async def test_apply_creates_every_missing_index_once() -> None:
    db = _db()
    plan = await plan_indexes(db)
    assert len(plan.missing) == len(RELIEF) + len(RETAINED) and not plan.clashes
    said: list[str] = []
    assert await apply_plan(db, plan, said.append) == len(plan.missing)
    assert said[0].startswith(f"[1/{len(plan.missing)}]")
    info = await db["executionLogs"].index_information()
    assert info["strangler_execution_logs_ttl"]["expireAfterSeconds"] == 90 * 86_400
    again = await plan_indexes(db)
    assert again.missing == [] and len(again.collections[0].present) > 0
    assert await apply_plan(db, again) == 0


async def test_an_index_with_the_same_keys_and_another_ttl_is_a_clash_left_alone() -> None:
    db = _db()
    await db["notifications"].create_index([("created_at", 1)], name="old", expireAfterSeconds=60)
    plan = await plan_indexes(db, ["retained"])
    assert [(spec.name, why) for spec, why in plan.clashes] == [
        ("strangler_notifications_ttl", "old has the same keys, expireAfterSeconds 60")
    ]
    assert "resolve each by hand" in plan.lines()[-1]
    await apply_plan(db, plan)
    info = await db["notifications"].index_information()
    assert info["old"]["expireAfterSeconds"] == 60 and "strangler_notifications_ttl" not in info


async def test_documents_whose_ttl_field_is_no_date_are_counted_as_never_expiring() -> None:
    db = _db()
    await db["dashboardCache"].insert_many(
        [{"cached_at": datetime(2026, 1, 1)}, {"cached_at": "2026-01-01 00:00:00"}, {"x": 1}]
    )
    plan = await plan_indexes(db, ["retained"])
    cache = next(p for p in plan.collections if p.collection == "dashboardCache")
    assert cache.never_expire == 1
    assert any("1 document(s) hold no BSON date" in line for line in plan.lines())
