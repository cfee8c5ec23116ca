"""``strangler proxy``: serve, check-rules, fence."""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
from contextlib import AsyncExitStack
from typing import Any

from migrators.consistency import ConsistencyStore
from proxy.app import Limits
from proxy.endpoints import ENTITIES
from proxy.fence import MAX_FENCE_SECONDS
from proxy.fence_client import lift_fence, set_fence
from proxy.handlers import HANDLER_MODULES
from proxy.metrics import ProxyMetrics
from proxy.realtime import LiveFanout
from proxy.registry import HandlerDeps, load_handler_modules, required_services
from proxy.rules import load_rules
from proxy.server import ENGINES, ProxyConfig, ProxyInstance, fastest_loop, serve
from proxy.shadow import load_shadow_sink
from proxy.table import compile_table
from proxy.touched import TouchedRecorder
from proxy.upstream import UPSTREAM_CLIENTS, Timeouts
from strangler.config import Settings, load_settings, redact_url
from strangler.errors import ConfigError, ServiceUnavailable

__all__ = ["register"]

log = logging.getLogger("proxy.cli")


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    proxy = subparsers.add_parser(
        "proxy",
        help="the reverse proxy in front of legacy: serve, check rules, fence writes",
        description="The reverse proxy every client goes through: forwards to LEGACY_URL and "
        "routes each entity per routing_rules.yaml.",
    )
    commands = proxy.add_subparsers(dest="proxy_command", metavar="COMMAND", required=True)

    s = commands.add_parser(
        "serve",
        help="run the proxy (and its admin/metrics port)",
        description="Forward every request to LEGACY_URL faithfully, dispatch entities per the "
        "rules file, reload it on change or SIGHUP. Admin and metrics on --admin-port.",
    )
    s.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    s.add_argument("--port", type=int, default=8000, help="client port (default 8000)")
    s.add_argument("--admin-host", default="127.0.0.1", help="admin address (default 127.0.0.1)")
    s.add_argument("--admin-port", type=int, default=9000, help="admin/metrics port (default 9000)")
    s.add_argument("--rules", default="routing_rules.yaml", help="the flag table file")
    s.add_argument(
        "--connect-timeout", type=float, default=3.0, help="seconds to connect to legacy (3)"
    )
    s.add_argument(
        "--read-timeout",
        type=float,
        default=30.0,
        help="seconds legacy may stay silent: for the headers or the next chunk (30)",
    )
    s.add_argument(
        "--watch-interval", type=float, default=1.0, help="seconds between rules file checks (1)"
    )
    s.add_argument(
        "--max-sample-bytes",
        type=int,
        default=Limits.max_sample_bytes,
        help="sampled exchanges larger than this are not compared (1 MiB)",
    )
    s.add_argument(
        "--upstream-client",
        choices=sorted(UPSTREAM_CLIENTS),
        default="aiohttp",
        help="HTTP client for the legacy hop (aiohttp: the measured fastest)",
    )
    s.add_argument(
        "--engine",
        choices=ENGINES,
        default="fast",
        help="fast: legacy-mode requests forwarded by the proxy's own HTTP/1.1 engine, the "
        "rest by the ASGI app in-process (default); asgi: uvicorn serves the ASGI app for all",
    )
    s.add_argument(
        "--shadow-rules",
        default="shadow_rules.yaml",
        help="comparison rules for the shadow comparator (used when the file exists)",
    )
    s.add_argument(
        "--shadow-new-url",
        metavar="URL",
        help="shadow and canary comparisons ask the new side at URL (a proxy serving those "
        "entities in new) instead of running its handlers here: the comparisons' PostgreSQL "
        "work then leaves this process (default: in-process)",
    )
    s.add_argument(
        "--shadow-queue",
        action="store_true",
        help="hand sampled exchanges to 'strangler shadow work' over a Redis Stream instead "
        "of comparing them here: this process then only appends each one (batched, never "
        "waited for by a client); without a worker running, nothing is compared",
    )
    s.add_argument(
        "--redis-prefix",
        default="",
        help="prefix of the live-update channels (as strangler runs work --redis-prefix): "
        "the WebSockets of entities in new are served from them",
    )
    s.set_defaults(handler=_serve)

    c = commands.add_parser(
        "check-rules",
        help="validate a routing rules file and print its table hash",
        description="Validate a rules file as serve would (including registered handlers).",
    )
    c.add_argument("file", help="the rules file, e.g. routing_rules.yaml")
    c.set_defaults(handler=_check_rules)

    f = commands.add_parser(
        "fence",
        help="fence (or unfence) an entity's writes on running proxies",
        description="Writes of a fenced entity get 503 + Retry-After; reads keep flowing.",
    )
    f.add_argument("entity", choices=ENTITIES)
    f.add_argument(
        "--admin",
        action="append",
        required=True,
        metavar="URL",
        help="a proxy's admin URL, e.g. http://127.0.0.1:9000 (repeat for each instance)",
    )
    group = f.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--seconds", type=float, help=f"fence for this long (at most {MAX_FENCE_SECONDS:g})"
    )
    group.add_argument("--lift", action="store_true", help="lift the fence")
    f.set_defaults(handler=_fence)


def _run(coro: Any) -> Any:
    with asyncio.Runner(loop_factory=fastest_loop()) as runner:
        return runner.run(coro)


async def _open_services(
    stack: AsyncExitStack, settings: Settings, needed: frozenset[str]
) -> HandlerDeps:
    pg_pool = redis_client = None
    if "postgres" in needed:
        import asyncpg

        try:
            # min_size=0: no connection at start, so a PostgreSQL outage never stops the
            # proxy from starting and forwarding to legacy; only new-side calls fail (500).
            pg_pool = await asyncpg.create_pool(settings.database_url, min_size=0, max_size=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ServiceUnavailable(
                "DATABASE_URL", redact_url(settings.database_url), str(exc)
            ) from exc
        stack.push_async_callback(pg_pool.close)
    if "redis" in needed:
        import redis.asyncio as aioredis

        redis_client = aioredis.from_url(settings.redis_url)
        stack.push_async_callback(redis_client.aclose)
    return HandlerDeps(settings=settings, pg_pool=pg_pool, redis=redis_client)


def _write_tracking(
    stack: AsyncExitStack, settings: Settings, metrics: ProxyMetrics
) -> tuple[ConsistencyStore, TouchedRecorder]:
    """Read-your-writes pins for canary entities and the touched ids of legacy writes, on a
    Redis client of the proxy's own.

    The client connects on first use (a Redis outage never stops the proxy: canary reads then
    go to legacy, and the sweep finds what the touched ids missed), and its short timeouts
    bound what a hung Redis can add to a request.
    """
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
    stack.push_async_callback(client.aclose)
    return ConsistencyStore(client), TouchedRecorder(client, metrics.registry)


def _queued_sink(stack: AsyncExitStack, settings: Settings, prefix: str) -> Any:
    """The sink of ``--shadow-queue`` (shadow_compare.queue), on a Redis client of its own
    with short timeouts: a slow Redis holds the sink's flushes, never a request."""
    import redis.asyncio as aioredis

    from shadow_compare.queue import QueuedSink

    client = aioredis.from_url(settings.redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)
    stack.push_async_callback(client.aclose)
    return QueuedSink(client, prefix=prefix)


def _live_updates(
    stack: AsyncExitStack, settings: Settings, deps: HandlerDeps, prefix: str
) -> LiveFanout:
    """The WebSockets of entities in new, served over Redis pub/sub (proxy.realtime), on a
    client of their own (its one subscription lives as long as the proxy)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(settings.redis_url)
    stack.push_async_callback(client.aclose)
    return LiveFanout(client, settings.jwt_secret, prefix=prefix, pool=deps.pg_pool)


async def _serve_async(args: argparse.Namespace, settings: Settings) -> None:
    config = ProxyConfig(
        legacy_url=settings.legacy_url,
        rules_path=args.rules,
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        timeouts=Timeouts(connect=args.connect_timeout, read=args.read_timeout),
        limits=Limits(max_sample_bytes=args.max_sample_bytes),
        watch_interval=args.watch_interval,
        upstream_client=args.upstream_client,
        engine=args.engine,
        shadow_new_url=args.shadow_new_url,
    )
    async with AsyncExitStack() as stack:
        deps = await _open_services(stack, settings, required_services(HANDLER_MODULES))
        registry = load_handler_modules(HANDLER_MODULES, deps)
        metrics = ProxyMetrics()
        shadow_rules = args.shadow_rules if pathlib.Path(args.shadow_rules).is_file() else None  # noqa: ASYNC240 - once, at start
        if args.shadow_queue:
            sink, runner = _queued_sink(stack, settings, args.redis_prefix), None
            await sink.start()
            stack.push_async_callback(sink.stop)
        else:
            sink, runner = load_shadow_sink(
                {
                    "database_url": settings.database_url,
                    "rules_path": None if shadow_rules is None else pathlib.Path(shadow_rules),
                    "registry": metrics.registry,
                }
            )
        if runner is not None:
            await runner.start()
            stack.push_async_callback(runner.stop)
        consistency, touched = _write_tracking(stack, settings, metrics)
        instance = ProxyInstance(
            config,
            settings.jwt_secret,
            registry,
            sink,
            metrics,
            consistency=consistency,
            touched=touched,
            live=_live_updates(stack, settings, deps, args.redis_prefix),
        )
        try:
            await serve(instance)
        except OSError as exc:  # a port in use, an address not ours
            raise ConfigError(
                "--port/--admin-port", f"cannot listen ({exc.strerror})", "choose free ports"
            ) from exc


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    _run(_serve_async(args, settings))
    return 0


def _check_rules(args: argparse.Namespace) -> int:
    settings = load_settings()
    # register() must do no I/O, so handlers can be listed without opening any pool.
    registry = load_handler_modules(HANDLER_MODULES, HandlerDeps(settings=settings))
    table = compile_table(load_rules(args.file, registry.has), registry.get)
    modes = ", ".join(f"{name}={plan.mode}" for name, plan in table.entities.items())
    print(f"{args.file}: valid; table hash {table.table_hash}; {modes}")
    return 0


def _fence(args: argparse.Namespace) -> int:
    if args.lift:
        results = _run(lift_fence(args.admin, args.entity))
        for r in results:
            print(f"{r.admin_url}: {args.entity} fence lifted (was set: {r.body.get('lifted')})")
        return 0
    if not 0 < args.seconds <= MAX_FENCE_SECONDS:
        raise ConfigError(
            "--seconds", f"{args.seconds:g} is out of range", f"give 0 < N <= {MAX_FENCE_SECONDS:g}"
        )
    results = _run(set_fence(args.admin, args.entity, args.seconds))
    for r in results:
        print(f"{r.admin_url}: {args.entity} writes fenced for {args.seconds:g} s")
    return 0
