"""The demo's walk-through, start to end (``strangler demo`` without ``--check``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import time
from typing import Any

from migrators.registry import default_registry
from proxy.canary import in_canary, percent_threshold
from strangler.config import Settings, redact_url
from strangler.demo_check import ledger_differences, postgres_states
from strangler.demo_stack import SAMPLE_RATE, WALKED, DemoStack, StackOptions, demo_database_url
from strangler.demo_traffic import Traffic, tenant_of
from strangler.demo_walk import Walk, WalkStopped, WalkTimes

__all__ = ["run_walkthrough"]


def say(line: str) -> None:
    print(line, flush=True)


async def _tenants(stack: DemoStack) -> list[Any]:
    assert stack.summary is not None
    tenants = []
    for subscription_id, user_id in stack.summary.tenants:
        live = stack.db["workspace"].find(
            {"subscription_id": subscription_id, "d_flag": {"$in": [False, None, "false"]}}
        )
        workspaces = [doc["workspace_id"] async for doc in live][:2]
        people = stack.db["users"].find({"subscription_id": subscription_id}, {"UserId": 1})
        members = [doc["UserId"] async for doc in people][:8]
        if workspaces:
            tenants.append(tenant_of(stack.settings.jwt_secret, subscription_id, user_id,
                                     workspaces, members))  # fmt: skip
    return tenants


async def run_walkthrough(settings: Settings, args: argparse.Namespace) -> int:
    started = time.monotonic()
    # One line per request would bury the walk-through; warnings still show.
    for noisy in ("httpx", "migrators.sync", "proxy.reload"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    database_url, database_note = demo_database_url(settings, args.reset_database)
    options = StackOptions(
        host=args.host,
        legacy_port=args.legacy_port,
        proxy_port=args.proxy_port,
        admin_port=args.admin_port,
        seed=args.seed,
    )
    stack = DemoStack(settings, options, say)
    traffic: Traffic | None = None
    try:
        say("1. seeding the in-process legacy store (memory://) with 'small' data")
        summary = await stack.seed()
        say("   " + summary.lines()[0])
        say(f"2. PostgreSQL {redact_url(database_url)}: {database_note}; schema upgrade")
        await stack.reset_database(database_url)
        legacy_url = await stack.serve_legacy()
        say(f"3. legacy emulator serving on {legacy_url}")
        say("4. backfill, every entity:")
        for line in await stack.backfill():
            say(f"   {line}")
        proxy = await stack.serve_proxy()
        say(f"5. proxy serving on {proxy.url} (admin {proxy.admin_url}), flag table copied to "
            f"{stack.rules_path}; {SAMPLE_RATE:.0%} of the reads of {' and '.join(WALKED)} are "
            "compared (sample_rate in that copy)")  # fmt: skip
        stack.start_forward(default_registry())
        stack.start_reverse()
        stack.start_runs()
        say("6. forward syncs (polling feed: touched ids + sweep), reverse sync and run worker "
            "running")  # fmt: skip
        tenants = await _tenants(stack)
        threshold = percent_threshold(50)
        for tenant in tenants:
            side = "new side" if in_canary(tenant.subscription_id, threshold) else "legacy"
            say(f"   tenant {tenant.subscription_id}: in canary 50 its reads go to the {side}")
        traffic = Traffic(proxy.url, tenants)
        traffic.start()
        say(f"7. client traffic through the proxy: {len(tenants)} tenants, reads and writes of "
            "connectors, of workspace trees (each tree edited by its own client, all at "
            "once), and of users, groups and roles (users added while memberships are "
            "edited)")  # fmt: skip
        times = WalkTimes(dwell=2.5 if args.quick else 4.0)
        walk = Walk(stack, traffic, times, say)
        say(f"   gates as 'strangler flags set' evaluates them, with --max-regression-rate "
            f"{walk.config.max_regression_rate:g} (the shipped default is 0.01, which needs "
            "about 300 clean comparisons per entity: minutes of traffic on two cores); "
            "no gate is forced")  # fmt: skip
        for number, entity in enumerate(WALKED, start=8):
            await walk.walk(entity, number)
        await walk.end_state(8 + len(WALKED))
        return await _finish(stack, traffic, args, started)
    except WalkStopped as exc:
        say(f"\nSTOPPED: {exc}")
        if traffic is not None:
            for sample in traffic.counters.unexpected_samples:
                say(f"   unexpected answer: {sample}")
        say("This is a finding of the migration: it was not forced past.")
        return 1
    finally:
        if traffic is not None:
            await traffic.stop()
        await stack.close()


async def _finish(stack: DemoStack, traffic: Traffic, args: argparse.Namespace, started: float
                  ) -> int:  # fmt: skip
    say(f"\n== {9 + len(WALKED)}. closing checks, with the legacy emulator stopped ==")
    await traffic.stop()
    say(f"   traffic stopped: {traffic.counters.line()}")
    for sample in traffic.counters.unexpected_samples:
        say(f"   unexpected answer: {sample}")
    for crash in traffic.crashed:
        say(f"   a client task crashed: {crash}")
    # MongoDB was retired: PostgreSQL alone is the truth, and it must hold every write any
    # client was told succeeded, from the first minute on either side to the last.
    clean = not traffic.counters.unexpected
    assert stack.pool is not None
    async with stack.pool.acquire() as conn:
        stores = {"PostgreSQL": await postgres_states(conn, traffic.ledger)}
    lost = ledger_differences(traffic.ledger, stores)
    for line in lost[:10]:
        say(f"   LOST {line}")
    say("   verify: clean (the final verify of 'strangler retire', every entity)"
        if clean else "   verify: NOT clean (unexpected answers above)")  # fmt: skip
    say(f"   client writes acknowledged: {traffic.ledger.acknowledged}, lost: {len(lost)}")
    say(f"   runs queued by runNow (either side): {len(traffic.ledger.runs)}, each in "
        "PostgreSQL" if not any(line.startswith("run ") for line in lost)
        else "   runs queued by runNow: some are missing (LOST lines above)")  # fmt: skip
    say(f"   (walk-through took {time.monotonic() - started:.0f} s)")
    ok = clean and not lost
    if args.no_serve:
        return 0 if ok else 1
    await _serve_until_interrupted(stack)
    return 0 if ok else 1


async def _serve_until_interrupted(stack: DemoStack) -> None:
    assert stack.proxy is not None and stack.summary is not None
    subscription_id, user_id = stack.summary.tenants[0]
    from strangler.tokens import mint_token

    token = mint_token(stack.settings.jwt_secret, user_id, subscription_id)
    doc = await stack.db["workspace"].find_one(
        {"subscription_id": subscription_id, "d_flag": {"$in": [False, None, "false"]}}
    )
    assert doc is not None
    query = f"/workspace/getWorkspace?workspace_id={doc['workspace_id']}"
    say("\nStill serving, every entity in new, the legacy emulator stopped. Try (a workspace "
        "tree of the largest tenant, from PostgreSQL):")  # fmt: skip
    header = shlex.quote("Authorization: Bearer " + token)
    say(f"   curl -s -H {header} {shlex.quote(stack.proxy.url + query)}")
    say(f"   (legacy at {stack.legacy_url} is stopped: it refuses connections)")
    say("   flags: strangler flags show --rules " + stack.rules_path)
    say("Ctrl-C stops the demo.")
    await asyncio.Event().wait()
