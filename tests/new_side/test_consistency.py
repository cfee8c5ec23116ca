"""Read-your-writes in canary: a tenant's read goes to the side that took its write until
the sync has carried the write across (or the pin's bound runs out), on every proxy."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from new_side_support import Sides, Tenant, insert_connector_row

from migrators.consistency import (
    ConsistencyStore,
    WriteMark,
    choose_read_side,
    needs_tracking,
)

T0 = 1_000_000.0


@pytest.mark.parametrize(
    ("planned", "mark", "watermark", "now", "expected"),
    [
        ("new", None, None, T0, "new"),  # no write: as routed
        ("new", WriteMark("new", T0), None, T0 + 1, "new"),  # written where it reads
        ("new", WriteMark("legacy", T0), None, T0 + 1, "legacy"),  # not carried yet
        ("new", WriteMark("legacy", T0), T0 - 5, T0 + 1, "legacy"),  # sync still behind it
        ("new", WriteMark("legacy", T0), T0 + 0.2, T0 + 1, "legacy"),  # within clock skew
        ("new", WriteMark("legacy", T0), T0 + 0.6, T0 + 1, "new"),  # carried across
        ("new", WriteMark("legacy", T0), None, T0 + 30, "new"),  # the bound ran out
        ("legacy", WriteMark("new", T0), None, T0 + 1, "new"),  # the other direction too
        ("legacy", WriteMark("new", T0), T0 + 1, T0 + 2, "legacy"),
    ],
)
def test_the_read_side_decision(
    planned: str, mark: WriteMark | None, watermark: float | None, now: float, expected: str
) -> None:
    assert choose_read_side(planned, mark, watermark, now) == expected  # type: ignore[arg-type]


def test_only_canary_serves_reads_and_writes_from_different_sides() -> None:
    assert [m for m in ("legacy", "shadow", "canary", "new") if needs_tracking(m)] == ["canary"]


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_every_proxy_instance_sees_a_pin_and_it_expires(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    proxy_a = ConsistencyStore(redis, prefix=redis_prefix, pin_seconds=0.3)
    proxy_b = ConsistencyStore(redis, prefix=redis_prefix, pin_seconds=0.3)
    now = time.time()
    await proxy_a.note_write("connectors", "sub_a", "legacy", now)
    assert await proxy_b.read_side("connectors", "sub_a", "new", now) == "legacy"
    assert await proxy_b.read_side("connectors", "sub_other", "new", now) == "new"
    assert await proxy_b.read_side("users", "sub_a", "new", now) == "new"
    ttl = await redis.pttl(f"{redis_prefix}mark:connectors:sub_a")
    assert 0 < ttl <= 300
    await _wait_gone(redis, f"{redis_prefix}mark:connectors:sub_a")
    assert await proxy_b.read_side("connectors", "sub_a", "new", time.time()) == "new"


async def _wait_gone(redis: aioredis.Redis, key: str) -> None:
    import asyncio

    for _ in range(100):
        if not await redis.exists(key):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{key} outlived its TTL")


async def test_a_published_watermark_releases_the_pin(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    store = ConsistencyStore(redis, prefix=redis_prefix)
    wrote_at = time.time()
    await store.note_write("connectors", "sub_a", "legacy", wrote_at)
    await store.publish_watermark("connectors", "forward", wrote_at - 10)
    assert await store.read_side("connectors", "sub_a", "new", wrote_at + 1) == "legacy"
    await store.publish_watermark("connectors", "forward", wrote_at + 1)
    assert await store.read_side("connectors", "sub_a", "new", wrote_at + 1) == "new"


async def test_a_tree_write_is_released_only_once_every_tree_sync_has_passed_it(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    # workspaces is one routing entity synced by four workers: an updateWorkflow reaches
    # PostgreSQL through the workflows worker, whatever the workspaces worker has applied
    store = ConsistencyStore(redis, prefix=redis_prefix)
    assert store.members_of("workspaces") == (
        "workflows", "workspaces", "workflow_versions", "workflow_backups",
    )  # fmt: skip
    assert store.members_of("connectors") == ("connectors",)
    wrote_at = time.time()
    await store.note_write("workspaces", "sub_a", "legacy", wrote_at)
    for member in ("workspaces", "workflow_versions", "workflow_backups"):
        await store.publish_watermark(member, "forward", wrote_at + 1)
    assert await store.read_side("workspaces", "sub_a", "new", wrote_at + 1) == "legacy"
    await store.publish_watermark("workflows", "forward", wrote_at - 5)  # behind the write
    assert await store.read_side("workspaces", "sub_a", "new", wrote_at + 1) == "legacy"
    await store.publish_watermark("workflows", "forward", wrote_at + 1)
    assert await store.read_side("workspaces", "sub_a", "new", wrote_at + 1) == "new"


async def test_without_redis_reads_go_where_canary_writes_go() -> None:
    unreachable = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        store = ConsistencyStore(unreachable)
        assert await store.read_side("connectors", "sub_a", "new", time.time()) == "legacy"
    finally:
        await unreachable.aclose()


async def test_a_canary_tenant_reads_its_own_legacy_write_before_the_sync_carries_it(
    sides: Sides, tenant: Tenant, redis: aioredis.Redis, redis_prefix: str
) -> None:
    """The scenario the policy exists for, with the real legacy and new sides."""
    store = ConsistencyStore(redis, prefix=redis_prefix)
    body = {"connector_name": f"fresh-{uuid.uuid4().hex[:6]}", "connector_type": "s3",
            "connection_detail": {"bucket": "b"}}  # fmt: skip
    written = await sides.call_legacy("POST", "/connectors/addConnector", tenant, body=body)
    assert written.status == 201
    await store.note_write("connectors", tenant.subscription_id, "legacy", time.time())
    connector_id = written.json()["data"]["connector_id"]
    params = {"connector_id": connector_id}

    async def read() -> int:
        side = await store.read_side("connectors", tenant.subscription_id, "new", time.time())
        call = sides.call_new if side == "new" else sides.call_legacy
        return (await call("GET", "/connectors/getConnector", tenant, params)).status

    # The canary would send the read to PostgreSQL, which has not got it yet...
    stale = await sides.call_new("GET", "/connectors/getConnector", tenant, params)
    assert stale.status == 404
    # ...so the read stays on legacy, which took the write.
    assert await read() == 200
    # The sync carries it and says so; reads go back to the new side, which has it.
    document = await sides.db["connectors"].find_one({"connector_id": connector_id})
    assert document is not None
    await insert_connector_row(sides.pool, sides.box, document)
    await store.publish_watermark("connectors", "forward", time.time() + 1)
    assert await store.read_side("connectors", tenant.subscription_id, "new", time.time()) == "new"
    assert await read() == 200
