"""``strangler flags``: the flag table edited in place, gates that refuse and allow, every
applied change logged with who, what and the gates' evidence."""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from new_side_support import KEYS, SECRET, Tenant, connector_document, insert_connector_row

from control.cli import run_set, show_lines
from control.flags import GatesFailed, edit_rules_text, plan_change, read_flags
from migrators.crypto import SecretBox
from migrators.feeds.leadership import hold_leadership
from migrators.sync_status import beat
from strangler.config import Settings
from strangler.errors import DataError
from strangler.mongo import open_database

REPO_RULES = Path(__file__).resolve().parents[2] / "routing_rules.yaml"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "routing_rules.yaml"
    shutil.copy(REPO_RULES, path)
    return path


def set_args(
    rules: Path, mode: str, percent: float | None = None, **extra: Any
) -> argparse.Namespace:
    values: dict[str, Any] = dict(
        entity="connectors", mode=mode, percent=percent, rules=str(rules), max_lag=5.0,
        min_samples=30, max_regression_rate=0.01, window_hours=1.0, force=False, who="ops-ann",
        reason=None, proxy_admin=None, fence_seconds=30.0, settle=0.1, drain_timeout=10.0,
    )  # fmt: skip
    values.update(extra)
    return argparse.Namespace(**values)


def test_editing_a_flag_keeps_every_comment_and_every_other_entry(rules: Path) -> None:
    before = rules.read_text()
    change = plan_change(read_flags(str(rules)), "connectors", "canary", 12.5)
    edited = edit_rules_text(before, change)
    diff = [
        line
        for line in difflib.unified_diff(before.splitlines(), edited.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert diff == ["-    mode: legacy", "+    mode: canary", "+    percent: 12.5"]
    assert edited.count("#") == before.count("#")
    rules.write_text(edited)
    flags = read_flags(str(rules))
    assert (flags["connectors"].mode, flags["connectors"].percent) == ("canary", 12.5)
    assert all(row.mode == "legacy" for name, row in flags.items() if name != "connectors")
    back = edit_rules_text(edited, plan_change(flags, "connectors", "new", None))
    assert (read_flags_text(back)["connectors"]) == ("new", 0.0)


def read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def read_flags_text(text: str) -> dict[str, tuple[str, float]]:
    from control.flags import parse_table

    return {name: (e.mode, e.percent) for name, e in parse_table(text, "x").entities.items()}


@pytest.mark.parametrize(
    ("entity", "mode", "percent", "says"),
    [
        ("gadgets", "new", None, "unknown entity"),
        ("connectors", "sideways", None, "unknown mode"),
        ("connectors", "canary", None, "canary needs a PERCENT"),
        ("connectors", "canary", 101, "canary needs a PERCENT"),
        ("connectors", "shadow", 10, "PERCENT applies to canary only"),
        ("connectors", "legacy", None, "nothing to do"),
    ],
)
def test_plans_that_make_no_sense_are_refused(
    rules: Path, entity: str, mode: str, percent: float | None, says: str
) -> None:
    with pytest.raises(DataError, match=says):
        plan_change(read_flags(str(rules)), entity, mode, percent)


def test_show_prints_the_table(rules: Path) -> None:
    lines = show_lines(str(rules))
    assert lines[0].split() == ["entity", "mode", "percent", "sample", "fence"]
    assert any(line.split()[:2] == ["connectors", "legacy"] for line in lines)


@pytest.fixture
async def owner(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated_database_url)
    try:
        yield conn
    finally:
        await conn.close()


def settings_for(database_url: str, redis_url: str, mongo_url: str) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, mongo_url=mongo_url,
        jwt_secret=SECRET, connector_keys=KEYS,
    )  # fmt: skip


async def changes_logged(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT who, entity, from_mode, to_mode, percent, gate_results, forced "
        "FROM routing_flag_changes ORDER BY id"
    )
    return [{**dict(row), "gate_results": json.loads(row["gate_results"])} for row in rows]


async def test_gates_refuse_a_change_then_allow_it_and_force_is_logged(
    rules: Path, owner: asyncpg.Connection, migrated_database_url: str, redis_url: str
) -> None:
    mongo_url = f"memory://flags-{uuid.uuid4().hex}"
    settings = settings_for(migrated_database_url, redis_url, mongo_url)
    text_before = read_text(rules)

    # Nothing backfilled, no sync: into shadow is refused and nothing changes.
    with pytest.raises(GatesFailed, match=r"backfill-done.*sync-running") as refused:
        await run_set(settings, set_args(rules, "shadow"), say=lambda _line: None)
    assert {gate.name for gate in refused.value.failed} == {"backfill-done", "sync-running"}
    assert read_text(rules) == text_before
    assert await changes_logged(owner) == []

    # Forced: applied, and logged as forced with the failing gates' evidence.
    await run_set(settings, set_args(rules, "shadow", force=True), say=lambda _line: None)
    assert read_flags(str(rules))["connectors"].mode == "shadow"
    [forced] = await changes_logged(owner)
    assert (forced["who"], forced["from_mode"], forced["to_mode"], forced["forced"]) == (
        "ops-ann", "legacy", "shadow", True,
    )  # fmt: skip
    assert forced["gate_results"]["backfill-done"]["passed"] is False
    assert "connectors" in forced["gate_results"]["backfill-done"]["detail"]

    # Backfill done and a sync leading: into canary now waits only for shadow evidence.
    for entity in ("subscriptions", "users", "connectors"):
        await owner.execute(
            "INSERT INTO migration_backfill_checkpoints (entity, completed_at) VALUES ($1, now())",
            entity,
        )
    leader = await asyncpg.connect(migrated_database_url)
    try:
        assert await hold_leadership(leader, "connectors", poll_seconds=0.05)
        await beat(leader, "connectors", feed="polling", worker="w1", lag_seconds=0.0)
        with pytest.raises(GatesFailed, match="shadow-min-samples") as no_evidence:
            await run_set(settings, set_args(rules, "canary", 50), say=lambda _line: None)
        assert {g.name for g in no_evidence.value.failed} == {
            "shadow-min-samples", "shadow-regression-rate",
        }  # fmt: skip
        # Too many regressions: the upper bound is over 1 %.
        await record_comparisons(owner, equal=60, regression=3)
        with pytest.raises(GatesFailed, match="shadow-regression-rate"):
            await run_set(settings, set_args(rules, "canary", 50), say=lambda _line: None)
        # Enough clean comparisons: allowed.
        await owner.execute("DELETE FROM shadow_comparisons")
        await record_comparisons(owner, equal=400, regression=0)
        lines: list[str] = []
        await run_set(settings, set_args(rules, "canary", 50), say=lines.append)
        assert any("[pass] shadow-regression-rate" in line for line in lines)
        assert read_flags(str(rules))["connectors"].percent == 50

        # Into new switches the truth: verify must be clean, and the proxies named.
        tenant = Tenant(f"sub_{uuid.uuid4().hex[:12]}", f"usr_{uuid.uuid4().hex[:12]}")
        document = connector_document(tenant, "verified")
        db = open_database(mongo_url)
        await db["connectors"].insert_one(dict(document))
        pool = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=1)
        try:
            await insert_connector_row(pool, SecretBox(KEYS), document)
        finally:
            await pool.close()
        with pytest.raises(DataError, match="--proxy-admin"):
            await run_set(settings, set_args(rules, "new"), say=lines.append)
        assert any("[pass] verify-clean" in line for line in lines), lines
        assert any("[pass] lag-small" in line for line in lines)
        # A document changed in MongoDB only: verify is not clean, the gate says so.
        await db["connectors"].update_one(
            {"connector_id": document["connector_id"]}, {"$set": {"description": "drifted"}}
        )
        with pytest.raises(GatesFailed, match="verify-clean"):
            await run_set(settings, set_args(rules, "new"), say=lambda _line: None)
    finally:
        await leader.close()

    # Stepping back never has gates.
    await run_set(settings, set_args(rules, "legacy"), say=lambda _line: None)
    logged = await changes_logged(owner)
    assert [(c["from_mode"], c["to_mode"], c["percent"], c["forced"]) for c in logged] == [
        ("legacy", "shadow", None, True),
        ("shadow", "canary", 50, False),
        ("canary", "legacy", None, False),
    ]
    assert logged[-1]["gate_results"] == {}


async def record_comparisons(conn: asyncpg.Connection, *, equal: int, regression: int) -> None:
    bucket = datetime.now(UTC).replace(second=0, microsecond=0)
    for kind, count in (("equal", equal), ("regression", regression)):
        if count:
            await conn.execute(
                "INSERT INTO shadow_comparisons (run, entity, endpoint, bucket, legacy_status, "
                "new_status, kind, n) VALUES ('live', 'connectors', "
                "'GET /connectors/getConnector', $1, 200, 200, $2, $3)",
                bucket,
                kind,
                count,
            )


async def test_the_touched_backlog_counts_what_the_forward_sync_has_not_applied(
    redis_url: str,
) -> None:
    import redis.asyncio as aioredis

    from control.cli import touched_backlog
    from migrators.touched import TouchedReader, record_touched, stream_key

    entity = f"probe{uuid.uuid4().hex[:8]}"
    client = aioredis.from_url(redis_url)
    try:
        assert await touched_backlog(client, entity) == 0  # nothing ever touched
        await record_touched(client, entity, ["cn_000000000001", "cn_000000000002"])
        assert await touched_backlog(client, entity) == 2  # no worker has read them
        reader = TouchedReader(client, entity)
        await reader.ensure_group()
        taken = await reader.read(1, 10)
        assert await touched_backlog(client, entity) == 2  # one taken but not applied
        await reader.acknowledge([entry.entry_id for entry in taken])
        assert await touched_backlog(client, entity) == 1
    finally:
        await client.delete(stream_key(entity))
        await client.aclose()


def test_a_database_that_does_not_exist_is_a_clear_error_not_a_traceback(
    rules: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from strangler.cli import main

    monkeypatch.setenv(
        "DATABASE_URL", f"postgresql://root@127.0.0.1:5432/absent_{uuid.uuid4().hex[:8]}"
    )
    code = main(["flags", "plan", "connectors", "shadow", "--rules", str(rules)])
    err = capsys.readouterr().err
    assert code == 2
    assert "the database does not exist" in err and "strangler schema upgrade" in err
    assert "Traceback" not in err
