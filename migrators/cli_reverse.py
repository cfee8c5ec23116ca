"""``strangler reverse-sync [ENTITY|all]``: carry the new side's writes back into MongoDB."""

from __future__ import annotations

import argparse
import asyncio

import asyncpg
import redis.asyncio as aioredis

from migrators.consistency import ConsistencyStore
from migrators.crypto import SecretBox
from migrators.registry import default_registry
from migrators.retirement import read_retirement, refuse_if_retired
from migrators.reverse import ReverseResult, apply_pending
from migrators.stores import legacy_database
from strangler.cli import run_async
from strangler.config import Settings, load_settings, redact_url
from strangler.errors import DataError, ServiceUnavailable
from strangler.mongo import close_database

__all__ = ["register", "run_reverse_sync"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    reversible = [spec.name for spec in default_registry() if spec.to_document is not None]
    parser = subparsers.add_parser(
        "reverse-sync",
        help="apply the new side's writes (the outbox) back into the legacy documents",
        description="While an entity is in mode 'new', PostgreSQL is its source of truth: "
        "every write there queued an outbox row. This applies the pending rows in order to "
        "the legacy MongoDB documents (and their userActivity entries), so that switching "
        "the entity back to 'legacy' loses nothing. Safe to repeat and to run as several "
        "copies (one applies each entity at a time). After 'strangler retire' it refuses "
        "to start, and a running one stops.",
    )
    parser.add_argument(
        "entity",
        metavar="ENTITY",
        nargs="?",
        default="all",
        help=f"one of: {', '.join(reversible) or 'none'}; or 'all' (default)",
    )
    parser.add_argument("--once", action="store_true", help="apply what is pending now, then exit")
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between passes (default 0.5)"
    )
    parser.add_argument("--batch", type=int, default=200, help="outbox rows read per query")
    parser.set_defaults(handler=_handle)


async def run_reverse_sync(settings: Settings, args: argparse.Namespace) -> list[ReverseResult]:
    if args.batch <= 0 or args.interval <= 0:
        raise DataError("--batch and --interval must be positive")
    specs = [s for s in default_registry().select(args.entity) if s.to_document is not None]
    if not specs:
        raise DataError(f"{args.entity!r} has no reversible entity (no to_document mapping)")
    context = SecretBox(settings.connector_keys).context()
    try:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(
            "DATABASE_URL", redact_url(settings.database_url), type(exc).__name__
        ) from exc
    try:  # asked before MongoDB is: after retirement it may be gone
        async with pool.acquire() as conn:
            await refuse_if_retired(conn, "the reverse sync does not start")
        db = await legacy_database(settings)
    except BaseException:
        await pool.close()
        raise
    totals = {spec.name: ReverseResult(spec.name) for spec in specs}
    # the reverse watermarks on Redis: a proxy holding a request that names an id written
    # on the new side lets it through once this has carried the write (migrators.consistency)
    redis = aioredis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0)
    watermarks = ConsistencyStore(redis)
    try:
        while True:
            async with pool.acquire() as conn:
                retired = await read_retirement(conn)
            if retired is not None:  # retired while running: nothing is carried back any more
                print(f"{retired.describe()}: the reverse sync stops", flush=True)
                break
            for spec in specs:
                result = await apply_pending(pool, db, spec, context, batch=args.batch,
                                             watermarks=watermarks)  # fmt: skip
                total = totals[spec.name]
                total.applied += result.applied
                total.failed += result.failed
                total.pending = result.pending
                total.errors.extend(result.errors)
                if result.applied or result.failed:
                    print(
                        f"{spec.name}: {result.applied} applied, {result.failed} failed"
                        + (f" ({result.errors[-1]})" if result.errors else ""),
                        flush=True,
                    )
            if args.once:
                break
            await asyncio.sleep(args.interval)
    finally:
        await redis.aclose()
        await pool.close()
        await close_database(db)
    for total in totals.values():
        print(
            f"{total.entity}: {total.applied} outbox row(s) applied, {total.failed} failed, "
            f"{total.pending} still pending",
            flush=True,
        )
    return list(totals.values())


def _handle(args: argparse.Namespace) -> int:
    results = run_async(run_reverse_sync(load_settings(), args))
    return 1 if any(result.failed for result in results) else 0
