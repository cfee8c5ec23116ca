"""runNow on the new side and the run worker: a run row and its message in one logical step,
driven to its final status exactly once, whatever is delivered twice or left by a dead
worker; status changes on pub/sub and in the outbox for legacy."""

# ruff: noqa: E501  (the test reads best one step per line)
from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from new_side_support import NOW, Sides, Tenant
from new_side_support import seed_documents as seed

from proxy.runs_worker import RunWorker
from shadow_compare.compare import compare_responses
from shadow_compare.rules import load_rules
from strangler.exchange import RecordedResponse
from strangler.runs import RUN_GROUP, run_channel, run_message

RULES = load_rules(Path(__file__).resolve().parents[2] / "shadow_rules.yaml")
DIAGRAM = json.dumps({"nodes": [{"id": "a"}, {"id": "b"}], "edges": []})


def workflow(tenant: Tenant, diagram: Any = DIAGRAM, **fields: Any) -> dict[str, Any]:
    return {
        "workflow_id": f"wf_{secrets.token_hex(6)}", "workspace_id": "ws_000000000001",
        "folder_id": "fd_000000000001", "job_id": "job_000000000001",
        "subscription_id": tenant.subscription_id, "workflow_name": "Nightly",
        "workFlowDiagram": diagram, "version": 1, "created_at": NOW, **fields,
    }  # fmt: skip


@pytest.fixture
async def worker(sides: Sides, redis_client, redis_prefix: str):
    built = RunWorker(
        sides.pool, redis_client, consumer="w1", prefix=redis_prefix, step_seconds=0.0,
        claim_idle_ms=50, max_deliveries=3, poll_seconds=0.05,
    )  # fmt: skip
    await built.ensure_group()
    yield built
    await redis_client.delete(built.stream, built.dead_stream)


async def _run_row(sides: Sides, job_run_id: str) -> dict[str, Any]:
    async with sides.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT status, logs, duration_ms, rows_processed, error_message, completed_at "
            "FROM job_runs WHERE job_run_id = $1",
            job_run_id,
        )
    assert row is not None
    return {**dict(row), "logs": json.loads(row["logs"])}


async def _drain(worker: RunWorker) -> None:
    while await worker.dispatch_once():
        pass
    while await worker.consume_once(count=50, block_ms=10):
        pass


async def test_run_now_answers_as_legacy_and_commits_run_activity_outbox_and_dispatch(
    sides, tenant, other_tenant
) -> None:
    flow = workflow(tenant)
    await seed(sides, "workflows", [flow, workflow(other_tenant, workflow_name="Theirs")])
    body = {"workflow_id": flow["workflow_id"]}
    legacy, new = await sides.both("POST", "/workflow/runNow", tenant, body=body)
    theirs, ours = legacy.json()["data"]["job_run_id"], new.json()["data"]["job_run_id"]
    aligned = RecordedResponse(
        new.status, new.headers, new.body.replace(ours.encode(), theirs.encode())
    )
    result = compare_responses(
        legacy, aligned, RULES.for_entity("job_runs"), endpoint="POST /workflow/runNow"
    )
    assert result.equal, result.differences
    async with sides.pool.acquire() as conn:
        dispatch = await conn.fetchrow("SELECT * FROM run_dispatch WHERE job_run_id = $1", ours)
        outbox = await conn.fetchval(
            "SELECT count(*) FROM migration_outbox WHERE entity = 'job_runs' AND legacy_id = $1",
            ours,
        )
        activity = await conn.fetchrow(
            "SELECT action, object_id FROM user_activity WHERE current_data ->> 'job_run_id' = $1",
            ours,
        )
    assert dispatch is not None and dispatch["published_at"] is None
    assert outbox == 1 and activity is not None
    assert (activity["action"], activity["object_id"]) == ("executed", flow["workflow_id"])
    row = await _run_row(sides, ours)
    assert (
        row["status"] == "queued" and row["logs"][0]["message"] == f"Run queued by {tenant.user_id}"
    )
    # the run as legacy's runNow writes it (legacy's own has moved on: its simulator runs it)
    run = (await sides.call_new("GET", "/jobRun/getRun", tenant, {"job_run_id": ours})).json()[
        "data"
    ]
    assert {k: run[k] for k in ("workflow_id", "job_id", "workspace_id", "subscription_id",
            "status", "triggered_by", "trigger_type", "completed_at", "duration_ms")} == {
        "workflow_id": flow["workflow_id"], "job_id": flow["job_id"],
        "workspace_id": flow["workspace_id"], "subscription_id": tenant.subscription_id,
        "status": "queued", "triggered_by": tenant.user_id, "trigger_type": "manual",
        "completed_at": None, "duration_ms": None,
    }  # fmt: skip
    legacy_run = (
        await sides.call_legacy("GET", "/jobRun/getRun", tenant, {"job_run_id": theirs})
    ).json()["data"]
    assert run["logs"][0] == {**legacy_run["logs"][0], "message": f"Run queued by {tenant.user_id}"}
    # another tenant's workflow, a missing one, no id: legacy's 404s and 400
    for body in ({"workflow_id": "wf_000000000000"}, {}):
        legacy, new = await sides.both("POST", "/workflow/runNow", tenant, body=body)
        assert (new.status, new.json()) == (legacy.status, legacy.json())  # fmt: skip


async def test_the_worker_drives_each_run_to_its_end_and_announces_every_step(
    sides, tenant, worker, redis_client, redis_prefix
) -> None:
    good, broken = workflow(tenant), workflow(tenant, diagram="{not json")
    await seed(sides, "workflows", [good, broken])
    pubsub = redis_client.pubsub()
    await pubsub.psubscribe(run_channel(redis_prefix, tenant.subscription_id, "*"))
    runs = {}
    for flow in (good, broken):
        answer = await sides.call_new(
            "POST", "/workflow/runNow", tenant, body={"workflow_id": flow["workflow_id"]}
        )
        runs[flow["workflow_id"]] = answer.json()["data"]["job_run_id"]
    await _drain(worker)
    done = await _run_row(sides, runs[good["workflow_id"]])
    assert done["status"] == "completed" and done["rows_processed"] > 0
    assert [e["message"].split(":")[0] for e in done["logs"]] == [
        f"Run queued by {tenant.user_id}", "Run started", "Run completed"]  # fmt: skip
    assert done["duration_ms"] is not None and done["completed_at"] is not None
    failed = await _run_row(sides, runs[broken["workflow_id"]])
    assert (failed["status"], failed["error_message"]) == (
        "failed",
        "workFlowDiagram is not valid JSON",
    )
    heard: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(heard) < 6:  # None: the subscription's confirmation, or nothing yet
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                heard.append(json.loads(message["data"]))
    await pubsub.aclose()
    by_run = {run: [m["status"] for m in heard if m["job_run_id"] == run] for run in runs.values()}
    assert by_run == {runs[good["workflow_id"]]: ["queued", "running", "completed"],
                      runs[broken["workflow_id"]]: ["queued", "running", "failed"]}  # fmt: skip
    async with sides.pool.acquire() as conn:
        outbox = await conn.fetchval(
            "SELECT count(*) FROM migration_outbox WHERE entity = 'job_runs' AND legacy_id = ANY($1::text[])",
            list(runs.values()),
        )
    assert outbox == 6  # per run: the runNow, running, its final status
    assert await redis_client.xpending(worker.stream, RUN_GROUP) == {
        "pending": 0, "min": None, "max": None, "consumers": []}  # fmt: skip


async def test_a_message_delivered_twice_finishes_its_run_once(sides, tenant, worker, redis_client):
    flow = workflow(tenant)
    await seed(sides, "workflows", [flow])
    answer = await sides.call_new(
        "POST", "/workflow/runNow", tenant, body={"workflow_id": flow["workflow_id"]}
    )
    run_id = answer.json()["data"]["job_run_id"]
    await worker.dispatch_once()
    # the dispatcher crashed after its XADD, before its commit: the message is added again
    await redis_client.xadd(
        worker.stream, run_message(run_id, tenant.subscription_id, flow["workflow_id"])
    )
    other = RunWorker(
        sides.pool, redis_client, consumer="w2", prefix=worker.prefix, step_seconds=0.0
    )
    await asyncio.gather(
        worker.consume_once(count=1, block_ms=10), other.consume_once(count=1, block_ms=10)
    )
    row = await _run_row(sides, run_id)
    assert row["status"] == "completed"
    assert [e["message"] for e in row["logs"]].count("Run started") == 1
    assert sum(1 for e in row["logs"] if e["message"].startswith("Run completed")) == 1
    assert worker.counts.finished + other.counts.finished == 1
    assert worker.counts.acknowledged + other.counts.acknowledged == 2


async def test_messages_of_a_dead_worker_are_claimed_and_poison_goes_to_dead_letters(
    sides, tenant, worker, redis_client
) -> None:
    flow = workflow(tenant)
    await seed(sides, "workflows", [flow])
    ids = []
    for _ in range(3):
        answer = await sides.call_new(
            "POST", "/workflow/runNow", tenant, body={"workflow_id": flow["workflow_id"]}
        )
        ids.append(answer.json()["data"]["job_run_id"])
    await worker.dispatch_once()
    # a worker reads them and dies before driving any (kill -9: nothing acknowledged)
    dead = await redis_client.xreadgroup(RUN_GROUP, "dead-worker", {worker.stream: ">"}, count=10)
    assert len(dead[0][1]) == 3
    await redis_client.xadd(
        worker.stream, run_message("run_00000000gone", tenant.subscription_id, "wf")
    )
    await worker.consume_once(count=10, block_ms=10)  # the unknown run: dead-lettered at once
    await asyncio.sleep(0.1)  # past claim_idle_ms
    assert await worker.claim_once() == 3
    for run_id in ids:
        assert (await _run_row(sides, run_id))["status"] == "completed"
    letters = await redis_client.xrange(worker.dead_stream)
    assert [f[b"job_run_id"] for _, f in letters] == [b"run_00000000gone"]
    assert (await redis_client.xpending(worker.stream, RUN_GROUP))["pending"] == 0


async def test_a_run_that_always_fails_to_be_driven_ends_failed_in_dead_letters(
    sides, tenant, worker, redis_client, monkeypatch
) -> None:
    flow = workflow(tenant)
    await seed(sides, "workflows", [flow])
    answer = await sides.call_new(
        "POST", "/workflow/runNow", tenant, body={"workflow_id": flow["workflow_id"]}
    )
    run_id = answer.json()["data"]["job_run_id"]
    await worker.dispatch_once()

    async def broken(*_args: Any) -> None:
        raise RuntimeError("executor unreachable")

    worker = RunWorker(sides.pool, redis_client, consumer="w1", prefix=worker.prefix,
                       step_seconds=0.0, claim_idle_ms=500, max_deliveries=3)  # fmt: skip
    monkeypatch.setattr(worker, "drive", broken)
    await worker.consume_once(count=1, block_ms=10)  # delivery 1 fails: left pending
    assert await worker.claim_once() == 0  # retried only after claim_idle_ms
    await asyncio.sleep(0.55)
    assert await worker.claim_once() == 1  # delivery 2 fails: the next waits 1 s
    assert await worker.claim_once() == 0  # backing off
    await asyncio.sleep(1.05)
    assert await worker.claim_once() == 1  # delivery 3 fails: max_deliveries reached
    await asyncio.sleep(2.05)
    assert await worker.claim_once() == 1  # dead-lettered
    assert worker.counts.failures == 3 and worker.counts.dead == 1
    row = await _run_row(sides, run_id)
    assert row["status"] == "failed" and "could not be driven" in row["error_message"]
    (letter,) = await redis_client.xrange(worker.dead_stream)
    assert letter[1][b"reason"] == b"delivered too many times without success"


async def test_the_whole_worker_serves_a_burst_from_two_processes_worth_of_consumers(
    sides, tenant, worker, redis_client, redis_prefix, shared_migrated_database_url
) -> None:
    flow = workflow(tenant)
    await seed(sides, "workflows", [flow])
    stop = asyncio.Event()
    workers = [
        RunWorker(sides.pool, redis_client, consumer=name, prefix=redis_prefix, step_seconds=0.0,
                  concurrency=4, poll_seconds=0.05, listen_url=shared_migrated_database_url)
        for name in ("b1", "b2")
    ]  # fmt: skip
    running = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        answers = await asyncio.gather(*(
            sides.call_new("POST", "/workflow/runNow", tenant, body={"workflow_id": flow["workflow_id"]})
            for _ in range(200)
        ))  # fmt: skip
        ids = [a.json()["data"]["job_run_id"] for a in answers]
        async with asyncio.timeout(60):
            while True:
                async with sides.pool.acquire() as conn:
                    left = await conn.fetchval(
                        "SELECT count(*) FROM job_runs WHERE job_run_id = ANY($1::text[]) "
                        "AND status NOT IN ('completed', 'failed')",
                        ids,
                    )
                if left == 0:
                    break
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*running)
    # (the shared database may hold other tests' queued runs: the workers finish those too)
    assert sum(w.counts.finished for w in workers) >= 200
    async with sides.pool.acquire() as conn:
        finals = await conn.fetchval(
            "SELECT count(*) FROM job_runs, jsonb_array_elements(logs) AS e "
            "WHERE job_run_id = ANY($1::text[]) AND e ->> 'message' LIKE 'Run completed%'",
            ids,
        )
    assert finals == 200  # one final log entry per run: none finished twice


def test_the_worker_with_redis_down_says_so_and_exits(migrated_database_url, monkeypatch, capsys):
    from strangler.cli import main

    monkeypatch.setenv("DATABASE_URL", migrated_database_url)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert main(["runs", "work", "--consumer", "t"]) == 2
    err = capsys.readouterr().err
    assert "REDIS_URL: cannot reach redis://127.0.0.1:1/0" in err and "Traceback" not in err
