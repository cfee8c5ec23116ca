"""The fenced switch of the source of truth, for real: two proxies on loopback in front of
the legacy emulator, the new-side handlers on PostgreSQL, the forward sync and the reverse
sync running, clients writing through both proxies all along. Connectors go legacy -> new
-> legacy; no acknowledged write is lost, and the last acknowledged update wins."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from new_side_support import (
    CONNECTORS,
    KEYS,
    SECRET,
    ShortBlockReader,
    Tenant,
    build_registry,
    served,
)
from test_flags import set_args, settings_for

from control.cli import proxy_fences, run_set, show_lines
from control.flags import SwitchFailed, SwitchSteps, plan_change, read_flags, switch_with_fence
from legacy_emulator.app import create_app
from migrators.crypto import SecretBox
from migrators.feeds.polling import PollingFeed
from migrators.feeds.sweep import Sweeper
from migrators.origin import strip_origin
from migrators.reverse import apply_pending
from migrators.sync import SyncOptions, SyncWorker
from proxy.server import ProxyConfig, ProxyInstance
from proxy.shadow import CountingDropSink
from proxy.upstream import Timeouts
from schema.keys import row_key
from strangler.mongo import open_database

REPO_RULES = Path(__file__).resolve().parents[2] / "routing_rules.yaml"
WRITERS = 4


class Clients:
    """Writers through the proxies, remembering every write a proxy acknowledged."""

    def __init__(self, proxies: list[str], tenant: Tenant) -> None:
        self.proxies = proxies
        self.headers = {"authorization": tenant.authorization}
        self.added: dict[str, str] = {}  # name -> connector_id, acknowledged adds
        self.last_description: str | None = None
        self.fenced = 0
        self.stop = asyncio.Event()

    async def _post(self, client: httpx.AsyncClient, turn: int, path: str, body: Any) -> Any:
        """Post until a proxy takes it; a fenced write (503) is retried, as clients do."""
        while True:
            url = self.proxies[turn % len(self.proxies)]
            response = await client.post(f"{url}{path}", json=body, headers=self.headers)
            if response.status_code != 503:
                assert response.status_code in (200, 201), response.text
                return response.json()["data"]
            self.fenced += 1
            turn += 1
            await asyncio.sleep(0.02)

    async def adder(self, index: int) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                name = f"w{index}-{n}"
                body = {"connector_name": name, "connector_type": "postgres",
                        "connection_detail": {"host": "h", "password": f"pw-{name}"}}  # fmt: skip
                data = await self._post(client, index + n, "/connectors/addConnector", body)
                self.added[name] = data["connector_id"]
                n += 1

    async def updater(self, connector_id: str) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            k = 0
            while not self.stop.is_set():
                body = {"connector_id": connector_id, "description": f"v{k}"}
                data = await self._post(client, k, "/connectors/updateConnector", body)
                assert data["description"] == f"v{k}"
                self.last_description = f"v{k}"
                k += 1


async def test_switching_the_truth_both_ways_under_traffic_loses_no_write(
    tmp_path: Path, migrated_database_url: str, redis_url: str
) -> None:
    rules = tmp_path / "routing_rules.yaml"
    shutil.copy(REPO_RULES, rules)
    mongo_url = f"memory://switch-{uuid.uuid4().hex}"
    db = open_database(mongo_url)
    settings = settings_for(migrated_database_url, redis_url, mongo_url)
    context = SecretBox(KEYS).context()
    tenant = Tenant(f"sub_{uuid.uuid4().hex[:12]}", f"usr_{uuid.uuid4().hex[:12]}")
    pool = await asyncpg.create_pool(migrated_database_url, min_size=2, max_size=8)
    redis = aioredis.from_url(redis_url)
    prefix = f"test:{uuid.uuid4().hex}:"
    clock = [0.0]

    def forward_sync() -> asyncio.Task[None]:
        def feed(conn: asyncpg.Connection) -> PollingFeed:
            sweeper = Sweeper(CONNECTORS, db["connectors"], context, buckets=4,
                              buckets_per_round=4, id_column="connector_id")  # fmt: skip
            reader = ShortBlockReader(redis, "connectors", prefix=prefix)
            return PollingFeed(CONNECTORS, db["connectors"], reader, sweeper, conn,
                               sweep_interval=0.1, block_ms=50)  # fmt: skip

        options = SyncOptions(heartbeat_seconds=0.2, standby_poll_seconds=0.05,
                              reconnect_wait_seconds=0.1)  # fmt: skip
        worker = SyncWorker(CONNECTORS, feed, migrated_database_url, context, options=options)
        return asyncio.create_task(worker.run())

    async def reverse_sync() -> None:
        while True:
            await apply_pending(pool, db, CONNECTORS, context)
            await asyncio.sleep(0.05)

    async def stop(task: asyncio.Task[Any]) -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # The tenant as backfill left it: its Accounts document and its subscriptions row.
    await db["Accounts"].insert_one({"subscription_id": tenant.subscription_id,
                                     "company_name": "Acme", "plan_type": "team",
                                     "status": "active"})  # fmt: skip
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO subscriptions (id, subscription_id, company_name, plan_type, status) "
            "VALUES ($1, $2, 'Acme', 'team', 'active')",
            row_key("subscription", tenant.subscription_id),
            tenant.subscription_id,
        )
    app = create_app(db, jwt_secret=SECRET, run_step_seconds=0.01, password_rounds=4)
    proxies: list[ProxyInstance] = []
    async with served(app) as legacy_url:
        import time

        clock[0] = time.time()
        registry = build_registry(pool, [time.time()])
        for _ in range(2):
            config = ProxyConfig(
                legacy_url=legacy_url, rules_path=str(rules), host="127.0.0.1", port=0,
                admin_port=0, timeouts=Timeouts(connect=2.0, read=10.0), watch_interval=0.1,
                instance=f"proxy-{len(proxies)}",
            )  # fmt: skip
            instance = ProxyInstance(config, SECRET, registry, CountingDropSink())
            await instance.start()
            proxies.append(instance)
        clients = Clients([p.url for p in proxies], tenant)
        forward = forward_sync()
        reverse = asyncio.create_task(reverse_sync())
        try:
            async with httpx.AsyncClient() as client:
                first = await client.post(
                    f"{proxies[0].url}/connectors/addConnector",
                    json={
                        "connector_name": "shared",
                        "connector_type": "s3",
                        "connection_detail": {"bucket": "b"},
                    },
                    headers=clients.headers,
                )
            shared_id = first.json()["data"]["connector_id"]
            traffic = [asyncio.create_task(clients.adder(i)) for i in range(WRITERS)]
            traffic.append(asyncio.create_task(clients.updater(shared_id)))
            admins = [p.admin_url for p in proxies]
            switch: dict[str, Any] = dict(
                force=True, proxy_admin=admins, settle=0.2, drain_timeout=20.0
            )
            lines: list[str] = []

            await asyncio.sleep(0.5)
            before_new = len(clients.added)
            await run_set(settings, set_args(rules, "new", **switch), say=lines.append)
            await stop(forward)  # in mode new PostgreSQL is the truth: the forward sync rests
            await asyncio.sleep(0.5)
            during_new = len(clients.added)
            await run_set(settings, set_args(rules, "legacy", **switch), say=lines.append)
            forward = forward_sync()
            await asyncio.sleep(0.4)
            clients.stop.set()
            await asyncio.gather(*traffic)
            # The forward sync carries the last legacy writes over too.
            for _ in range(200):
                if await pg_state(pool, tenant) == await mongo_state(db, tenant):
                    break
                await asyncio.sleep(0.05)
        finally:
            clients.stop.set()
            await stop(reverse)
            await stop(forward)
            for instance in proxies[:-1]:  # the last one serves the read below
                await instance.stop()

        # Writes were taken on both sides, and the fence was met (and retried) on the way.
        assert before_new > 0 and during_new > before_new and len(clients.added) > during_new
        assert clients.fenced > 0
        assert any("drained" in line for line in lines)
        # Every acknowledged write is in the legacy store, the truth again, exactly once.
        stored = {d["connector_name"]: d async for d in db["connectors"].find({})}
        for name, connector_id in clients.added.items():
            assert name in stored, f"acknowledged add {name} lost"
            assert stored[name]["connector_id"] == connector_id
            assert stored[name]["connection_detail"]["password"] == f"pw-{name}"
        assert len(stored) == len(clients.added) + 1
        assert stored["shared"]["description"] == clients.last_description
        # And read back through a proxy (legacy now serves it).
        async with httpx.AsyncClient() as client:
            listing = await client.get(
                f"{proxies[1].url}/connectors/getConnectors",
                params={"per_page": 1},
                headers=clients.headers,
            )
        await proxies[-1].stop()
        assert listing.json()["total"] == len(clients.added) + 1

    async with pool.acquire() as conn:
        logged = await conn.fetch(
            "SELECT from_mode, to_mode, reason FROM routing_flag_changes ORDER BY id"
        )
        assert [(r["from_mode"], r["to_mode"]) for r in logged] == [
            ("legacy", "new"), ("new", "legacy"),
        ]  # fmt: skip
        assert all("fenced" in r["reason"] and "fence lifted" in r["reason"] for r in logged)
    # Both stores end equal, document for document (secrets opened), as verify compares them.
    assert await pg_state(pool, tenant) == await mongo_state(db, tenant)
    await pool.close()
    await redis.aclose()


async def mongo_state(db: Any, tenant: Tenant) -> dict[str, Any]:
    assert CONNECTORS.normalize is not None
    found = db["connectors"].find({"subscription_id": tenant.subscription_id})
    return {d["connector_id"]: CONNECTORS.normalize(strip_origin(d)) async for d in found}


async def pg_state(pool: asyncpg.Pool, tenant: Tenant) -> dict[str, Any]:
    assert CONNECTORS.normalize is not None and CONNECTORS.to_document is not None
    context = SecretBox(KEYS).context()
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM connectors WHERE subscription_id = $1", tenant.subscription_id
        )
    return {
        row["connector_id"]: CONNECTORS.normalize(
            CONNECTORS.to_document({"connectors": [dict(row)]}, context)
        )
        for row in rows
    }


async def test_a_switch_that_cannot_drain_changes_nothing_and_lifts_its_fence(
    tmp_path: Path, migrated_database_url: str
) -> None:
    rules = tmp_path / "routing_rules.yaml"
    shutil.copy(REPO_RULES, rules)
    before = rules.read_bytes()
    pool = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=2)
    db = open_database(f"memory://stuck-{uuid.uuid4().hex}")
    app = create_app(db, jwt_secret=SECRET, run_step_seconds=0.01, password_rounds=4)
    async with served(app) as legacy_url:
        config = ProxyConfig(legacy_url=legacy_url, rules_path=str(rules), host="127.0.0.1",
                             port=0, admin_port=0, watch_interval=0.1)  # fmt: skip
        proxy = ProxyInstance(config, SECRET, build_registry(pool, [0.0]), CountingDropSink())
        await proxy.start()
        try:
            change = plan_change(read_flags(str(rules)), "connectors", "new", None)
            fenced_during: list[dict[str, float]] = []
            shown: list[str] = []

            async def never_drained(fenced_at: float) -> tuple[bool, str]:
                async with httpx.AsyncClient() as client:
                    status = await client.get(f"{proxy.admin_url}/admin/status")
                fenced_during.append(status.json()["admin_fences"])
                shown.extend(show_lines(str(rules), await proxy_fences([proxy.admin_url])))
                return False, "3 touched ids waiting"

            steps = SwitchSteps(
                admin_urls=[proxy.admin_url],
                drained=never_drained,
                settle_seconds=0.05,
                drain_timeout=0.3,
                poll_seconds=0.05,
            )

            def flip() -> str:
                raise AssertionError("must not flip before the sync drained")

            with pytest.raises(SwitchFailed, match=r"did not drain.*3 touched ids waiting"):
                await switch_with_fence(change, flip, steps)
            assert fenced_during and all("connectors" in f for f in fenced_during)
            connectors_lines = [line for line in shown if line.startswith("connectors")]
            assert connectors_lines
            assert all(f"fenced by {proxy.admin_url}" in line for line in connectors_lines)
            async with httpx.AsyncClient() as client:
                status = (await client.get(f"{proxy.admin_url}/admin/status")).json()
            assert status["admin_fences"] == {}
            assert rules.read_bytes() == before
        finally:
            await proxy.stop()
    await pool.close()
