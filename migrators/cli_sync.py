"""``strangler sync ENTITY|all``: the forward sync workers (MongoDB -> PostgreSQL)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis

from migrators.consistency import ConsistencyStore
from migrators.crypto import SecretBox
from migrators.feeds import Feed, FeedBatch
from migrators.feeds.change_stream import (
    ChangeStreamFeed,
    HistoryRecovery,
    MongoChangeStreamSource,
)
from migrators.feeds.metrics import SyncMetrics, serve_metrics
from migrators.feeds.polling import PollingFeed
from migrators.feeds.sweep import Sweeper, pass_seconds
from migrators.registry import default_registry
from migrators.spec import EntitySpec
from migrators.stores import legacy_database
from migrators.sync import SyncOptions, SyncWorker
from migrators.touched import TouchedReader
from strangler.cli import run_async
from strangler.config import Settings, load_settings
from strangler.errors import ConfigError, DataError
from strangler.mongo import Database, close_database

__all__ = ["register", "run_sync"]

FEEDS = ("polling", "change-stream")
PROGRESS_EVERY_SECONDS = 10.0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    names = ", ".join(spec.name for spec in default_registry())
    parser = subparsers.add_parser(
        "sync",
        help="keep PostgreSQL in step with the legacy collections (forward sync worker)",
        description="Apply every change of an entity's legacy collection to PostgreSQL, batch "
        "by batch, each batch in one transaction with its feed position. Start as many workers "
        "as you like: one leads each entity, the others stand by and take over when it dies. "
        "Events that keep failing go to the dead letters ('strangler dlq list').",
    )
    parser.add_argument("entity", metavar="ENTITY", help=f"one of: {names or 'none'}; or 'all'")
    parser.add_argument(
        "--feed",
        choices=FEEDS,
        default="polling",
        help="polling: touched ids from the proxy plus the anti-entropy sweep, for a standalone "
        "mongod (default); change-stream: MongoDB change streams (replica sets; a token past the "
        "server's history is recovered from by one full sweep pass, then a new stream)",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="stop once the feed has caught up (polling: after "
        "one full sweep pass), instead of running until interrupted",
    )
    parser.add_argument("--batch-size", type=int, default=500, help="events per transaction")
    parser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics on this port (127.0.0.1)"
    )
    parser.add_argument(
        "--sweep-interval", type=float, default=5.0, help="seconds between sweep rounds"
    )
    parser.add_argument(
        "--buckets",
        type=int,
        default=64,
        help="sweep buckets (all of them; also the change-stream feed's recovery sweep)",
    )
    parser.add_argument(
        "--buckets-per-round", type=int, default=16, help="sweep buckets compared per round"
    )
    parser.set_defaults(handler=_handle)


def _feed_factory(
    spec: EntitySpec,
    args: argparse.Namespace,
    db: Database,
    redis: aioredis.Redis | None,
    box: SecretBox,
) -> Any:
    collection = db[spec.collection]

    def sweeper() -> Sweeper:
        return Sweeper(
            spec,
            collection,
            box.context(),
            buckets=args.buckets,
            buckets_per_round=args.buckets_per_round,
            id_column=spec.legacy_id_column or spec.id_field,
        )

    if args.feed == "change-stream":

        def change_stream(conn: Any) -> Feed:
            # A token past the server's history is recovered from by a full sweep pass.
            recovery = HistoryRecovery(spec, collection, sweeper(), conn)
            return ChangeStreamFeed(spec, MongoChangeStreamSource(collection), recovery=recovery)

        return change_stream
    assert redis is not None

    def polling(conn: Any) -> Feed:
        return PollingFeed(
            spec,
            collection,
            TouchedReader(redis, spec.name),
            sweeper(),
            conn,
            sweep_interval=args.sweep_interval,
        )

    return polling


def _check(args: argparse.Namespace, settings: Settings) -> None:
    if args.batch_size <= 0:
        raise DataError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if not 0 < args.buckets_per_round <= args.buckets:
        raise DataError("--buckets-per-round must be between 1 and --buckets")
    if args.sweep_interval <= 0:
        raise DataError("--sweep-interval must be positive")
    if args.feed == "change-stream" and settings.mongo_in_process:
        raise ConfigError(
            "MONGO_URL",
            "the in-process store (memory://) has no change streams",
            "use --feed polling, or point MONGO_URL at a replica set",
        )


async def run_sync(settings: Settings, args: argparse.Namespace) -> list[SyncWorker]:
    _check(args, settings)
    specs = default_registry().select(args.entity)
    box = SecretBox(settings.connector_keys)
    db = await legacy_database(settings)
    # Redis carries the touched ids (polling feed) and, for every feed, the watermarks that
    # release the proxies' read-your-writes pins once a write is applied.
    redis = aioredis.from_url(settings.redis_url)
    watermarks = ConsistencyStore(redis)
    metrics = SyncMetrics()
    if args.metrics_port:
        serve_metrics(metrics, args.metrics_port)
        print(f"metrics on http://127.0.0.1:{args.metrics_port}/metrics", flush=True)
    if args.feed == "polling":
        bound = pass_seconds(args.buckets, args.buckets_per_round, args.sweep_interval)
        print(f"sweep: a write that bypasses the proxy is found within {bound:.0f} s", flush=True)
    options = SyncOptions(batch_size=args.batch_size)
    workers = [
        SyncWorker(
            spec,
            _feed_factory(spec, args, db, redis, box),
            settings.database_url,
            box.context(),
            options=options,
            metrics=metrics,
            watermarks=watermarks,
        )
        for spec in specs
    ]
    last_said: dict[str, float] = {}

    def progress(worker: SyncWorker) -> Any:
        def observe(batch: FeedBatch, committed_at: float) -> None:
            now = time.monotonic()
            if now - last_said.get(worker.spec.name, 0.0) < PROGRESS_EVERY_SECONDS:
                return
            last_said[worker.spec.name] = now
            times = [e.occurred_at for e in batch.events if e.occurred_at is not None]
            lag = f"{committed_at - min(times):.2f} s" if times else "-"
            print(
                f"{worker.spec.name}: {worker.events_applied} events applied, "
                f"{worker.dead_letters} dead letters, lag {lag}",
                flush=True,
            )

        return observe

    for worker in workers:
        worker.commit_observers.append(progress(worker))
    try:
        if args.once:
            # In dependency order, so that a connector's tenant row exists before it is read.
            for worker in workers:
                await worker.run(once=True)
        else:
            await asyncio.gather(*(worker.run() for worker in workers))
    finally:
        await redis.aclose()
        await close_database(db)
    for worker in workers:
        print(
            f"{worker.spec.name}: {worker.events_applied} events applied, "
            f"{worker.dead_letters} dead letters",
            flush=True,
        )
    return workers


def _handle(args: argparse.Namespace) -> int:
    settings = load_settings()
    logging.getLogger("migrators.sync").setLevel(logging.INFO)
    workers = run_async(run_sync(settings, args))
    return 1 if any(w.dead_letters for w in workers) and args.once else 0
