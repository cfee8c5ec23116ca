"""The proxy tells the forward sync which documents a legacy write touched, and the sync tells
the proxies how far it has applied: both with real Redis, the legacy emulator behind a real
proxy, and the sync worker on real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
from proxy_support import SECRET, free_port, rules_data, token, write_rules

from legacy_emulator.app import create_app
from migrators.consistency import ConsistencyStore
from migrators.crypto import SecretBox
from migrators.feeds.polling import PollingFeed
from migrators.registry import default_registry
from migrators.sync import SyncOptions, SyncWorker
from migrators.touched import record_touched, stream_key
from proxy.registry import registry_from_mapping
from proxy.server import ProxyConfig, ProxyInstance
from proxy.shadow import CountingDropSink
from proxy.touched import TouchedRecorder, touched_ids
from schema.keys import row_key
from strangler.config import ConnectorKeys
from strangler.mongo import open_database

TENANT = "sub_0000000000a1"


class _Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


@contextlib.asynccontextmanager
async def _emulator(db: Any) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    app = create_app(db, jwt_secret=SECRET, run_step_seconds=0.01, password_rounds=4)
    server = _Quiet(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _unused(request: Any) -> Any:
    raise AssertionError("no read is sampled in these tests")


@contextlib.asynccontextmanager
async def _proxy(
    tmp_path: Path, legacy_url: str, recorder: TouchedRecorder, modes: dict[str, Any]
) -> AsyncIterator[ProxyInstance]:
    rules = write_rules(tmp_path / "rules.yaml", rules_data(**modes))
    config = ProxyConfig(
        legacy_url=legacy_url, rules_path=str(rules), host="127.0.0.1", port=0, admin_port=0
    )
    # Shadow mode wants handlers for the reads; none is called (nothing is sampled).
    reads = ("GET /connectors/getConnectors", "GET /connectors/getConnector")
    handlers = {("connectors", endpoint): _unused for endpoint in reads}
    instance = ProxyInstance(
        config, SECRET, registry_from_mapping(handlers), CountingDropSink(), touched=recorder
    )
    await instance.start()
    try:
        yield instance
    finally:
        await instance.stop()


async def _stream(redis: aioredis.Redis, prefix: str, entity: str) -> list[tuple[str, str]]:
    entries = await redis.xrange(stream_key(entity, prefix))
    return [(f[b"legacy_id"].decode(), f[b"subscription_id"].decode()) for _, f in entries]


def test_ids_come_from_the_request_and_from_the_answer() -> None:
    body = b'{"workspace_id": "ws_1", "folder_id": "fd_1", "job_id": "jb_1"}'
    answer = b'{"status": true, "data": {"workflow_id": "wf_9", "workspace_id": "ws_1"}}'
    assert touched_ids("workspaces", body, answer) == {
        "workspaces": ["ws_1"],
        "workflows": ["wf_9"],
    }
    assert touched_ids("connectors", b"not json", b'{"data": {"connector_id": "cn_2"}}') == {
        "connectors": ["cn_2"]
    }
    assert touched_ids("job_runs", b"{}", b'{"data": {"workflow_id": "wf_1"}}') == {}


async def test_legacy_writes_through_the_proxy_name_what_they_touched(
    tmp_path: Path, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    from prometheus_client import CollectorRegistry

    db = open_database(f"memory://touched-{uuid.uuid4().hex}")
    recorder = TouchedRecorder(redis_client, CollectorRegistry(), prefix=redis_prefix)
    headers = {"Authorization": f"Bearer {token(TENANT)}"}
    async with (
        _emulator(db) as legacy_url,
        _proxy(
            tmp_path, legacy_url, recorder, {"connectors": {"mode": "shadow", "sample_rate": 0.0}}
        ) as proxy,
        httpx.AsyncClient(base_url=proxy.url, headers=headers) as http,
    ):
        added = await http.post(
            "/connectors/addConnector",
            json={"connector_name": "c1", "connector_type": "s3", "connection_detail": {}},
        )
        connector_id = added.json()["data"]["connector_id"]
        await http.post(
            "/connectors/updateConnector", json={"connector_id": connector_id, "description": "d"}
        )
        missing = await http.post("/connectors/updateConnector", json={"connector_id": "cn_nope"})
        assert missing.status_code == 404
        ws = (await http.post("/workspace/addWorkspace", json={"workspace_name": "w"})).json()
        ws_id = ws["data"]["workspace_id"]
        folder = await http.post("/workspace/addFolder", json={"workspace_id": ws_id,
                                                                "folder_name": "f"})  # fmt: skip
        fd_id = folder.json()["data"]["folder_id"]
        job = await http.post("/workspace/addJob", json={"workspace_id": ws_id, "folder_id": fd_id,
                                                          "job_name": "j"})  # fmt: skip
        jb_id = job.json()["data"]["job_id"]
        place = {"workspace_id": ws_id, "folder_id": fd_id, "job_id": jb_id}
        flow = await http.post("/workflow/addWorkflow", json={**place, "workflow_name": "wf"})
        assert flow.status_code == 201
        wf_id = flow.json()["data"]["workflow_id"]

    # Each successful write once, with its tenant; the 404 named nothing.
    assert await _stream(redis_client, redis_prefix, "connectors") == [
        (connector_id, TENANT),
        (connector_id, TENANT),
    ]
    assert await _stream(redis_client, redis_prefix, "workspaces") == [(ws_id, TENANT)] * 4
    assert await _stream(redis_client, redis_prefix, "workflows") == [(wf_id, TENANT)]
    await redis_client.delete(
        *(stream_key(e, redis_prefix) for e in ("connectors", "workspaces", "workflows"))
    )


async def test_a_redis_outage_never_fails_the_write_and_is_counted(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    dead = aioredis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    recorder = TouchedRecorder(dead, registry)
    db = open_database(f"memory://touched-down-{uuid.uuid4().hex}")
    try:
        async with (
            _emulator(db) as legacy_url,
            _proxy(tmp_path, legacy_url, recorder, {}) as proxy,
            httpx.AsyncClient(base_url=proxy.url) as http,
        ):
            added = await http.post(
                "/connectors/addConnector",
                headers={"Authorization": f"Bearer {token(TENANT)}"},
                json={"connector_name": "c1", "connector_type": "s3", "connection_detail": {}},
            )
    finally:
        await dead.aclose()
    assert added.status_code == 201
    assert await db["connectors"].count_documents({}) == 1
    failed = registry.get_sample_value(
        "strangler_proxy_touched_ids_total", {"entity": "connectors", "outcome": "failed"}
    )
    assert failed == 1.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_the_sync_watermark_releases_a_tenants_pin_once_its_write_is_applied(
    migrated_database_url: str, redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    spec = default_registry().get("connectors")
    keys = ConnectorKeys.parse("k1:" + "a" * 43 + "=")
    context = SecretBox(keys).context()
    db = open_database(f"memory://watermark-{uuid.uuid4().hex}")
    store = ConsistencyStore(redis_client, prefix=redis_prefix)
    conn = await asyncpg.connect(migrated_database_url)
    try:
        await conn.execute(
            "INSERT INTO subscriptions (id, subscription_id) VALUES ($1, $2)",
            row_key("subscription", TENANT),
            TENANT,
        )
    finally:
        await conn.close()
    # A canary write legacy took: the tenant's reads are pinned to legacy.
    await db["connectors"].insert_one({"connector_id": "cn_00000000000a", "subscription_id": TENANT,
                                       "connector_name": "n", "connector_type": "s3",
                                       "connection_detail": {}})  # fmt: skip
    written_at = time.time() - 1.0  # a moment ago: beyond the store's clock-skew margin
    await store.note_write("connectors", TENANT, "legacy", written_at)
    await record_touched(redis_client, "connectors", ["cn_00000000000a"], subscription_id=TENANT,
                         at=written_at, prefix=redis_prefix)  # fmt: skip
    assert await store.read_side("connectors", TENANT, "new", time.time()) == "legacy"

    from migrators.touched import TouchedReader

    def feed(leader: asyncpg.Connection) -> PollingFeed:
        reader = TouchedReader(redis_client, "connectors", prefix=redis_prefix)
        return PollingFeed(spec, db["connectors"], reader, None, leader, block_ms=10)

    worker = SyncWorker(
        spec,
        feed,
        migrated_database_url,
        context,
        options=SyncOptions(reconnect_wait_seconds=0.1),
        watermarks=store,
    )
    await asyncio.wait_for(worker.run(once=True), 30)
    assert worker.events_applied == 1
    # Applied and published: the read goes to the new side, which has the row.
    assert await store.read_side("connectors", TENANT, "new", time.time()) == "new"
    conn = await asyncpg.connect(migrated_database_url)
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM connectors WHERE connector_id = 'cn_00000000000a'"
        )
    finally:
        await conn.close()
    assert found == 1
    leftovers = [k async for k in redis_client.scan_iter(match=redis_prefix + "*")]
    if leftovers:
        await redis_client.delete(*leftovers)
