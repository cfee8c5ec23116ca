"""``strangler legacy indexes --plan|--apply``: the legacy database's indexes
(:mod:`legacy_emulator.indexes`)."""

from __future__ import annotations

import argparse
import asyncio

from legacy_emulator.indexes import apply_plan, plan_indexes
from strangler.config import load_settings, redact_url
from strangler.mongo import open_database, ping

__all__ = ["register_indexes"]


def register_indexes(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = commands.add_parser(
        "indexes",
        help="plan or create the legacy database's indexes (relief and TTLs)",
        description="Indexes for the legacy MongoDB that MONGO_URL names: 'relief' serves the "
        "legacy API's queries and the migration's reads while both run (none unique: legacy "
        "data holds duplicates); 'retained' puts TTLs on the collections MongoDB keeps after "
        "the migration (execution logs, notifications, dashboard cache). --plan changes "
        "nothing; --apply creates what is missing, idempotently. An existing index with the "
        "same keys and other options is reported as a clash, never dropped.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--plan", action="store_true", help="list what exists and what to create")
    action.add_argument("--apply", action="store_true", help="create the missing indexes")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        choices=("relief", "retained"),
        help="only this set (repeatable; default both)",
    )
    parser.set_defaults(handler=_indexes)


def _indexes(args: argparse.Namespace) -> int:
    settings = load_settings()
    sets = args.sets or ["relief", "retained"]

    async def run() -> int:
        db = open_database(settings.mongo_url)
        await ping(db, settings.mongo_url)
        print(f"legacy database: {redact_url(settings.mongo_url)}")
        if settings.mongo_in_process:
            print("note: MONGO_URL is an in-process store; it holds nothing and is gone at exit")
        plan = await plan_indexes(db, sets)
        for line in plan.lines():
            print(line)
        if args.plan:
            return 1 if plan.clashes else 0
        created = await apply_plan(db, plan)
        after = await plan_indexes(db, sets)
        print(f"created {created} index(es); {len(after.missing)} still missing")
        return 1 if after.missing or after.clashes else 0

    return asyncio.run(run())
