"""The result store on the real PostgreSQL: summed counts, bounded redacted samples."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from shadow_compare.aggregate import tally
from shadow_compare.compare import compare_responses
from shadow_compare.errors import StoreNotMigrated, StoreUnavailable
from shadow_compare.model import Outcome
from shadow_compare.recorder import BufferedRecorder
from shadow_compare.rules import parse_rules
from shadow_compare.runner import build_runner
from shadow_compare.store import ResultStore
from strangler.cli import main
from strangler.exchange import RecordedRequest, RecordedResponse

RULES = parse_rules({}).for_entity("connectors")
READ = RecordedRequest("GET", "/connectors/getConnector", "connector_id=cn_000000000001")
PASSWORD = "s3cr3t-in-the-clear"


def outcome(at: datetime, name: str, run: str = "live", entity: str = "connectors") -> Outcome:
    legacy = {"data": {"name": "same", "connection_detail": {"password": PASSWORD}}}
    new = {"data": {"name": name, "connection_detail": {"password": PASSWORD + "!"}}}
    result = compare_responses(
        RecordedResponse(200, body=json.dumps(legacy).encode()),
        RecordedResponse(200, body=json.dumps(new).encode()),
        RULES,
        endpoint="GET /connectors/getConnector",
    )
    return Outcome(entity, "GET /connectors/getConnector", READ, at, result, run=run)


async def test_counts_are_summed_per_bucket_and_filtered_by_time_and_entity(
    migrated_database_url: str,
) -> None:
    store = ResultStore(migrated_database_url)
    now = datetime.now(UTC)
    old = now - timedelta(hours=3)
    try:
        await store.write(tally([outcome(now, "a"), outcome(now, "same")]))
        await store.write(tally([outcome(now, "b"), outcome(old, "c")]))
        await store.write(tally([outcome(now, "d", entity="users")]))
        data = await store.read(since=now - timedelta(hours=1), entity="connectors", runs=["live"])
    finally:
        await store.close()
    kinds = {key.kind: n for key, n in data.comparisons}
    assert kinds == {"regression": 3}
    by_path = {(key.verdict, key.cause, key.path): n for key, n in data.differences}
    assert by_path[("regression", "value", "$.data.name")] == 2
    assert by_path[("regression", "value", "$.data.connection_detail.password")] == 3


async def test_samples_are_bounded_per_entity_and_cause_keeping_the_newest(
    migrated_database_url: str,
) -> None:
    store = ResultStore(migrated_database_url, samples_per_cause=4)
    start = datetime.now(UTC) - timedelta(minutes=30)
    try:
        # Concurrent writers: the advisory lock keeps the bound.
        await asyncio.gather(
            *(
                store.write(tally([outcome(start + timedelta(seconds=n), f"name-{n}")]))
                for n in range(12)
            )
        )
        assert await store.count_samples("live", "connectors", "value") == 4
        await store.write(tally([outcome(start + timedelta(minutes=5), "newest")]))
        assert await store.count_samples("live", "connectors", "value") == 4
        data = await store.read(since=start - timedelta(minutes=1), samples_per_cause=10)
    finally:
        await store.close()
    assert len(data.samples) == 4
    assert data.samples[0].legacy_status == 200
    assert any("newest" in json.dumps(s.new_value) for s in data.samples)


async def test_stored_rows_hold_no_secret(migrated_database_url: str) -> None:
    store = ResultStore(migrated_database_url)
    try:
        await store.write(tally([outcome(datetime.now(UTC), "x")]))
    finally:
        await store.close()
    conn = await asyncpg.connect(migrated_database_url)
    try:
        rows = await conn.fetch("SELECT row_to_json(s)::text AS row FROM shadow_samples s")
    finally:
        await conn.close()
    assert rows
    assert all(PASSWORD not in row["row"] for row in rows)


async def test_unreachable_database_is_counted_not_raised_by_the_recorder() -> None:
    registry = CollectorRegistry()
    recorder = BufferedRecorder("postgresql://nobody@127.0.0.1:1/none", registry)
    recorder.record(outcome(datetime.now(UTC), "x"))
    await recorder.flush()
    assert recorder.lost_count == 1
    assert registry.get_sample_value("strangler_shadow_results_lost_total") == 1.0
    try:
        await ResultStore("postgresql://nobody@127.0.0.1:1/none").open()
    except StoreUnavailable as exc:
        assert "DATABASE_URL" in str(exc)
    else:
        raise AssertionError("an unreachable store must raise StoreUnavailable")


async def test_runner_built_for_the_proxy_stores_its_outcomes(migrated_database_url: str) -> None:
    registry = CollectorRegistry()
    runner = build_runner(database_url=migrated_database_url, rules_path=None, registry=registry)
    await runner.start()

    async def new_side() -> RecordedResponse:
        return RecordedResponse(200, body=b'{"data": {"name": "b"}}', side="new")

    for _ in range(3):
        runner.submit(
            "connectors",
            "GET /connectors/getConnector",
            READ,
            RecordedResponse(200, body=b'{"data": {"name": "b"}}', side="legacy"),
            new_side,
        )
    await runner.drain()
    await runner.stop()
    conn = await asyncpg.connect(migrated_database_url)
    try:
        total = await conn.fetchval(
            "SELECT sum(n) FROM shadow_comparisons WHERE entity = 'connectors' AND kind = 'equal'"
        )
    finally:
        await conn.close()
    assert total == 3


async def test_a_database_without_the_shadow_tables_says_to_migrate(
    empty_database_url: str,
) -> None:
    store = ResultStore(empty_database_url)
    try:
        await store.write(tally([outcome(datetime.now(UTC), "x")]))
    except StoreNotMigrated as exc:
        assert "strangler schema upgrade" in str(exc)
    else:
        raise AssertionError("writing to an unmigrated database must raise StoreNotMigrated")
    finally:
        await store.close()
    recorder = BufferedRecorder(empty_database_url)
    recorder.record(outcome(datetime.now(UTC), "x"))
    await recorder.close()  # flushes: the loss is counted, nothing is raised
    assert recorder.lost_count == 1


async def test_prune_deletes_only_what_is_older_than_asked(
    migrated_database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ResultStore(migrated_database_url)
    now = datetime.now(UTC)
    try:
        await store.write(tally([outcome(now - timedelta(days=40), "old"), outcome(now, "new")]))
    finally:
        await store.close()
    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    assert await asyncio.to_thread(main, ["shadow", "prune", "--older-than", "30d"]) == 0
    assert "shadow_comparisons 1" in capsys.readouterr().out
    store = ResultStore(migrated_database_url)
    try:
        data = await store.read(since=now - timedelta(days=365))
    finally:
        await store.close()
    assert sum(n for _, n in data.comparisons) == 1
    assert [json.dumps(s.new_value) for s in data.samples if s.path == "$.data.name"] == ['"new"']
