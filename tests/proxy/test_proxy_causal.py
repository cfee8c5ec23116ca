"""Causal consistency across entities (proxy/causal.py): with workspaces in new and job runs
in legacy, runNow of a workflow the new side just added is never legacy's "Workflow not
found": it waits until the reverse sync reports the workflow carried, or past the bound
gets 503 + Retry-After. Real proxy (both engines), real Redis, the legacy emulator."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import yaml
from proxy_support import RULES, SECRET, rules_data, token, write_rules
from test_proxy_touched_and_consistency import _emulator

from migrators.consistency import ConsistencyStore
from proxy.causal import is_split, named_ids
from proxy.registry import registry_from_mapping
from proxy.server import ProxyConfig, ProxyInstance
from proxy.shadow import CountingDropSink
from strangler.exchange import RecordedRequest, RecordedResponse
from strangler.mongo import open_database

TENANT = "sub_0000000000c1"
ADDED = "wf_00000000ca01"


def _workspaces_endpoints() -> list[str]:
    spec = yaml.safe_load(RULES.read_text())["entities"]["workspaces"]
    return [e for e in [*spec["read"], *spec["write"]] if not e.startswith("WS ")]


async def _new_side(request: RecordedRequest) -> RecordedResponse:
    """The new side's answers (a stand-in: what matters here is the id it answers with)."""
    data: dict[str, Any] = {}
    if request.path == "/workflow/addWorkflow":
        data = {"workflow_id": json.loads(request.body)["workflow_name"]}
    body = json.dumps({"status": True, "message": "ok", "data": data}).encode()
    return RecordedResponse(200, (("content-type", "application/json"),), body)


def test_only_a_table_split_between_the_sides_is_held_and_only_named_ids_count() -> None:
    from proxy.table import EntityPlan

    def plans(*modes: str) -> list[EntityPlan]:
        return [EntityPlan(f"e{n}", mode, 0.0, 0.0, 0, False) for n, mode in enumerate(modes)]

    assert not is_split(plans("legacy", "shadow"))
    assert not is_split(plans("new", "new"))
    assert is_split(plans("new", "legacy")) and is_split(plans("canary", "canary"))
    body = b'{"workflow_id": "wf_1", "note": "x", "UserId": "usr_1"}'
    assert set(named_ids("job_run_id=run_1&page=2", body)) == {"run_1", "wf_1", "usr_1"}
    assert named_ids("", b"not json") == []


@pytest.mark.parametrize("engine", ["fast", "asgi"])
async def test_run_now_of_a_workflow_just_added_on_the_new_side_waits_for_the_reverse_sync(
    tmp_path: Path, redis_client: aioredis.Redis, redis_prefix: str, engine: str
) -> None:
    db = open_database(f"memory://causal-{uuid.uuid4().hex}")
    await db["Accounts"].insert_one({"subscription_id": TENANT, "company_name": "C"})
    store = ConsistencyStore(redis_client, prefix=redis_prefix)
    rules = write_rules(
        tmp_path / "rules.yaml", rules_data(workspaces={"mode": "new"}, job_runs={"mode": "legacy"})
    )
    handlers = {("workspaces", e): _new_side for e in _workspaces_endpoints()}
    headers = {"Authorization": f"Bearer {token(TENANT)}"}
    async with _emulator(db) as legacy_url:
        config = ProxyConfig(legacy_url=legacy_url, rules_path=str(rules), host="127.0.0.1",
                             port=0, admin_port=0, engine=engine)  # fmt: skip
        instance = ProxyInstance(config, SECRET, registry_from_mapping(handlers),
                                 CountingDropSink(), consistency=store)  # fmt: skip
        await instance.start()
        assert instance.app.causal is not None
        gate = instance.app.causal

        def counted(outcome: str) -> float:
            sample = instance.app.metrics.registry.get_sample_value(
                "strangler_proxy_causal_total", {"entity": "job_runs", "outcome": outcome}
            )
            return sample or 0.0

        try:
            async with httpx.AsyncClient(base_url=instance.url, headers=headers) as client:

                async def add(workflow_id: str) -> None:
                    added = await client.post("/workflow/addWorkflow",
                                              json={"workflow_name": workflow_id})  # fmt: skip
                    assert added.status_code == 200

                carried: set[str] = set()

                async def reverse_sync() -> None:
                    """What the reverse sync does, a pass every 0.1 s: the workflows it was
                    given into MongoDB, then its watermark (every outbox row committed
                    before the pass began is applied)."""
                    while True:
                        began = time.time()
                        for workflow_id in sorted(carried):
                            if await db["workflow"].count_documents({"workflow_id": workflow_id}):
                                continue
                            await db["workflow"].insert_one({"workflow_id": workflow_id,
                                "subscription_id": TENANT, "workflow_name": workflow_id,
                                "job_id": "jb_1", "workspace_id": "ws_1"})  # fmt: skip
                        if carried:
                            await store.publish_watermark("workflows", "reverse", began)
                        await asyncio.sleep(0.1)

                syncing = asyncio.create_task(reverse_sync())

                async def carry(workflow_id: str) -> None:
                    carried.add(workflow_id)

                await add(ADDED)
                started = time.monotonic()
                run_now = asyncio.create_task(
                    client.post("/workflow/runNow", json={"workflow_id": ADDED})
                )
                await asyncio.sleep(0.3)
                assert not run_now.done()  # held: legacy has not got the workflow yet
                await carry(ADDED)
                answer = await run_now
                assert answer.status_code == 200, answer.text
                assert answer.json()["data"]["status"] == "queued"
                assert time.monotonic() - started >= 0.3
                assert (counted("waited"), counted("refused")) == (1, 0)
                # never carried: past the bound a 503 to retry, and legacy never saw it
                syncing.cancel()
                gate.wait_seconds = 0.5
                await add("wf_00000000ca02")
                refused = await client.post("/workflow/runNow",
                                            json={"workflow_id": "wf_00000000ca02"})  # fmt: skip
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "1"
                assert "retry in 1 s" in refused.json()["message"]
                assert await db["jobRun"].count_documents({"workflow_id": "wf_00000000ca02"}) == 0
                assert (counted("waited"), counted("refused")) == (1, 1)
                # a request naming no recent write goes straight through
                await db["workflow"].insert_one({"workflow_id": "wf_00000000ca03",
                    "subscription_id": TENANT, "workflow_name": "w3", "job_id": "jb_1",
                    "workspace_id": "ws_1"})  # fmt: skip
                plain = await client.post("/workflow/runNow",
                                          json={"workflow_id": "wf_00000000ca03"})  # fmt: skip
                assert plain.status_code == 200
                assert (counted("waited"), counted("refused")) == (1, 1)
        finally:
            await instance.stop()
