"""``strangler runs work``: the run worker of the new side (proxy.runs_worker)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.runs_worker import RunWorker
from strangler.cli import run_async
from strangler.config import load_settings, redact_url
from strangler.errors import ServiceUnavailable

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    group = subparsers.add_parser(
        "runs",
        help="drive job runs started on the new side (the run queue on Redis Streams)",
        description="Job runs started by runNow on the new side wait in the Redis Stream "
        "runs:queue (docs/runs.md).",
    )
    commands = group.add_subparsers(dest="runs_command", metavar="RUNS_COMMAND")
    work = commands.add_parser(
        "work",
        help="publish queued runs and drive them to their final status",
        description="Publish the runs runNow committed (run_dispatch) to the stream, read it "
        "in the consumer group 'runners' and drive each run queued -> running -> "
        "completed|failed as legacy's simulator does, taking over the messages of a worker "
        "that died. Run as many as you like, each with its own --consumer name. Stops on "
        "SIGTERM or Ctrl-C, leaving unfinished messages to the others. Uses DATABASE_URL "
        "and REDIS_URL.",
    )
    work.add_argument(
        "--consumer",
        default=f"{socket.gethostname()}-{os.getpid()}",
        help="this worker's name in the consumer group (host-pid)",
    )
    work.add_argument("--concurrency", type=_positive, default=8, help="runs at once (8)")
    work.add_argument(
        "--step-seconds", type=float, default=1.0, help="pause between a run's steps (1.0)"
    )
    work.add_argument(
        "--claim-idle-ms",
        type=_positive,
        default=30_000,
        help="take over another consumer's message unacknowledged this long (30000)",
    )
    work.add_argument(
        "--max-deliveries",
        type=_positive,
        default=5,
        help="deliveries before a message goes to runs:dead and its run fails (5)",
    )
    work.add_argument("--redis-prefix", default="", help="prefix of the Redis keys")
    work.set_defaults(handler=_work)
    group.set_defaults(handler=lambda _args: group.print_help() or 2)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _work(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def work() -> None:
        try:
            pool = await asyncpg.create_pool(settings.database_url, min_size=2, max_size=12)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ServiceUnavailable("DATABASE_URL", "PostgreSQL", str(exc)) from exc
        redis = aioredis.from_url(settings.redis_url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        worker = RunWorker(
            pool, redis, consumer=args.consumer, prefix=args.redis_prefix,
            step_seconds=args.step_seconds, concurrency=args.concurrency,
            claim_idle_ms=args.claim_idle_ms, max_deliveries=args.max_deliveries,
            listen_url=settings.database_url,
        )  # fmt: skip
        print(
            f"run worker {args.consumer}: {redact_url(settings.database_url)}, "
            f"{redact_url(settings.redis_url)}, stream {worker.stream}",
            flush=True,
        )
        try:
            try:
                await worker.ensure_group()  # Redis down at the start: say so, not a traceback
            except (RedisError, OSError) as exc:
                raise ServiceUnavailable(
                    "REDIS_URL", redact_url(settings.redis_url), str(exc)
                ) from exc
            counts = await worker.run(stop)
        finally:
            await redis.aclose()
            await pool.close()
        print(
            f"run worker {args.consumer} stopped: {counts.finished} run(s) finished, "
            f"{counts.published} published, {counts.claimed} claimed, {counts.dead} dead",
            flush=True,
        )

    run_async(work())
    return 0
