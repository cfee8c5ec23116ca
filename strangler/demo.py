"""``strangler demo``: the main job in one process, since the in-process store cannot be shared.

The walk-through (:mod:`strangler.demo_run`): every part started on loopback
(:mod:`strangler.demo_stack`), client traffic with a ledger of acknowledged writes
(:mod:`strangler.demo_traffic`), connectors and the workspace tree walked through every
mode (:mod:`strangler.demo_walk`), and the closing checks (:mod:`strangler.demo_check`).

``--check`` keeps the first form: seed the legacy emulator with ``small`` data, serve it,
and send the printed ``curl`` once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import socket
import sys
from typing import Any

from strangler.config import Settings, load_settings
from strangler.errors import ConfigError, StranglerError
from strangler.tokens import mint_token


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    demo = subparsers.add_parser(
        "demo",
        help="the whole migration, live: connectors, the workspace tree, users, groups, roles, "
        "job runs and activity through every stage",
        description="In one process: seed the in-process legacy store with small data, upgrade "
        "the demo's PostgreSQL database, serve the legacy emulator and the proxy, backfill, "
        "start the forward and reverse syncs and the run worker, and run client traffic through "
        "the proxy while connectors, the workspace tree, users, groups, roles, job runs and "
        "activity, one "
        "after the other, go legacy -> shadow -> canary 50 -> new -> legacy, printing the gates "
        "and the shadow report at each step; then every entity goes into new in the order "
        "'flags plan all new' gives, 'strangler retire' records the point of no return after "
        "a final verify, and the syncs and the legacy emulator stop while traffic goes on. "
        "Ends with the count of acknowledged client writes lost (PostgreSQL now the only "
        "store), then keeps serving (Ctrl-C stops it) "
        "unless --no-serve. DATABASE_URL left at its default selects the demo's own "
        "database uzo_demo, which is reset at every start.",
    )
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on")
    demo.add_argument("--legacy-port", type=int, default=8001, help="legacy emulator port (8001)")
    demo.add_argument("--proxy-port", type=int, default=8000, help="proxy port (8000; 0: any)")
    demo.add_argument("--admin-port", type=int, default=9000, help="proxy admin port (9000)")
    demo.add_argument("--seed", type=int, default=1, help="data generator seed")
    demo.add_argument(
        "--no-serve",
        action="store_true",
        help="exit after the walk-through: 0 when no write was lost and verify is clean",
    )
    demo.add_argument(
        "--quick", action="store_true", help="shorter dwell at each step (for tests and CI)"
    )
    demo.add_argument(
        "--reset-database",
        action="store_true",
        help="allow resetting the database DATABASE_URL names (the default demo database "
        "uzo_demo is always reset)",
    )
    demo.add_argument(
        "--processes",
        action="store_true",
        help="every service a process of its own, as deploy/ runs them (legacy mongod, legacy "
        "serve, sync, reverse-sync, proxy serve; flags set per step), walking connectors; "
        "exits after the closing checks",
    )
    demo.add_argument(
        "--feed",
        choices=("polling", "change-stream"),
        default="polling",
        help="with --processes: the forward sync's feed (polling, as deploy/ runs it)",
    )
    demo.add_argument(
        "--check",
        action="store_true",
        help="first form only: seed, serve the emulator, send the printed request once, exit",
    )
    demo.set_defaults(handler=_demo)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((host, port)) != 0


def _demo(args: argparse.Namespace) -> int:
    settings = load_settings()
    if args.processes:
        from strangler.demo_processes import ProcessOptions, run_processes

        options = ProcessOptions(
            host=args.host,
            seed=args.seed,
            quick=args.quick,
            reset_named=args.reset_database,
            feed=args.feed,
        )
        return asyncio.run(run_processes(settings, options))
    if not args.check:
        from strangler.demo_run import run_walkthrough

        return asyncio.run(run_walkthrough(settings, args))
    if not _port_free(args.host, args.legacy_port):
        raise ConfigError(
            "--legacy-port",
            f"port {args.legacy_port} on {args.host} is already in use",
            "stop what uses it or pass another --legacy-port",
        )
    return asyncio.run(_run(settings, args))


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from legacy_emulator.app import create_app
    from legacy_emulator.generator import seed_store
    from strangler.mongo import open_database

    db = open_database("memory://demo")

    def progress(collection: str, done: int, total: int) -> None:
        print(f"\r  seeding {collection}: {done}/{total}   ", end="", file=sys.stderr, flush=True)

    print("1. seeding the legacy store with 'small' data", flush=True)
    summary = await seed_store(db, scale="small", seed=args.seed, progress=progress)
    print(file=sys.stderr)
    for line in summary.lines():
        print(f"   {line}")

    app = create_app(db, jwt_secret=settings.jwt_secret, password_rounds=settings.password_rounds)
    config = uvicorn.Config(app, host=args.host, port=args.legacy_port, log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            serving.result()
            return 2
        await asyncio.sleep(0.05)

    subscription_id, user_id = summary.tenants[0]
    token = mint_token(settings.jwt_secret, user_id, subscription_id)
    workspace = await db["workspace"].find_one(
        {"subscription_id": subscription_id, "d_flag": {"$in": [False, None, "false"]}}
    )
    if workspace is None:
        raise StranglerError(f"the seeded data has no live workspace for {subscription_id}")
    url = (
        f"http://{args.host}:{args.legacy_port}/workspace/getWorkspace"
        f"?workspace_id={workspace['workspace_id']}"
    )
    curl = f"curl -s -H {shlex.quote('Authorization: Bearer ' + token)} {shlex.quote(url)}"
    print(f"2. legacy emulator serving on http://{args.host}:{args.legacy_port}", flush=True)
    print("   try (a workspace tree of the largest tenant):", flush=True)
    print(f"   {curl}", flush=True)
    try:
        if args.check:
            await _check(url, token)
        else:
            print("   Ctrl-C stops the demo.", flush=True)
            await serving
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    return 0


async def _check(url: str, token: str) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
    body: Any = response.json()
    tree = body.get("data") or {}
    folders = tree.get("folders") or []
    jobs = sum(len(folder.get("jobs") or []) for folder in folders)
    print(
        f"   -> HTTP {response.status_code}: workspace {tree.get('workspace_name')!r} with "
        f"{len(folders)} folders and {jobs} jobs"
    )
    if response.status_code != 200 or not folders:
        raise StranglerError(f"the printed request answered HTTP {response.status_code}: {body}")
