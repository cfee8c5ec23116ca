"""/ws/runNow and /ws/activity served by the proxy itself for entities in new, over Redis
pub/sub: each subscriber hears its workflow's or tenant's updates and none of another's,
on either engine; the sessions are tracked in websocket_connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from proxy_support import SECRET, rules_data, token, write_rules

from migrators.registry import default_registry
from migrators.spec import MappingContext
from migrators.writer import SourceItem, write_batch
from proxy.handlers import activity as activity_handlers
from proxy.handlers import connectors as connector_handlers
from proxy.handlers import job_runs as run_handlers
from proxy.realtime import POLICY_VIOLATION, LiveFanout
from proxy.registry import HandlerDeps, HandlerRegistry
from proxy.runs_worker import RunWorker
from proxy.server import ProxyConfig, ProxyInstance
from proxy.shadow import CountingDropSink
from strangler.config import ConnectorKeys, Settings

DIAGRAM = json.dumps({"nodes": [{"id": "a"}], "edges": []})
KEYS = ConnectorKeys.parse("k1:" + "a" * 43 + "=")


async def _seed_workflows(pool: asyncpg.Pool, tenant: str, ids: list[str]) -> None:
    version = int(time.time() * 1000)
    registry = default_registry()
    async with pool.acquire() as conn:
        await write_batch(conn, registry.get("subscriptions"),
                          [SourceItem(tenant, {"subscription_id": tenant}, version)],
                          ctx=MappingContext())  # fmt: skip
        items = [
            SourceItem(wf, {"workflow_id": wf, "subscription_id": tenant, "workspace_id": "ws_1",
                            "folder_id": "fd_1", "job_id": "job_1", "workflow_name": wf,
                            "workFlowDiagram": DIAGRAM, "version": 1}, version)
            for wf in ids
        ]  # fmt: skip
        await write_batch(conn, registry.get("workflows"), items, ctx=MappingContext())


@contextlib.asynccontextmanager
async def _proxy(
    tmp_path: Path,
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    prefix: str,
    engine: str,
    modes: dict[str, Any] | None = None,
) -> AsyncIterator[ProxyInstance]:
    modes = modes or {"job_runs": {"mode": "new"}, "activity": {"mode": "new"}}
    rules = write_rules(tmp_path / "rules.yaml", rules_data(**modes))
    config = ProxyConfig(
        legacy_url="http://127.0.0.1:9", rules_path=str(rules), host="127.0.0.1", port=0,
        admin_port=0, engine=engine,
    )  # fmt: skip
    registry = HandlerRegistry()
    deps = HandlerDeps(settings=Settings(jwt_secret=SECRET, connector_keys=KEYS), pg_pool=pool)
    for module in (run_handlers, activity_handlers, connector_handlers):
        module.register(registry, deps)
    registry.freeze()
    live = LiveFanout(redis, SECRET, prefix=prefix, pool=pool, instance_id=f"test-{engine}")
    instance = ProxyInstance(config, SECRET, registry, CountingDropSink(), live=live)
    await instance.start()
    try:
        async with asyncio.timeout(10):
            await live.wait_subscribed()
        yield instance
    finally:
        await instance.stop()


async def _next(ws: Any) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), 10.0))


async def _nothing(ws: Any, wait: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ws.recv(), wait)


@pytest.mark.parametrize("engine", ["fast", "asgi"])
async def test_each_subscriber_hears_its_own_updates_and_none_of_another(
    tmp_path, migrated_database_url, redis_client, redis_prefix, engine
) -> None:
    tenant, other = f"sub_{secrets.token_hex(6)}", f"sub_{secrets.token_hex(6)}"
    flow_a, flow_b = f"wf_{secrets.token_hex(6)}", f"wf_{secrets.token_hex(6)}"
    pool = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=6)
    worker = RunWorker(pool, redis_client, consumer="w", prefix=redis_prefix, step_seconds=0.0)
    await worker.ensure_group()
    stop = asyncio.Event()
    try:
        await _seed_workflows(pool, tenant, [flow_a, flow_b])
        async with _proxy(tmp_path, pool, redis_client, redis_prefix, engine) as proxy:
            ws_url = proxy.url.replace("http://", "ws://")
            mine = token(tenant, "usr_00000000000a")
            async with (
                websockets.connect(f"{ws_url}/ws/runNow/{flow_a}?token={mine}") as runs_a,
                websockets.connect(f"{ws_url}/ws/runNow/{flow_b}?token={mine}") as runs_b,
                websockets.connect(f"{ws_url}/ws/activity?token={mine}") as activity,
                websockets.connect(f"{ws_url}/ws/activity?token={token(other)}") as theirs,
            ):
                relay = asyncio.create_task(worker.relay_forever(stop))
                await asyncio.sleep(0.3)  # the relay's LISTEN in place
                async with httpx.AsyncClient(base_url=proxy.url) as client:
                    answer = await client.post(
                        "/workflow/runNow", json={"workflow_id": flow_a},
                        headers={"authorization": f"Bearer {mine}"},
                    )  # fmt: skip
                assert answer.status_code == 200, answer.text
                run_id = answer.json()["data"]["job_run_id"]
                entry = await _next(activity)  # the runNow's entry, relayed from PostgreSQL
                assert (entry["action"], entry["object_id"]) == ("executed", flow_a)
                assert entry["current_data"] == {"job_run_id": run_id, "status": "queued"}
                await worker.dispatch_once()
                await worker.consume_once(count=5, block_ms=100)
                heard = [await _next(runs_a) for _ in range(3)]  # every change, as legacy's
                assert [(m["job_run_id"], m["status"]) for m in heard] == [
                    (run_id, "queued"), (run_id, "running"), (run_id, "completed")]  # fmt: skip
                await _nothing(runs_b)  # another workflow's subscriber
                await _nothing(theirs)  # another tenant's
                async with pool.acquire() as conn:
                    open_rows = await conn.fetch(
                        "SELECT channel, workflow_id, instance_id FROM websocket_connections "
                        "WHERE subscription_id = ANY($1::text[]) AND closed_at IS NULL",
                        [tenant, other],
                    )
                assert sorted((r["channel"], r["workflow_id"]) for r in open_rows) == sorted(
                    [("run_now", flow_a), ("run_now", flow_b), ("activity", None),
                     ("activity", None)])  # fmt: skip
                assert {r["instance_id"] for r in open_rows} == {f"test-{engine}"}
            stop.set()
            await relay
            await asyncio.sleep(0.3)  # the sessions' close is recorded as they end
            async with pool.acquire() as conn:
                still_open = await conn.fetchval(
                    "SELECT count(*) FROM websocket_connections "
                    "WHERE subscription_id = ANY($1::text[]) AND closed_at IS NULL",
                    [tenant, other],
                )
            assert still_open == 0
            # a bad token: accepted, then closed with 1008, as legacy does
            async with websockets.connect(f"{ws_url}/ws/activity?token=nope") as bad:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(bad.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == POLICY_VIOLATION
    finally:
        stop.set()
        await redis_client.delete(worker.stream, worker.dead_stream)
        await pool.close()


async def test_activity_in_legacy_is_still_heard_from_the_proxy_once_an_entity_is_in_new(
    tmp_path, migrated_database_url, redis_client, redis_prefix
) -> None:
    """Connectors in new, activity in legacy: legacy's hub would never hear a connector
    added on the new side, so the proxy serves /ws/activity itself; an entity all in
    legacy leaves it to legacy (here unreachable: the connection fails)."""
    tenant = f"sub_{secrets.token_hex(6)}"
    pool = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=6)
    worker = RunWorker(pool, redis_client, consumer="w", prefix=redis_prefix, step_seconds=0.0)
    stop = asyncio.Event()
    modes = {"connectors": {"mode": "new"}, "activity": {"mode": "legacy"}}
    try:
        async with _proxy(tmp_path, pool, redis_client, redis_prefix, "fast", modes) as proxy:
            ws_url = proxy.url.replace("http://", "ws://")
            mine = token(tenant, "usr_00000000000a")
            async with websockets.connect(f"{ws_url}/ws/activity?token={mine}") as activity:
                relay = asyncio.create_task(worker.relay_forever(stop))
                await asyncio.sleep(0.3)
                body = {"connector_name": "pg", "connector_type": "postgres",
                        "connection_detail": {"host": "h", "password": "p"}}  # fmt: skip
                headers = {"authorization": f"Bearer {mine}"}
                async with httpx.AsyncClient(base_url=proxy.url) as client:
                    answer = await client.post("/connectors/addConnector", json=body,
                                               headers=headers)  # fmt: skip
                assert answer.status_code == 201, answer.text
                entry = await _next(activity)
                assert (entry["action"], entry["object_type"]) == ("created", "connector")
                assert entry["object_id"] == answer.json()["data"]["connector_id"]
                assert "p" != entry.get("current_data", {}).get("connection_detail", {}).get(
                    "password"
                )  # the password never leaves in clear
            # run updates stay legacy's while job_runs is in legacy: tunnelled there
            with pytest.raises((OSError, websockets.InvalidStatus, websockets.InvalidHandshake)):
                async with websockets.connect(f"{ws_url}/ws/runNow/wf_1?token={mine}"):
                    pass
            stop.set()
            await relay
    finally:
        stop.set()
        await pool.close()
