"""getRuns, getRun and getActivity answered by the new side as legacy answers them, with
every filter of LEGACY.md, on indexes.

As for the other entities: the same documents in the emulator and, through the batch
writer, in PostgreSQL's monthly partitions; the answers compared by the shadow comparator
under the shipped rules.
"""

# ruff: noqa: E501  (the request tables read best one case per line)
from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from bson import ObjectId
from new_side_support import NOW, Sides, Tenant
from new_side_support import seed_documents as seed

from proxy.handlers._pg import Call, tenant_transaction
from proxy.handlers.history import ActivityHandlers, RunHandlers
from shadow_compare.compare import compare_responses
from shadow_compare.rules import load_rules
from strangler.exchange import RecordedRequest, RecordedResponse
from strangler.tokens import Caller

RULES = load_rules(Path(__file__).resolve().parents[2] / "shadow_rules.yaml")


def assert_same(legacy: RecordedResponse, new: RecordedResponse, entity: str, endpoint: str):
    result = compare_responses(legacy, new, RULES.for_entity(entity), endpoint=endpoint)
    assert result.equal, (
        f"{endpoint}: legacy {legacy.status} {legacy.body!r}\n new {new.status} {new.body!r}\n"
        + "\n".join(str(d.to_json()) for d in result.differences)
    )


def run(tenant: Tenant, created: Any, **fields: Any) -> dict[str, Any]:
    document = {
        "job_run_id": f"run_{secrets.token_hex(6)}", "workflow_id": "wf_000000000001",
        "job_id": "job_000000000001", "workspace_id": "ws_000000000001",
        "subscription_id": tenant.subscription_id, "status": "completed", "created_at": created,
        "completed_at": None, "duration_ms": 1500, "triggered_by": tenant.user_id,
        "trigger_type": "manual", "error_message": None, "rows_processed": 10,
        "logs": [{"ts": NOW, "level": "INFO", "message": "started"}],
        **fields,
    }  # fmt: skip
    return {k: v for k, v in document.items() if v is not ...}


def entry(tenant: Tenant, created: Any, **fields: Any) -> dict[str, Any]:
    document = {
        "_id": ObjectId(), "subscription_id": tenant.subscription_id, "UserId": tenant.user_id,
        "action": "updated", "object_type": "workflow", "object_id": "wf_000000000001",
        "object_name": "Daily", "ip_address": "10.0.0.1", "user_agent": "curl/8",
        "previous_data": {"name": "a"}, "current_data": {"name": "b"}, "created_at": created,
        **fields,
    }  # fmt: skip
    return {k: v for k, v in document.items() if v is not ...}


async def seed_tenant(sides: Sides, tenant: Tenant, other: Tenant) -> dict[str, list[dict]]:
    runs = [
        run(tenant, NOW - timedelta(days=40)),  # last month's partition
        run(
            tenant,
            NOW - timedelta(hours=1),
            status="running",
            duration_ms=None,
            rows_processed=None,
        ),
        run(tenant, NOW - timedelta(hours=1), workflow_id="wf_000000000002"),  # a tie: id decides
        run(
            tenant, "2025-12-24 10:00:00", status="failed", error_message="boom", duration_ms="2500"
        ),
        run(tenant, 1735689600000, status="queued", logs=[]),  # epoch ms, 2025-01-01
        run(tenant, "not a date", status="done", trigger_type="cron"),  # dirt kept as found
        run(tenant, ..., rows_processed="many"),  # no date at all: listed last
        run(tenant, NOW - timedelta(days=2), d_flag="true"),  # hidden as legacy hides it
        run(tenant, NOW - timedelta(days=3), logs="not a list", legacyNote={"a": 1}),
        run(other, NOW, workflow_id="wf_000000000001"),
    ]
    activity = [
        entry(tenant, NOW - timedelta(minutes=5)),
        entry(tenant, NOW - timedelta(minutes=4), action="viewed", previous_data=None, current_data=None),
        entry(tenant, NOW - timedelta(days=35), UserId="usr_000000000002", object_type="connector",
              object_id="cn_000000000001"),
        entry(tenant, "2025-06-01 00:00:00", action="created", previous_data=..., object_name=...),
        entry(tenant, "31/31/2020 99:99", action="login"),  # dirty date and action
        entry(tenant, NOW - timedelta(minutes=1), current_data="a string, as found"),
        entry(other, NOW, UserId=other.user_id),
    ]  # fmt: skip
    await seed(sides, "job_runs", runs)
    await seed(sides, "activity", activity)
    return {"runs": runs, "activity": activity}


READS = [
    ("job_runs", "/jobRun/getRuns", {}),
    ("job_runs", "/jobRun/getRuns", {"page": "2", "per_page": "3"}),
    ("job_runs", "/jobRun/getRuns", {"page": "9"}),
    ("job_runs", "/jobRun/getRuns", {"per_page": "0"}),
    ("job_runs", "/jobRun/getRuns", {"workflow_id": "wf_000000000002"}),
    ("job_runs", "/jobRun/getRuns", {"workflow_id": "wf_000000000001", "status": "completed"}),
    ("job_runs", "/jobRun/getRuns", {"status": "done"}),
    ("job_runs", "/jobRun/getRuns", {"status": "running"}),
    ("job_runs", "/jobRun/getRuns", {"from": "2025-12-01"}),
    ("job_runs", "/jobRun/getRuns", {"to": "2025-12-24 10:00:00"}),  # inclusive
    ("job_runs", "/jobRun/getRuns", {"from": "2025-01-01T00:00:00Z", "to": "2025-12-31"}),
    ("job_runs", "/jobRun/getRuns", {"from": "not a date"}),
    ("activity", "/userActivity/getActivity", {}),
    ("activity", "/userActivity/getActivity", {"per_page": "2", "page": "2"}),
    ("activity", "/userActivity/getActivity", {"UserId": "usr_000000000002"}),
    (
        "activity",
        "/userActivity/getActivity",
        {"object_type": "workflow", "object_id": "wf_000000000001"},
    ),
    ("activity", "/userActivity/getActivity", {"object_type": "connector"}),
    ("activity", "/userActivity/getActivity", {"from": "2025-06-01 00:00:00"}),
    ("activity", "/userActivity/getActivity", {"to": "2026-01-01"}),
    ("activity", "/userActivity/getActivity", {"to": "yesterday"}),
]


@pytest.mark.parametrize(("entity", "path", "params"), READS)
async def test_lists_match_legacy(sides, tenant, other_tenant, entity, path, params) -> None:
    await seed_tenant(sides, tenant, other_tenant)
    legacy, new = await sides.both("GET", path, tenant, params)
    assert_same(legacy, new, entity, f"GET {path}")
    if legacy.status == 200:
        assert legacy.json()["total"] == new.json()["total"]


async def test_lists_show_what_legacy_shows_in_its_order(sides, tenant, other_tenant) -> None:
    """Not only equal to legacy: the tenant's visible runs, undated last, none of another's."""
    seeded = await seed_tenant(sides, tenant, other_tenant)
    new = (await sides.call_new("GET", "/jobRun/getRuns", tenant)).json()
    ids = [item["job_run_id"] for item in new["data"]]
    runs = seeded["runs"]
    assert new["total"] == 8 and runs[7]["job_run_id"] not in ids  # d_flag "true": hidden
    assert runs[9]["job_run_id"] not in ids  # another tenant's
    assert ids[-2:] == sorted([runs[5]["job_run_id"], runs[6]["job_run_id"]])  # undated last
    assert "logs" not in new["data"][0]


async def test_get_run_matches_legacy_in_every_case(sides, tenant, other_tenant) -> None:
    seeded = await seed_tenant(sides, tenant, other_tenant)
    runs = seeded["runs"]
    for params in (
        *({"job_run_id": r["job_run_id"]} for r in runs),  # dirty ones, hidden, another's
        {"job_run_id": "run_000000000000"},
        {"job_run_id": "  "},
        {},
    ):
        legacy, new = await sides.both("GET", "/jobRun/getRun", tenant, params)
        assert_same(legacy, new, "job_runs", "GET /jobRun/getRun")
    legacy, new = await sides.both("GET", "/jobRun/getRun", None, {"job_run_id": "x"})
    assert (legacy.status, new.status) == (401, 401)


async def _plan(pool: asyncpg.Pool, tenant: Tenant, handlers: Any, path: str, params: dict) -> str:
    request = RecordedRequest("GET", path, "&".join(f"{k}={v}" for k, v in params.items()))
    call = Call(request, Caller(tenant.user_id, tenant.subscription_id, None), {}, NOW)
    page_sql, _count, args, _skip = handlers.list_query(call)
    async with tenant_transaction(pool, tenant.subscription_id) as conn:
        rows = await conn.fetch("EXPLAIN " + page_sql, *args)
    return "\n".join(r[0] for r in rows)


async def test_every_list_query_runs_on_an_index(fresh_sides, tenant) -> None:
    """Enough rows (many tenants, many months) that a sequential scan would be chosen if an
    index did not serve the query; the plan of each filter names its index."""
    async with fresh_sides.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO subscriptions (id, subscription_id) SELECT gen_random_uuid(), "
            "'sub_' || lpad(n::text, 12, '0') FROM generate_series(1, 200) AS n"
        )
        await conn.execute(
            """INSERT INTO subscriptions (id, subscription_id) VALUES (gen_random_uuid(), $1)""",
            tenant.subscription_id,
        )
        for month in (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)):
            name = f"{month:%Y_%m}"
            end = (month + timedelta(days=32)).replace(day=1)
            for table in ("job_runs", "user_activity"):
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {table}_{name} PARTITION OF {table} "
                    f"FOR VALUES FROM ('{month.isoformat()}') TO ('{end.isoformat()}')"
                )
        await conn.execute(
            """INSERT INTO job_runs (id, job_run_id, subscription_id, workflow_id, status, created_at)
               SELECT gen_random_uuid(), 'run_' || n, 'sub_' || lpad((n % 200 + 1)::text, 12, '0'),
                      'wf_' || (n % 3000), 'completed',
                      '2026-01-01'::timestamptz + (n % 50000) * interval '1 minute'
               FROM generate_series(1, 60000) AS n"""
        )
        await conn.execute(
            """INSERT INTO user_activity (id, activity_id, subscription_id, user_id, object_type,
                                          object_id, action, created_at)
               SELECT gen_random_uuid(), 'act_' || n, 'sub_' || lpad((n % 200 + 1)::text, 12, '0'),
                      'usr_' || (n % 5000), 'workflow', 'wf_' || (n % 3000), 'viewed',
                      '2026-01-01'::timestamptz + (n % 50000) * interval '1 minute'
               FROM generate_series(1, 60000) AS n"""
        )
        await conn.execute("ANALYZE job_runs; ANALYZE user_activity")
    busy = Tenant("sub_000000000007", tenant.user_id)
    cases = [
        # each partition's index is named after its columns (job_runs_tenant_list's are
        # job_runs_<month>_subscription_id_created_at_job_run_id_idx)
        (RunHandlers, "/jobRun/getRuns", {}, "_subscription_id_created_at_job_run_id_idx"),
        (RunHandlers, "/jobRun/getRuns", {"workflow_id": "wf_7"}, "_workflow_id_created_at_job_run_id_idx"),
        (RunHandlers, "/jobRun/getRuns", {"status": "completed", "from": "2026-02-01"}, "job_runs_2026_02_subscription_id_"),
        (ActivityHandlers, "/userActivity/getActivity", {}, "_subscription_id_created_at_activity_i_idx"),
        (ActivityHandlers, "/userActivity/getActivity", {"UserId": "usr_7"}, "_subscription_id_user_id_created_at_ac_idx"),
        (ActivityHandlers, "/userActivity/getActivity", {"object_type": "workflow", "object_id": "wf_7"}, "_subscription_id_object_id_created_at__idx"),
    ]  # fmt: skip
    async with fresh_sides.pool.acquire() as conn:
        empty = {
            r["relname"]
            for r in await conn.fetch(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND reltuples <= 0 "
                "AND (relname LIKE 'job_runs_%' OR relname LIKE 'user_activity_%')"
            )
        }
    for handlers, path, params, index in cases:
        plan = await _plan(fresh_sides.pool, busy, handlers, path, params)
        scanned = set(re.findall(r"Seq Scan on (\w+)", plan))
        assert scanned <= empty, f"{path} {params}: a partition with rows scanned whole:\n{plan}"
        assert index in plan, f"{path} {params}:\n{plan}"
    # from/to prune whole months: February's query reads no January partition
    plan = await _plan(
        fresh_sides.pool, busy, RunHandlers, "/jobRun/getRuns", {"from": "2026-02-01"}
    )
    assert "job_runs_2026_01" not in plan and "job_runs_2026_02" in plan, plan
