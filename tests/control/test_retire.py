"""``strangler retire``: refused until every entity is in new, the outbox drained and verify
clean; then the point of no return is recorded once, and the reverse sync and any flag
change out of new refuse from then on."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from control.cli import run_plan, run_set
from control.flags import parse_table
from control.retire import RetireRefused, run_retire
from migrators.backfill import legacy_id_of
from migrators.cli_reverse import run_reverse_sync
from migrators.registry import default_registry
from migrators.retirement import Retired, read_retirement
from migrators.spec import MappingContext
from migrators.writer import SourceItem, write_batch
from strangler.cli import main
from strangler.config import ConnectorKeys, Settings
from strangler.mongo import Database, open_database

REPO_RULES = Path(__file__).resolve().parents[2] / "routing_rules.yaml"
KEYS = ConnectorKeys.parse("k1:" + "a" * 43 + "=")
SECRET = "retire-test-secret-0123456789abcdef"
CREATED = datetime(2026, 3, 1, 12, 30, 45, 123000, tzinfo=UTC)
UNREACHABLE_MONGO = "mongodb://127.0.0.1:9/gone"  # nothing listens: MongoDB is stopped


def rules_file(tmp_path: Path, *, keep_legacy: tuple[str, ...] = ()) -> Path:
    """The shipped flag table with every entity in new except ``keep_legacy``."""
    text = REPO_RULES.read_text(encoding="utf-8")
    entities = parse_table(text, "shipped").entities
    for name in entities:
        if name not in keep_legacy:
            text = re.sub(rf"(\n  {name}:\n    mode: )legacy", r"\1new", text)
    path = tmp_path / "routing_rules.yaml"
    path.write_text(text, encoding="utf-8")
    modes = {n: e.mode for n, e in parse_table(text, str(path)).entities.items()}
    assert modes == {n: "legacy" if n in keep_legacy else "new" for n in entities}
    return path


def retire_args(rules: Path, **extra: Any) -> argparse.Namespace:
    values: dict[str, Any] = dict(
        rules=str(rules), yes=False, dry_run=False, who="ops-ann", reason=None,
        proxy_admin=None, min_age=0.0,
    )  # fmt: skip
    values.update(extra)
    return argparse.Namespace(**values)


def flag_args(rules: Path, mode: str, **extra: Any) -> argparse.Namespace:
    values: dict[str, Any] = dict(
        entity="connectors", mode=mode, percent=None, rules=str(rules), max_lag=5.0,
        min_samples=30, max_regression_rate=0.01, window_hours=1.0, force=True, who="ops-ann",
        reason=None, proxy_admin=None, fence_seconds=30.0, settle=0.1, drain_timeout=10.0,
    )  # fmt: skip
    values.update(extra)
    return argparse.Namespace(**values)


def settings_for(database_url: str, redis_url: str, mongo_url: str) -> Settings:
    return Settings(
        database_url=database_url, redis_url=redis_url, mongo_url=mongo_url,
        jwt_secret=SECRET, connector_keys=KEYS,
    )  # fmt: skip


@pytest.fixture
def mongo_url() -> str:
    return f"memory://retire-{secrets.token_hex(6)}"


@pytest.fixture
async def owner(migrated_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(migrated_database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
def settings(migrated_database_url: str, redis_url: str, mongo_url: str) -> Settings:
    return settings_for(migrated_database_url, redis_url, mongo_url)


async def seed_both_stores(db: Database, conn: asyncpg.Connection) -> dict[str, Any]:
    """A tenant and one of its users, the same in MongoDB and in PostgreSQL."""
    subscription_id, user_id = f"sub_{secrets.token_hex(6)}", f"usr_{secrets.token_hex(6)}"
    account = {"subscription_id": subscription_id, "company_name": "Retiring Ltd",
               "plan_type": "team", "status": "active", "created_at": CREATED}  # fmt: skip
    user = {
        "UserId": user_id, "subscription_id": subscription_id, "email": "ann@example.com",
        "username": "ann", "full_name": "Ann", "password": "$2b$04$" + "a" * 53,
        "photo_url": None, "user_utc_offset": "+05:30", "is_active": True,
        "is_email_verified": False, "last_login_at": None, "created_at": CREATED,
        "updated_at": CREATED,
    }  # fmt: skip
    version = int(time.time() * 1000)
    for name, document in (("subscriptions", account), ("users", user)):
        spec = default_registry().get(name)
        await db[spec.collection].insert_one(dict(document))
        item = SourceItem(legacy_id_of(spec, document), dict(document), version)
        result = await write_batch(conn, spec, [item], ctx=MappingContext())
        assert result.written == 1 and not result.quarantined, result
    return user


async def add_outbox_row(conn: asyncpg.Connection, *, applied: bool) -> int:
    async with conn.transaction():
        await conn.execute("SET LOCAL ROLE strangler_sync")
        outbox_id: int = await conn.fetchval(
            "INSERT INTO migration_outbox (subscription_id, entity, legacy_id, operation, "
            "payload, applied_at) VALUES ($1, 'connectors', $2, 'update', '{}', "
            "CASE WHEN $3 THEN now() END) RETURNING id",
            f"sub_{secrets.token_hex(6)}",
            f"cn_{secrets.token_hex(6)}",
            applied,
        )
    return outbox_id


async def retirement_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT * FROM migration_retirement")
    return [dict(row) for row in rows]


async def retire_now(settings: Settings, rules: Path, lines: list[str] | None = None) -> None:
    result = await run_retire(
        settings, retire_args(rules, yes=True), say=(lines if lines is not None else []).append
    )
    assert result.recorded


async def test_refuses_while_an_entity_is_not_in_new_naming_it(
    tmp_path: Path, settings: Settings, owner: asyncpg.Connection
) -> None:
    rules = rules_file(tmp_path, keep_legacy=("connectors", "roles"))
    lines: list[str] = []
    with pytest.raises(RetireRefused, match=r"not in new: connectors \(legacy\), roles \(legacy\)"):
        await run_retire(settings, retire_args(rules, yes=True), say=lines.append)
    assert any(
        line.startswith("  [FAIL] every-entity-new: not in new: connectors (legacy), roles")
        for line in lines
    )
    assert any("[skip] verify-clean" in line for line in lines)  # never read MongoDB
    assert await retirement_rows(owner) == []


async def test_refuses_while_the_outbox_has_rows_not_yet_applied(
    tmp_path: Path, settings: Settings, owner: asyncpg.Connection
) -> None:
    await add_outbox_row(owner, applied=True)
    await add_outbox_row(owner, applied=False)
    with pytest.raises(RetireRefused, match=r"1 outbox row\(s\) not yet applied.*reverse-sync"):
        await run_retire(settings, retire_args(rules_file(tmp_path), yes=True), say=lambda _: None)
    assert await retirement_rows(owner) == []


async def test_refuses_when_the_final_verify_finds_a_difference(
    tmp_path: Path, settings: Settings, owner: asyncpg.Connection
) -> None:
    db = open_database(settings.mongo_url)
    user = await seed_both_stores(db, owner)
    await db["users"].update_one({"UserId": user["UserId"]}, {"$set": {"full_name": "Anne"}})
    lines: list[str] = []
    with pytest.raises(RetireRefused, match=r"verify-clean: differing: users \(1\)"):
        await run_retire(settings, retire_args(rules_file(tmp_path), yes=True), say=lines.append)
    assert any(user["UserId"] in line and "fields differ" in line for line in lines)
    assert await retirement_rows(owner) == []


async def test_a_dry_run_records_nothing_and_yes_records_the_point_of_no_return_once(
    tmp_path: Path, settings: Settings, owner: asyncpg.Connection, migrated_database_url: str
) -> None:
    await seed_both_stores(open_database(settings.mongo_url), owner)
    applied_id = await add_outbox_row(owner, applied=True)
    rules = rules_file(tmp_path)
    # A password in DATABASE_URL (trust ignores it) must never be printed.
    parts = urlsplit(migrated_database_url)
    with_password = urlunsplit(parts._replace(netloc=f"root:hunter2@{parts.hostname}:{parts.port}"))
    settings = settings_for(with_password, settings.redis_url, settings.mongo_url)

    lines: list[str] = []
    dry = await run_retire(settings, retire_args(rules, dry_run=True), say=lines.append)
    assert dry.retirement is None and not dry.recorded
    assert [g.name for g in dry.checks if g.passed] == [
        "every-entity-new", "no-legacy-sampling", "outbox-drained", "verify-clean",
    ]  # fmt: skip
    assert lines[-1].startswith("dry run: every check passes, nothing recorded")
    assert await retirement_rows(owner) == []

    lines.clear()
    done = await run_retire(
        settings, retire_args(rules, yes=True, reason="all in new for a month"), say=lines.append
    )
    assert done.recorded and done.retirement is not None
    [row] = await retirement_rows(owner)
    assert (row["who"], row["reason"], row["mongo_url"]) == (
        "ops-ann", "all in new for a month", settings.mongo_url,
    )  # fmt: skip
    assert row["flag_table_hash"] == parse_table(rules.read_text(), "x").canonical_hash()
    assert row["outbox_applied_up_to"] == applied_id
    summary = json.loads(row["verify_summary"])
    assert summary["min_age"] == 0.0
    assert set(summary["entities"]) == {spec.name for spec in default_registry()}
    assert summary["entities"]["users"] == {
        "clean": True, "mongo": 1, "postgres": 1, "quarantined": 0, "skipped_young": 0,
        "differences": 0,
    }  # fmt: skip
    assert any(line.startswith("recorded: MongoDB was retired at ") for line in lines)
    assert all("hunter2" not in line for line in lines)
    assert any("root:***@" in line for line in lines)

    # Again, with MongoDB stopped: it says when, records nothing and does not need MongoDB.
    lines.clear()
    stopped = settings_for(migrated_database_url, settings.redis_url, UNREACHABLE_MONGO)
    again = await run_retire(stopped, retire_args(rules, yes=True), say=lines.append)
    assert not again.recorded and again.retirement == done.retirement
    when = row["retired_at"].astimezone(UTC).isoformat(timespec="seconds")
    assert lines == [
        f"MongoDB was retired at {when} by ops-ann (flag table {row['flag_table_hash']}): "
        "nothing to do"
    ]
    assert len(await retirement_rows(owner)) == 1


async def test_the_table_holds_one_row_and_the_workers_roles_cannot_undo_it(
    tmp_path: Path, settings: Settings, owner: asyncpg.Connection
) -> None:
    await retire_now(settings, rules_file(tmp_path))
    with pytest.raises(asyncpg.UniqueViolationError):
        await owner.execute(
            "INSERT INTO migration_retirement (who, flag_table_hash, mongo_url, verify_summary) "
            "VALUES ('x', 'h', 'memory://', '{}')"
        )
    with pytest.raises(asyncpg.CheckViolationError, match="migration_retirement_one_row"):
        await owner.execute(
            "INSERT INTO migration_retirement (singleton, who, flag_table_hash, mongo_url, "
            "verify_summary) VALUES (false, 'x', 'h', 'memory://', '{}')"
        )
    for role in ("strangler_sync", "strangler_app"):
        for statement in ("DELETE FROM migration_retirement", "UPDATE migration_retirement "
                          "SET who = 'nobody'"):  # fmt: skip
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with owner.transaction():
                    await owner.execute(f"SET LOCAL ROLE {role}")
                    await owner.execute(statement)
    assert len(await retirement_rows(owner)) == 1


async def test_reverse_sync_refuses_to_start_after_retirement(
    tmp_path: Path, settings: Settings, migrated_database_url: str
) -> None:
    await retire_now(settings, rules_file(tmp_path))
    stopped = settings_for(migrated_database_url, settings.redis_url, UNREACHABLE_MONGO)
    args = argparse.Namespace(entity="all", once=True, interval=0.5, batch=200)
    started = time.monotonic()
    with pytest.raises(Retired, match=r"^MongoDB was retired at .* by ops-ann: the reverse "
                       r"sync does not start \(nothing is carried back"):  # fmt: skip
        await run_reverse_sync(stopped, args)
    assert time.monotonic() - started < 5  # asked PostgreSQL, never waited for MongoDB


def test_the_cli_refuses_with_exit_2_and_one_line(
    tmp_path: Path, migrated_database_url: str, mongo_url: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("MONGO_URL", mongo_url)
    rules = rules_file(tmp_path, keep_legacy=("users",))
    assert main(["retire", "--rules", str(rules), "--yes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("strangler retire: refused, 1 check(s) failed")
    assert "not in new: users (legacy)" in err[0]
    with pytest.raises(SystemExit):
        main(["retire", "--dry-run", "--yes"])  # one or the other


async def test_a_running_reverse_sync_stops_once_retired(
    tmp_path: Path, settings: Settings
) -> None:
    args = argparse.Namespace(entity="all", once=False, interval=0.05, batch=200)
    running = asyncio.create_task(run_reverse_sync(settings, args))
    await asyncio.sleep(0.3)
    assert not running.done()
    await retire_now(settings, rules_file(tmp_path))
    results = await asyncio.wait_for(running, timeout=10)
    assert all(r.failed == 0 for r in results)


async def test_flags_cannot_move_an_entity_out_of_new_after_retirement(
    tmp_path: Path, settings: Settings, owner: asyncpg.Connection
) -> None:
    rules = rules_file(tmp_path)
    change, gates = await run_plan(settings, flag_args(rules, "legacy"))  # before: a step back
    assert (change.from_mode, change.to_mode, gates) == ("new", "legacy", [])
    await retire_now(settings, rules)
    assert await read_retirement(owner) is not None
    before = rules.read_text()
    for mode, percent in (("legacy", None), ("shadow", None), ("canary", 50.0)):
        args = flag_args(rules, mode, percent=percent)
        with pytest.raises(Retired, match=rf"retired at .*: connectors: new -> {mode}.* refused"):
            await run_set(settings, args, say=lambda _line: None)  # --force does not help
        with pytest.raises(Retired):
            await run_plan(settings, args)
    assert rules.read_text() == before
    assert await owner.fetchval("SELECT count(*) FROM routing_flag_changes") == 0


async def test_refuses_while_a_named_proxy_does_not_answer(
    tmp_path: Path, settings: Settings, owner: asyncpg.Connection
) -> None:
    args = retire_args(rules_file(tmp_path), yes=True, proxy_admin=["http://127.0.0.1:9"])
    with pytest.raises(RetireRefused, match=r"proxies-serve-table: http://127.0.0.1:9 unreachable"):
        await run_retire(settings, args, say=lambda _line: None)
    assert await retirement_rows(owner) == []
