"""A flag entity made of several collections is backfilled, synced, verified and gated whole."""

from __future__ import annotations

import asyncpg
import pytest

from control.cli import LiveProbes, drain_check
from control.flags import Change
from migrators.registry import UnknownEntity, default_registry
from strangler.config import load_settings

TREE = ["workflows", "workspaces", "workflow_versions", "workflow_backups"]


def test_the_workspaces_flag_entity_selects_the_whole_tree() -> None:
    registry = default_registry()
    assert [spec.name for spec in registry.select("workspaces")] == TREE
    assert [spec.name for spec in registry.select("workflows")] == ["workflows"]
    assert [spec.name for spec in registry.select("connectors")] == ["connectors"]
    with pytest.raises(UnknownEntity):
        registry.group("nothing")


async def test_backfill_gate_waits_for_every_member_of_the_group(
    migrated_database_url: str,
) -> None:
    settings = load_settings({"DATABASE_URL": migrated_database_url})
    conn = await asyncpg.connect(migrated_database_url)
    try:
        done = ["subscriptions", "users", "connectors", *TREE[:-1]]
        await conn.executemany(
            "INSERT INTO migration_backfill_checkpoints (entity, completed_at) VALUES ($1, now())",
            [(name,) for name in done],
        )
        probes = LiveProbes(conn, settings, "routing_rules.yaml")
        assert await probes.backfill_pending("workspaces") == ["workflow_backups"]
        assert await probes.backfill_pending("connectors") == []
        # a member named alone is gated on itself and its dependencies
        assert await probes.backfill_pending("workflows") == []
        assert await probes.backfill_pending("workflow_backups") == ["workflow_backups"]
    finally:
        await conn.close()


async def test_leaving_new_waits_for_the_outbox_of_every_member(
    migrated_database_url: str,
) -> None:
    conn = await asyncpg.connect(migrated_database_url)
    try:
        await conn.execute(
            "INSERT INTO migration_outbox (subscription_id, entity, legacy_id, operation, payload)"
            " VALUES ('sub_000000000001', 'workflows', 'wf_000000000001', 'update', '{}')"
        )
        back = Change("workspaces", "new", "legacy", 0.0, 0.0)

        async def never_called(entity: str, age: float) -> tuple[bool, str]:
            raise AssertionError("leaving new is not verified")

        drained, detail = await drain_check(back, conn, None, never_called)(0.0)
        assert not drained and detail.startswith("1 outbox row")
        await conn.execute("UPDATE migration_outbox SET applied_at = now()")
        drained, _ = await drain_check(back, conn, None, never_called)(0.0)
        assert drained
    finally:
        await conn.close()


async def test_job_runs_leave_new_only_once_the_runs_started_there_are_final(
    migrated_database_url: str,
) -> None:
    """Were runs still queued or running, the run worker would go on writing them with
    legacy the truth again (and legacy's simulator never takes them over)."""
    conn = await asyncpg.connect(migrated_database_url)
    try:
        await conn.execute(
            "INSERT INTO subscriptions (id, subscription_id) "
            "VALUES (gen_random_uuid(), 'sub_000000000001')"
        )
        await conn.execute(
            "INSERT INTO job_runs (id, job_run_id, subscription_id, status, created_at) "
            "VALUES (gen_random_uuid(), 'run_1', 'sub_000000000001', 'running', now())"
        )
        await conn.execute(
            "INSERT INTO run_dispatch (job_run_id, subscription_id, workflow_id) "
            "VALUES ('run_1', 'sub_000000000001', 'wf_1')"
        )
        back = Change("job_runs", "new", "legacy", 0.0, 0.0)

        async def never_called(entity: str, age: float) -> tuple[bool, str]:
            raise AssertionError("leaving new is not verified")

        drained, detail = await drain_check(back, conn, None, never_called)(0.0)
        assert not drained and detail.startswith("1 run(s) started on the new side")
        await conn.execute("UPDATE job_runs SET status = 'completed'")
        drained, detail = await drain_check(back, conn, None, never_called)(0.0)
        assert drained, detail
    finally:
        await conn.close()
