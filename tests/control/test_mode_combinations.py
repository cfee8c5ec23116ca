"""Every mix of entity modes on the way to the end state and back keeps the legacy contract.

The whole stack runs as the demo runs it (``strangler.demo_stack``: seeded legacy store,
legacy emulator, backfill, proxy with every new-side handler, forward syncs, reverse sync,
run worker). The flags walk the entities one at a time into ``new`` in the order
``strangler flags plan all new`` takes them (gates evaluated, none forced), then back one at
a time through ``canary 50`` to ``legacy`` in the reverse order. After each step two fresh
tenants (each with its Accounts document, as every tenant has), one inside the canary's half
and one outside it, each make the contract journey (``strangler.contract_journey``) through
the proxy; each transcript must equal the one the same journey got with every entity in
``legacy`` (``strangler.contract_transcript``: up to ids, datetimes and the new side's
documented version bumps). Run with ``-s`` to watch the walk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from control.cli import LiveProbes
from control.flags import read_flags
from control.plan import migration_order
from migrators.registry import default_registry
from proxy.canary import in_canary, percent_threshold
from strangler.config import load_settings
from strangler.contract import new_id
from strangler.contract_journey import JourneyTenant, run_journey
from strangler.contract_transcript import Transcript, differences
from strangler.demo_stack import DemoStack, StackOptions
from strangler.demo_traffic import Traffic
from strangler.demo_walk import Walk, WalkTimes

PG_SERVER = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres").rsplit(
    "/", 1
)[0]
REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _tenant_pair(secret: str) -> list[JourneyTenant]:
    """Two fresh tenants: the first inside a 50% canary, the second outside it."""
    threshold = percent_threshold(50)
    found: dict[bool, JourneyTenant] = {}
    while len(found) < 2:
        subscription_id = new_id("subscription")
        side = in_canary(subscription_id, threshold)
        found.setdefault(side, JourneyTenant(secret, subscription_id, new_id("user")))
    return [found[True], found[False]]


def _account(tenant: JourneyTenant) -> dict[str, object]:
    """Its Accounts document: a tenant nobody has used yet, but a tenant (LEGACY.md: one
    Accounts document per tenant), so that what it writes on legacy migrates."""
    return {"subscription_id": tenant.subscription_id, "company_name": f"Journey {tenant.tag}",
            "plan_type": "team", "status": "active", "created_at": datetime.now(UTC)}  # fmt: skip


async def _closed(stack: DemoStack, within: float = 90.0) -> None:
    """The stack closed; if it has not within ``within`` s, what every task was doing."""
    closing = asyncio.ensure_future(stack.close())
    await asyncio.wait([closing], timeout=within)
    if not closing.done():
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.print_stack(limit=6, file=sys.stdout)  # captured: the failure shows it
        raise AssertionError(f"the stack did not close within {within:g} s (its tasks above)")
    await closing


async def _journeys(base_url: str, pair: list[JourneyTenant]) -> list[Transcript]:
    return list(await asyncio.gather(*(run_journey(base_url, t) for t in pair)))


def _modes(rules_path: str) -> str:
    flags = read_flags(rules_path)
    return ", ".join(
        f"{name} {row.mode}" + (f" {row.percent:g}%" if row.mode == "canary" else "")
        for name, row in flags.items()
    )


# The whole stack for minutes (never beside the other such test: WHOLE_STACK in
# tests/conftest.py), with a hang guard of its own length.
@pytest.mark.timeout(480)
async def test_each_step_into_new_and_back_keeps_the_legacy_contract() -> None:
    database_url = f"{PG_SERVER}/strangler_test_modes_{os.getpid()}_{secrets.token_hex(3)}"
    settings = dataclasses.replace(load_settings({}), redis_url=REDIS_URL)
    said: list[str] = []

    def say(line: str) -> None:  # shown with -s, kept for the failure message
        said.append(line)
        print(f"{time.monotonic() - began:7.1f} {line}", flush=True)

    began = time.monotonic()
    stack = DemoStack(settings, StackOptions(legacy_port=0, proxy_port=0, admin_port=0),
                      say)  # fmt: skip
    conn: asyncpg.Connection | None = None
    try:
        await stack.seed()
        secret = stack.settings.jwt_secret
        entities = read_flags(str(REPO / "routing_rules.yaml"))  # one pair per journey
        pairs = [_tenant_pair(secret) for _ in range(1 + 3 * len(entities))]
        await stack.db["Accounts"].insert_many([_account(t) for pair in pairs for t in pair])
        await stack.reset_database(database_url)
        await stack.serve_legacy()
        await stack.backfill()
        proxy = await stack.serve_proxy()
        stack.start_forward(default_registry())
        stack.start_reverse()
        stack.start_runs()

        reference = await _journeys(proxy.url, pairs.pop())
        say(f"   reference waited {[r.waited for r in reference]}")
        assert reference[0].answers and not differences(reference[0], reference[1])
        # The reference is the contract as legacy keeps it: every call answered, a run
        # followed to its end, an activity entry per write, each also on /ws/activity.
        statuses = {answer.step: answer.status for answer in reference[0].answers}
        assert statuses["POST /connectors/addConnector (a duplicate name)"] == 409
        assert statuses["GET /workflow/getWorkflow (deleted)"] == 404
        assert statuses["GET /users/getUsers (per_page 0)"] == 400
        by_step = {answer.step: answer.body for answer in reference[0].answers}
        assert by_step["GET /jobRun/getRun (at its end)"]["data"]["status"] == "completed"
        writes = len(by_step["GET /userActivity/getActivity (an entry per write)"]["data"])
        assert writes > 20 and len(by_step["WS /ws/activity (every entry, sorted)"]) == writes

        walk = Walk(stack, Traffic(proxy.url, []), WalkTimes(), say)
        conn = await asyncpg.connect(stack.settings.database_url)
        probes = LiveProbes(conn, stack.settings, stack.rules_path)
        order = migration_order(list(read_flags(stack.rules_path)), default_registry())
        steps: list[tuple[str, str, float | None]] = [(e, "new", None) for e in order]
        for entity in reversed(order):
            steps += [(entity, "canary", 50.0), (entity, "legacy", None)]

        broken: list[str] = []
        checked: list[str] = []
        for entity, mode, percent in steps:
            await walk.step(conn, probes, entity, mode, percent, dwell=False)
            modes = _modes(stack.rules_path)
            checked.append(modes)
            say(f"   contract journeys: {modes}")
            for tenant_index, got in enumerate(await _journeys(proxy.url, pairs.pop())):
                say(f"   retried {got.retried}, waited {got.waited}")
                found = differences(reference[tenant_index], got)
                if found:
                    side = "in" if tenant_index == 0 else "outside"
                    broken.append(f"[{modes}] tenant {side} the canary: " + "; ".join(found))
        assert len(checked) == 3 * len(order) and not broken, "\n".join(broken + said[-30:])
        assert all(f"{name} new" in checked[len(order) - 1] for name in order)
        assert all(f"{name} legacy" in checked[-1] for name in order)
    finally:
        if conn is not None:
            await conn.close()
        await _closed(stack)
        admin = await asyncpg.connect(f"{PG_SERVER}/postgres")
        try:
            name = database_url.rsplit("/", 1)[1]
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
