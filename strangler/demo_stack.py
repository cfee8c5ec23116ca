"""The parts of the demo, started in one process on loopback (the in-process store cannot be
shared between processes): seeded legacy store, PostgreSQL schema, legacy emulator, proxy
with its new-side handlers and shadow comparator, backfill, forward and reverse syncs.

Each part is the project's own code, started as ``strangler proxy serve``, ``strangler sync``
(polling feed: touched ids + sweep, as for a standalone ``mongod``) and ``strangler
reverse-sync`` start it; only the sizes (sweep interval, heartbeats) are shortened so the
walk-through fits in a couple of minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
import uvicorn

from legacy_emulator.app import create_app
from legacy_emulator.generator import SeedSummary, seed_store
from migrators.backfill import backfill_entity
from migrators.consistency import ConsistencyStore
from migrators.crypto import SecretBox
from migrators.feeds.metrics import SyncMetrics
from migrators.feeds.polling import PollingFeed
from migrators.feeds.sweep import Sweeper
from migrators.registry import default_registry
from migrators.reverse import apply_pending
from migrators.spec import EntitySpec
from migrators.sync import SyncOptions, SyncWorker
from migrators.touched import TouchedReader
from proxy.handlers import HANDLER_MODULES
from proxy.metrics import ProxyMetrics
from proxy.realtime import LiveFanout
from proxy.registry import HandlerDeps, load_handler_modules
from proxy.server import ProxyConfig, ProxyInstance
from proxy.touched import TouchedRecorder
from proxy.upstream import Timeouts
from schema.connect import connect, database_name
from schema.runner import upgrade
from shadow_compare.recorder import BufferedRecorder
from shadow_compare.rules import load_rules
from shadow_compare.runner import ShadowRunner
from strangler.config import DEFAULT_DATABASE_URL, Settings
from strangler.errors import ConfigError, StranglerError
from strangler.mongo import Database, open_database

__all__ = ["DEMO_DATABASE", "DemoStack", "demo_database_url", "group_specs"]

REPO = Path(__file__).resolve().parents[1]
DEMO_DATABASE = "uzo_demo"
# Migration entities no client write names (their documents have no id in any answer).
HISTORY = frozenset({"workflow_versions", "workflow_backups"})
# The comparator re-reads a differing read 4 times (0.5, 1, 2, 4 s later): a difference gone
# within that window, longer than the history sweep's pass, is lag, not a regression.
REREADS, REREAD_DELAY = 4, 0.5
COMPARE_TIMEOUT = 15.0  # above the re-reads' 7.5 s, or a settling comparison is abandoned
# The entities the flags walk, in the order the architecture review migrates them.
WALKED = ("connectors", "workspaces", "users", "groups", "roles", "job_runs", "activity")
RUN_STEP_SECONDS = 0.5  # the run worker's pause between a run's steps

Say = Callable[[str], None]


def demo_database_url(settings: Settings, reset_named: bool) -> tuple[str, str]:
    """(the database URL the demo uses, what to say about it).

    DATABASE_URL left at its default: the demo's own database ``uzo_demo`` on that server,
    reset at every start. A database the user named is reset only with --reset-database.
    """
    url = settings.database_url
    if url == DEFAULT_DATABASE_URL:
        url = _with_database(url, DEMO_DATABASE)
        return url, f"database {DEMO_DATABASE} (the demo's own; dropped and created afresh)"
    if not reset_named:
        raise ConfigError(
            "DATABASE_URL",
            f"names the database {database_name(url)!r}, which the demo would drop and recreate",
            "unset DATABASE_URL (the demo then uses its own database uzo_demo), or pass "
            "--reset-database to let it reset the one you named",
        )
    return url, f"database {database_name(url)} (reset as --reset-database asked)"


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def group_specs(entity: str) -> list[EntitySpec]:
    """The migration entities that switch with a flag entity (the workspace tree is four)."""
    return default_registry().group(entity)


# Share of the walked entities' reads compared: as many as the comparator keeps up with on
# two cores while everything else runs (a backlog would compare answers seconds apart).
SAMPLE_RATE = 0.3


def _sampled_rules(text: str) -> str:
    """The shipped flag table with a share of the walked entities' reads compared, so the
    shadow report has evidence after a few seconds of traffic."""
    for entity in WALKED:
        text, count = re.subn(
            rf"(\n  {entity}:\n    mode: \w+\n)",
            rf"\1    sample_rate: {SAMPLE_RATE}\n",
            text,
            count=1,
        )
        if count != 1:
            raise ConfigError("routing_rules.yaml", f"has no '{entity}: mode:' entry", "restore it")
    return text


STOP_SECONDS = 10.0  # for a part of the stack to stop once asked, before it is cancelled


async def _cancelled(task: asyncio.Task[Any], within: float = 60.0) -> bool:
    """Cancel ``task`` and wait for it to end, cancelling it again every second: on Python
    3.11 a cancellation that meets a completing ``asyncio.wait_for`` inside a client library
    can be swallowed, and the worker would go on as if never asked."""
    deadline = asyncio.get_running_loop().time() + within
    while not task.done():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
    return True


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield  # Ctrl-C is the demo's to handle


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            "--legacy-port", f"cannot listen on {host}:{port} ({exc.strerror})", "pick a free one"
        ) from exc
    sock.listen(512)
    sock.setblocking(False)
    return sock


@dataclasses.dataclass
class StackOptions:
    host: str = "127.0.0.1"
    legacy_port: int = 8001
    proxy_port: int = 8000
    admin_port: int = 9000
    seed: int = 1
    # The sweep finds what no client write names: a full pass every 4 x 4 s, a quarter of
    # the documents mapped per round. History documents (versions, backups) have no id in
    # any answer, so the sweep is how they arrive at all: a pass every 4 x 1 s for them.
    sweep_interval: float = 4.0
    sweep_buckets: int = 16
    sweep_buckets_per_round: int = 4
    history_sweep_interval: float = 1.0
    history_buckets_per_round: int = 4


class DemoStack:
    """Everything the walk-through runs on; :meth:`close` stops it all."""

    def __init__(self, settings: Settings, options: StackOptions, say: Say) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        # One in-process store for every part; settings point every reader at it.
        self.settings = dataclasses.replace(settings, mongo_url=f"memory://demo-{self.run_id}")
        self.options = options
        self.say = say
        self.db: Database = open_database(self.settings.mongo_url)
        self.context = SecretBox(settings.connector_keys).context()
        self.redis_prefix = f"strangler-demo:{self.run_id}:"
        self.summary: SeedSummary | None = None
        self.legacy_url = ""
        self.reverse_task: asyncio.Task[None] | None = None
        self._stop_legacy: Callable[[], Awaitable[None]] | None = None
        self.rules_path = ""
        self.pool: asyncpg.Pool | None = None
        self.redis: aioredis.Redis | None = None
        self.proxy: ProxyInstance | None = None
        self.sync_metrics = SyncMetrics()
        self.workers: dict[str, tuple[SyncWorker, asyncio.Task[None]]] = {}
        self._stack = contextlib.AsyncExitStack()
        self._tempdir = tempfile.TemporaryDirectory(prefix="strangler-demo-")
        self.consistency: ConsistencyStore | None = None

    # --- start -------------------------------------------------------------------------

    async def seed(self) -> SeedSummary:
        self.summary = await seed_store(self.db, scale="small", seed=self.options.seed)
        return self.summary

    async def reset_database(self, database_url: str) -> None:
        name = database_name(database_url)
        admin = await connect(_with_database(database_url, "postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        await upgrade(database_url, progress=lambda _line: None)
        self.settings = dataclasses.replace(self.settings, database_url=database_url)

    async def serve_legacy(self) -> str:
        app = create_app(
            self.db,
            jwt_secret=self.settings.jwt_secret,
            password_rounds=self.settings.password_rounds,
        )
        sock = _listen(self.options.host, self.options.legacy_port)
        server = _QuietServer(
            uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                await task
            await asyncio.sleep(0.02)

        async def stop() -> None:
            server.should_exit = True
            # uvicorn waits for every open connection to end; a client that keeps one
            # (a socket the proxy tunnels) must not hold the stack's close for ever
            await asyncio.wait([task], timeout=STOP_SECONDS)
            if not task.done():
                server.force_exit = True  # a moment to close its sockets before a cancel
                await asyncio.wait([task], timeout=1.0)
            await self._ended(task, "the legacy emulator")
            sock.close()

        self._stop_legacy = stop
        self._stack.push_async_callback(stop)
        self.legacy_url = f"http://{self.options.host}:{sock.getsockname()[1]}"
        self.settings = dataclasses.replace(self.settings, legacy_url=self.legacy_url)
        return self.legacy_url

    async def backfill(self) -> list[str]:
        lines = []
        conn = await connect(self.settings.database_url)
        try:
            for spec in default_registry():
                summary = await backfill_entity(self.db, conn, spec, self.context)
                result = summary.result
                quarantined = sum(result.quarantined.values())
                lines.append(
                    f"{spec.name:<18} {summary.total:>5} documents -> {result.written:>5} rows, "
                    f"{quarantined} quarantined ({summary.seconds:.2f} s)"
                )
        finally:
            await conn.close()
        return lines

    async def serve_proxy(self) -> ProxyInstance:
        self.pool = await asyncpg.create_pool(self.settings.database_url, min_size=1, max_size=8)
        self._stack.push_async_callback(self.pool.close)
        self.redis = aioredis.from_url(self.settings.redis_url)
        self._stack.push_async_callback(self._drop_redis_keys)
        self.consistency = ConsistencyStore(self.redis, prefix=self.redis_prefix + "ryw:")
        deps = HandlerDeps(settings=self.settings, pg_pool=self.pool, redis=self.redis)
        registry = load_handler_modules(HANDLER_MODULES, deps)
        metrics = ProxyMetrics()
        runner = ShadowRunner(
            rules=load_rules(REPO / "shadow_rules.yaml"),
            registry=metrics.registry,
            recorder=BufferedRecorder(self.settings.database_url, metrics.registry),
            rereads=REREADS,
            reread_delay_seconds=REREAD_DELAY,
            timeout_seconds=COMPARE_TIMEOUT,
        )
        await runner.start()
        sink = runner
        rules = Path(self._tempdir.name) / "routing_rules.yaml"
        rules.write_text(_sampled_rules((REPO / "routing_rules.yaml").read_text()))
        self.rules_path = str(rules)
        config = ProxyConfig(
            legacy_url=self.legacy_url,
            rules_path=self.rules_path,
            host=self.options.host,
            port=self.options.proxy_port,
            admin_host=self.options.host,
            admin_port=self.options.admin_port,
            timeouts=Timeouts(connect=3.0, read=30.0),
            watch_interval=0.2,
            instance=f"demo-{self.run_id}",
        )
        touched = TouchedRecorder(self.redis, metrics.registry, prefix=self.redis_prefix)
        # /ws/runNow and /ws/activity served from Redis once an entity is in new, fed by
        # the run worker and its activity relay (start_runs), as 'proxy serve' does.
        live = LiveFanout(self.redis, self.settings.jwt_secret, prefix=self.redis_prefix,
                          pool=self.pool, instance_id=f"demo-{self.run_id}")  # fmt: skip
        proxy = ProxyInstance(
            config,
            self.settings.jwt_secret,
            registry,
            sink,
            metrics,
            consistency=self.consistency,
            touched=touched,
            live=live,
        )
        try:
            await proxy.start()
        except OSError as exc:
            await runner.stop()
            raise ConfigError(
                "--proxy-port/--admin-port", f"cannot listen ({exc.strerror})", "pick free ports"
            ) from exc
        self._stack.push_async_callback(proxy.stop)
        # Stopped before the proxy, whose upstream client its re-reads of legacy use.
        self._stack.push_async_callback(runner.stop)
        self.proxy = proxy
        return proxy

    # --- syncs -------------------------------------------------------------------------

    def _feed_factory(self, spec: EntitySpec) -> Any:
        assert self.redis is not None
        redis, collection = self.redis, self.db[spec.collection]

        history = spec.name in HISTORY
        interval = self.options.history_sweep_interval if history else self.options.sweep_interval
        per_round = (
            self.options.history_buckets_per_round
            if history
            else self.options.sweep_buckets_per_round
        )

        def polling(conn: asyncpg.Connection) -> PollingFeed:
            sweeper = Sweeper(
                spec,
                collection,
                self.context,
                buckets=self.options.sweep_buckets,
                buckets_per_round=per_round,
                id_column=spec.legacy_id_column or spec.id_field,
            )
            reader = TouchedReader(redis, spec.name, prefix=self.redis_prefix)
            return PollingFeed(
                spec,
                collection,
                reader,
                sweeper,
                conn,
                sweep_interval=interval,
                block_ms=100,
            )

        return polling

    def start_forward(self, specs: Iterable[EntitySpec]) -> None:
        options = SyncOptions(
            heartbeat_seconds=0.5, standby_poll_seconds=0.2, reconnect_wait_seconds=0.2
        )
        for spec in specs:
            if spec.name in self.workers:
                continue
            worker = SyncWorker(
                spec,
                self._feed_factory(spec),
                self.settings.database_url,
                self.context,
                options=options,
                metrics=self.sync_metrics,
                name=f"demo-{self.run_id}",
                watermarks=self.consistency,
            )
            self.workers[spec.name] = (worker, asyncio.create_task(worker.run()))

    async def stop_forward(self, specs: Iterable[EntitySpec]) -> None:
        for spec in specs:
            entry = self.workers.pop(spec.name, None)
            if entry is not None and not await _cancelled(entry[1]):
                self.say(f"   the {spec.name} sync did not stop within 60 s of its cancel")

    def forward_failures(self) -> list[str]:
        """Workers that stopped on an error (a finding: the demo reports it)."""
        failed = []
        for name, (_worker, task) in self.workers.items():
            if task.done() and not task.cancelled() and task.exception() is not None:
                failed.append(f"{name}: {task.exception()}")
        return failed

    async def _reverse_loop(self) -> None:
        assert self.pool is not None
        specs = [spec for spec in default_registry() if spec.to_document is not None]
        while True:
            for spec in specs:
                try:
                    await apply_pending(self.pool, self.db, spec, self.context,
                                        watermarks=self.consistency)  # fmt: skip
                except StranglerError as exc:  # the row stays pending; the next pass retries
                    self.say(f"   reverse sync of {spec.name}: {exc}")
            await asyncio.sleep(0.1)

    def start_runs(self) -> None:
        """The run worker (``strangler runs work``): runs started on the new side, driven."""
        from proxy.runs_worker import RunWorker

        assert self.pool is not None and self.redis is not None
        worker = RunWorker(
            self.pool, self.redis, consumer=f"demo-{self.run_id}", prefix=self.redis_prefix,
            step_seconds=RUN_STEP_SECONDS, claim_idle_ms=5000,
            listen_url=self.settings.database_url,
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))

        async def stopped() -> None:
            stop.set()
            await asyncio.wait([task], timeout=STOP_SECONDS)
            await self._ended(task, "the run worker")

        self._stack.push_async_callback(stopped)

    def start_reverse(self) -> None:
        task = asyncio.create_task(self._reverse_loop())
        self._stack.push_async_callback(self._ended, task, "the reverse sync")
        self.reverse_task = task

    async def retire_legacy(self) -> None:
        """After 'strangler retire': the reverse sync, every forward sync and the legacy
        emulator stop (its port then refuses connections)."""
        if self.reverse_task is not None:
            await self._ended(self.reverse_task, "the reverse sync")
        await self.stop_forward([worker.spec for worker, _task in list(self.workers.values())])
        if self._stop_legacy is not None:
            await self._stop_legacy()

    # --- stop --------------------------------------------------------------------------

    async def _ended(self, task: asyncio.Task[Any], what: str) -> None:
        """``task`` ended: cancelled (again every second) if it still runs; said if it
        outlives that too (the stack's close goes on either way)."""
        if not await _cancelled(task, within=STOP_SECONDS):
            self.say(f"   {what} did not stop within {STOP_SECONDS:g} s of its cancel")
        elif not task.cancelled() and task.exception() is not None:
            self.say(f"   {what} had stopped on an error: {task.exception()}")

    async def _drop_redis_keys(self) -> None:
        assert self.redis is not None
        with contextlib.suppress(Exception):
            keys = [k async for k in self.redis.scan_iter(match=self.redis_prefix + "*")]
            if keys:
                await self.redis.delete(*keys)
        await self.redis.aclose()

    async def close(self) -> None:
        await self.stop_forward([worker.spec for worker, _task in list(self.workers.values())])
        await self._stack.aclose()
        self._tempdir.cleanup()
