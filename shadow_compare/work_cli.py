"""``strangler shadow work``: the comparator as a process of its own (shadow_compare.queue).

Exit codes: 0 stopped by SIGTERM/SIGINT, 2 could not run (a setting or a service: the
one-line reason says which).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, start_http_server
from redis.exceptions import RedisError

from shadow_compare.queue import ExchangeWorker
from shadow_compare.replay import HttpSide
from shadow_compare.runner import DEFAULT_CONCURRENCY, build_runner
from strangler.cli import run_async
from strangler.config import load_settings, redact_url
from strangler.errors import ConfigError, ServiceUnavailable

__all__ = ["add_work_parser"]

log = logging.getLogger("shadow_compare.work")


def add_work_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    work = commands.add_parser(
        "work",
        help="compare the exchanges proxies queue with --shadow-queue (the comparator apart)",
        description="Take the sampled exchanges that 'proxy serve --shadow-queue' appends to "
        "the Redis Stream (REDIS_URL), ask legacy (--legacy, default LEGACY_URL) and the new "
        "side (--new: a proxy serving the compared entities in new) again as the in-process "
        "comparator would, compare, and store the outcomes in DATABASE_URL for 'shadow "
        "report' and the gates. Run several for more throughput (one consumer group). An "
        "exchange older than --max-wait seconds when it arrives is counted stale, not compared.",
    )
    work.add_argument("--new", required=True, help="new side base URL, e.g. http://127.0.0.1:8002")
    work.add_argument("--legacy", help="legacy base URL (default: LEGACY_URL)")
    work.add_argument(
        "--rules", type=Path, default=Path("shadow_rules.yaml"),
        help="comparison rules (default shadow_rules.yaml; defaults only if it does not exist)",
    )  # fmt: skip
    work.add_argument(
        "--redis-prefix", default="", help="prefix of the Redis keys (as the proxy's)"
    )
    work.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY,
        help=f"comparisons in flight (default {DEFAULT_CONCURRENCY})",
    )  # fmt: skip
    work.add_argument(
        "--max-wait", type=float, default=1.0,
        help="seconds after the client's answer past which an exchange is stale (default 1)",
    )  # fmt: skip
    work.add_argument(
        "--metrics-port", type=int, default=0,
        help="serve Prometheus metrics (compared, stale, dropped...) on this port (0: none)",
    )  # fmt: skip
    work.add_argument("--metrics-host", default="127.0.0.1", help="address of the metrics port")
    work.set_defaults(handler=_work)


def _work(args: argparse.Namespace) -> int:
    if args.concurrency < 1 or args.max_wait <= 0:
        raise ConfigError("--concurrency/--max-wait", "must be positive", "e.g. 4 and 1.0")
    return run_async(_work_async(args))


async def _work_async(args: argparse.Namespace) -> int:
    settings = load_settings()
    legacy_url = args.legacy or settings.legacy_url
    registry = CollectorRegistry()
    rules = args.rules if args.rules.is_file() else None
    runner = build_runner(
        database_url=settings.database_url, rules_path=rules, registry=registry,
        concurrency=args.concurrency, max_wait_seconds=args.max_wait,
    )  # fmt: skip
    redis = aioredis.from_url(settings.redis_url)
    limits = httpx.Limits(max_connections=4 * args.concurrency)
    async with (
        httpx.AsyncClient(base_url=legacy_url, timeout=10.0, limits=limits) as legacy_client,
        httpx.AsyncClient(base_url=args.new, timeout=10.0, limits=limits) as new_client,
    ):
        worker = ExchangeWorker(
            redis, runner,
            HttpSide("legacy", "--legacy", legacy_client), HttpSide("new", "--new", new_client),
            registry, prefix=args.redis_prefix,
        )  # fmt: skip
        try:
            await worker.ensure_group()  # Redis down at the start: say so, not a traceback
        except (RedisError, OSError) as exc:
            await redis.aclose()
            raise ServiceUnavailable("REDIS_URL", redact_url(settings.redis_url), str(exc)) from exc
        if args.metrics_port:
            start_http_server(args.metrics_port, args.metrics_host, registry=registry)
        await runner.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"shadow work: comparing exchanges from {worker.key} on "
            f"{redact_url(settings.redis_url)}; legacy {legacy_url}, new {args.new}; outcomes "
            f"to {redact_url(settings.database_url)}",
            flush=True,
        )
        reading = asyncio.create_task(worker.run(stop))
        stopped = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({reading, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if reading in done:
                reading.result()  # a Redis failure while reading: reported, exit 2
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("REDIS_URL", redact_url(settings.redis_url), str(exc)) from exc
        finally:
            reading.cancel()
            stopped.cancel()
            await asyncio.gather(reading, stopped, return_exceptions=True)
            await runner.stop()
            await redis.aclose()
    print("shadow work: stopped", flush=True)
    return 0
