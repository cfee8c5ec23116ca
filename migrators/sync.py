"""The forward sync worker: one entity's feed, applied through the one batch writer.

``strangler sync ENTITY|all`` runs one :class:`SyncWorker` per entity. A worker:

1. connects to PostgreSQL and waits to lead the entity (a session advisory
   lock on that same connection, :mod:`migrators.feeds.leadership`): standbys
   poll and take over the moment the leader's session ends;
2. reads the feed position stored in ``migration_feed_positions`` and opens
   its feed there;
3. for each batch: drops echoes of the reverse sync (:mod:`migrators.origin`)
   and documents that still have outbox rows waiting (PostgreSQL is ahead of
   MongoDB there), then calls :func:`migrators.writer.write_batch` with the
   batch's position: rows, quarantine entries and position in ONE
   transaction; only after the commit does it acknowledge the batch to the
   feed (e.g. XACK of touched ids);
4. a batch the writer rejects is split: each event is tried alone, up to
   ``max_attempts`` times for a transient failure (tenacity, only on the
   retryable branch), once for a permanent one; the events that still fail
   become dead letters (:mod:`migrators.dlq`), written in the transaction that
   moves the position past them, so the feed goes on;
5. publishes its lag (``strangler_sync_lag_seconds{entity,feed}``) and applied
   events, and beats in ``migration_sync_status`` (:mod:`migrators.sync_status`);
6. with ``watermarks`` (the proxies' read-your-writes store,
   :class:`migrators.consistency.ConsistencyStore`), publishes after each commit that
   caught the feed up, and whenever the feed was found empty, the moment its read
   began: every change older than that is applied, which releases the canary reads
   pinned to legacy after a tenant's write (docs/new_side.md section 4).

Losing PostgreSQL (``ServiceUnavailable``) ends the leadership term: the worker
reconnects and competes for the lock again; whatever was not committed is
delivered again from the stored position and absorbed by the version guard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from migrators.consistency import publish_watermark_or_warn
from migrators.dlq import Failure, record_dead_letters
from migrators.feeds import Feed, FeedBatch, FeedEvent
from migrators.feeds.cancellation import raise_if_cancel_requested
from migrators.feeds.leadership import hold_leadership, release_leadership
from migrators.feeds.metrics import SyncMetrics
from migrators.origin import strip_origin
from migrators.spec import EntitySpec, MappingContext
from migrators.sync_status import beat
from migrators.writer import BatchRejected, BatchResult, FeedPosition, SourceItem, write_batch
from schema.tenancy import enter_sync
from strangler.config import redact_url
from strangler.errors import DataError, RetryableError, ServiceUnavailable, StranglerError

__all__ = [
    "FeedFactory",
    "SyncOptions",
    "SyncWorker",
    "WatermarkSink",
    "is_transient",
    "load_position",
]

log = logging.getLogger("migrators.sync")

# SQLSTATEs that mean "try the same thing again": serialization failure, deadlock,
# lock not available, statement cancelled (e.g. by a timeout).
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})
# The connection cannot be used any more: end the leadership term and reconnect.
# InternalClientError: a query was interrupted (e.g. by a cancellation) mid-protocol.
_CONNECTION_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions._base.InternalClientError,
)

# A feed for one leadership term; it may use the leader's connection (the sweep does).
FeedFactory = Callable[[asyncpg.Connection], Feed]
StepHook = Callable[[str], Awaitable[None]]
CommitObserver = Callable[[FeedBatch, float], None]


class WatermarkSink(Protocol):
    """Where a forward sync says how far it has applied (``ConsistencyStore``)."""

    async def publish_watermark(
        self, entity: str, direction: Any, applied_up_to: float
    ) -> None: ...


@dataclass(frozen=True)
class SyncOptions:
    batch_size: int = 500
    max_attempts: int = 3  # per event, for transient failures, before it is dead-lettered
    retry_wait_seconds: float = 0.05  # first wait between attempts; doubles
    standby_poll_seconds: float = 1.0
    heartbeat_seconds: float = 5.0
    reconnect_wait_seconds: float = 1.0


def is_transient(exc: BaseException) -> bool:
    """Worth trying again on the same connection (not a lost connection: that ends the term)."""
    if isinstance(exc, ServiceUnavailable):
        return False
    if isinstance(exc, RetryableError):
        return True
    cause = exc.__cause__
    return isinstance(exc, BatchRejected) and getattr(cause, "sqlstate", None) in (
        _TRANSIENT_SQLSTATES
    )


async def load_position(conn: asyncpg.Connection, entity: str, feed: str) -> dict[str, Any] | None:
    value = await conn.fetchval(
        "SELECT position FROM migration_feed_positions WHERE entity = $1 AND feed = $2",
        entity,
        feed,
    )
    return json.loads(value) if isinstance(value, str) else value


@dataclass
class _Applied:
    events: int = 0
    failures: list[Failure] = field(default_factory=list)
    echoes: int = 0
    held: int = 0


class SyncWorker:
    """Keeps one entity's rows in step with its legacy collection."""

    def __init__(
        self,
        spec: EntitySpec,
        make_feed: FeedFactory,
        database_url: str,
        context: MappingContext,
        *,
        options: SyncOptions | None = None,
        metrics: SyncMetrics | None = None,
        name: str | None = None,
        step_hook: StepHook | None = None,
        watermarks: WatermarkSink | None = None,
    ) -> None:
        self.spec = spec
        self._make_feed = make_feed
        self._database_url = database_url
        self._context = context
        self.options = options or SyncOptions()
        self.metrics = metrics or SyncMetrics()
        self.name = name or f"{socket.gethostname()}:{id(self):x}"
        # Called at named points of a batch ("before-write", "committed", "acknowledged"):
        # where tests cut the worker down.
        self._step_hook = step_hook
        self._watermarks = watermarks
        self.commit_observers: list[CommitObserver] = []
        self.leading = False
        self.events_applied = 0
        self.dead_letters = 0
        self.connection_pid: int | None = None
        self._feed_name = "-"

    async def _step(self, name: str) -> None:
        if self._step_hook is not None:
            await self._step_hook(name)

    async def _connect(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self._database_url, timeout=10)
        except (*_CONNECTION_ERRORS, TimeoutError) as exc:
            raise ServiceUnavailable(
                "DATABASE_URL", redact_url(self._database_url), str(exc) or type(exc).__name__
            ) from exc

    async def run(self, *, once: bool = False) -> None:
        """Lead and apply until cancelled; ``once``: until the feed has caught up."""
        while True:
            raise_if_cancel_requested()
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect()
                if await self._term(conn, once=once):
                    return
            except Exception as exc:
                # A cancellation that surfaced as another error (asyncpg raises its own when
                # a rollback meets a query the cancellation interrupted) is a cancellation.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                if isinstance(exc, _CONNECTION_ERRORS):
                    lost = ServiceUnavailable("DATABASE_URL", "PostgreSQL", str(exc) or repr(exc))
                    lost.__cause__ = exc
                    exc = lost
                if once or not isinstance(exc, ServiceUnavailable):
                    raise exc
                log.warning("%s sync: %s; reconnecting", self.spec.name, exc)
            finally:
                self._stand_down()
                if conn is not None:
                    # terminate, not close: a cancelled worker must not wait on the server,
                    # and the server releases the lock when the socket goes.
                    conn.terminate()
            await asyncio.sleep(self.options.reconnect_wait_seconds)

    def _stand_down(self) -> None:
        self.leading = False
        self.connection_pid = None
        self.metrics.leader.labels(self.spec.name, self._feed_name).set(0)

    async def _term(self, conn: asyncpg.Connection, *, once: bool) -> bool:
        """One leadership term on ``conn``; True when ``once`` is done."""
        entity = self.spec.name

        async def standby() -> None:
            log.info("%s sync: another worker leads; standing by", entity)

        led = await hold_leadership(
            conn,
            entity,
            poll_seconds=self.options.standby_poll_seconds,
            on_standby=standby,
            give_up=lambda: once,
        )
        if not led:
            raise _AnotherLeader(entity)
        feed = self._make_feed(conn)
        self._feed_name = feed.name
        self.leading = True
        self.connection_pid = conn.get_server_pid()
        self.metrics.leader.labels(entity, feed.name).set(1)
        log.info("%s sync: leading with the %s feed", entity, feed.name)
        try:
            await feed.open(await load_position(conn, entity, feed.name))
            await beat(
                conn, entity, feed=feed.name, worker=self.name, lag_seconds=None, new_leader=True
            )
            last_beat = time.monotonic()
            while True:
                # A stop request some library call swallowed is honoured here, between
                # batches (see migrators.feeds.cancellation): never poll on after a cancel.
                raise_if_cancel_requested()
                read_at = time.time()
                batch = await feed.next_batch(self.options.batch_size)
                if batch is None:
                    await self._publish_watermark(feed.watermark(read_at))
                    self.metrics.lag.labels(entity, feed.name).set(0)
                    if time.monotonic() - last_beat >= self.options.heartbeat_seconds:
                        await beat(conn, entity, feed=feed.name, worker=self.name, lag_seconds=0.0)
                        last_beat = time.monotonic()
                    if once:
                        return True
                    continue
                applied, lag = await self._apply(conn, feed.name, batch)
                if batch.caught_up:
                    await self._publish_watermark(feed.watermark(read_at))
                await beat(
                    conn, entity, feed=feed.name, worker=self.name, lag_seconds=lag, applied=applied
                )
                last_beat = time.monotonic()
                if once and batch.caught_up:
                    return True
        finally:
            await feed.close()
            if not conn.is_closed():
                try:
                    await release_leadership(conn, entity)
                except (*_CONNECTION_ERRORS, asyncpg.PostgresError):
                    pass  # the lock goes with the session anyway

    async def _publish_watermark(self, applied_up_to: float | None) -> None:
        """Tell the proxies every change read before ``applied_up_to`` is applied; a failure
        only keeps their pins longer (they expire), so it never stops the sync. None: the
        feed can claim nothing yet (a sweep-only entity before its first full pass)."""
        if applied_up_to is None:
            return
        await publish_watermark_or_warn(
            self._watermarks, self.spec.name, "forward", applied_up_to, log
        )

    async def _held_back(self, conn: asyncpg.Connection, ids: list[str]) -> set[str]:
        """Ids whose outbox rows still wait: PostgreSQL is ahead of MongoDB for them. An
        entity carried in other entities' rows (``EntitySpec.carried_as``) is looked for
        there too, among the waiting rows only (the pending index)."""
        if not ids:
            return set()
        async with conn.transaction():
            await enter_sync(conn)
            records = await conn.fetch(
                """SELECT legacy_id FROM migration_outbox
                   WHERE entity = $1 AND applied_at IS NULL AND origin = 'new'
                     AND legacy_id = ANY($2::text[])
                   UNION
                   SELECT payload -> $3::text ->> $4::text FROM migration_outbox
                   WHERE $3::text <> '' AND applied_at IS NULL AND origin = 'new'
                     AND payload -> $3::text ->> $4::text = ANY($2::text[])""",
                self.spec.name,
                ids,
                self.spec.carried_as,
                self.spec.legacy_id_column,
            )
        return {r["legacy_id"] for r in records}

    async def _apply(
        self, conn: asyncpg.Connection, feed: str, batch: FeedBatch
    ) -> tuple[int, float | None]:
        entity = self.spec.name
        await self._step("before-write")
        outcome = _Applied()
        candidates: list[FeedEvent] = []
        for event in batch.events:
            if event.echo:
                outcome.echoes += 1
            elif not event.legacy_id:
                error = DataError(
                    f"{entity}: a change of document {event.raw.get('documentKey')} names no "
                    f"{self.spec.id_field}; enable pre-images on the collection or run verify"
                )
                outcome.failures.append(Failure(event, error, 1))
            else:
                candidates.append(event)
        held = await self._held_back(conn, sorted({e.legacy_id for e in candidates if e.legacy_id}))
        ready = [e for e in candidates if e.legacy_id not in held]
        outcome.held = len(candidates) - len(ready)
        position = FeedPosition(entity, feed, batch.position)
        try:
            if outcome.failures:
                raise _SplitNeeded
            await self._write(conn, [_item(e) for e in ready], position)
            outcome.events = len(ready)
        except (_SplitNeeded, BatchRejected, RetryableError) as exc:
            if isinstance(exc, ServiceUnavailable):
                raise
            await self._apply_one_by_one(conn, ready, outcome)
            async with conn.transaction():
                await enter_sync(conn)
                await record_dead_letters(conn, self.spec, self._context, feed, outcome.failures)
                await position.save(conn, BatchResult())
        committed_at = time.time()
        await self._step("committed")
        if batch.acknowledge is not None:
            await batch.acknowledge()
        await self._step("acknowledged")
        self.events_applied += outcome.events
        self.dead_letters += len(outcome.failures)
        labels = (entity, feed)
        self.metrics.applied.labels(*labels).inc(outcome.events)
        self.metrics.dead_letters.labels(*labels).inc(len(outcome.failures))
        self.metrics.echoes.labels(*labels).inc(outcome.echoes)
        for failure in outcome.failures:
            log.warning(
                "%s sync: dead letter for %s: %s", entity, failure.event.legacy_id, failure.error
            )
        times = [e.occurred_at for e in batch.events if e.occurred_at is not None]
        lag = max(0.0, committed_at - min(times)) if times else (0.0 if batch.caught_up else None)
        if lag is not None:
            self.metrics.lag.labels(*labels).set(lag)
        for observer in self.commit_observers:
            observer(batch, committed_at)
        return outcome.events, lag

    async def _write(
        self, conn: asyncpg.Connection, items: list[SourceItem], position: FeedPosition | None
    ) -> BatchResult:
        result = BatchResult()
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.options.max_attempts),
            wait=wait_exponential(multiplier=self.options.retry_wait_seconds, max=2.0),
            reraise=True,
        ):
            with attempt:
                result = await write_batch(
                    conn, self.spec, items, ctx=self._context, position=position, source="sync"
                )
        return result

    async def _apply_one_by_one(
        self, conn: asyncpg.Connection, events: list[FeedEvent], outcome: _Applied
    ) -> None:
        """Each event in its own transaction; the ones that keep failing are collected.

        The position is saved afterwards (with the dead letters): a crash in between
        delivers these events again, which the version guard turns into no-ops.
        """
        for event in events:
            attempts = 0
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception(is_transient),
                    stop=stop_after_attempt(self.options.max_attempts),
                    wait=wait_exponential(multiplier=self.options.retry_wait_seconds, max=2.0),
                    reraise=True,
                ):
                    with attempt:
                        attempts += 1
                        await write_batch(
                            conn, self.spec, [_item(event)], ctx=self._context, source="sync"
                        )
                outcome.events += 1
            except ServiceUnavailable:
                raise
            except StranglerError as exc:
                outcome.failures.append(Failure(event, exc, attempts))


class _SplitNeeded(Exception):
    """The batch holds an event that cannot be applied: go event by event."""


class _AnotherLeader(StranglerError):
    def __init__(self, entity: str) -> None:
        super().__init__(
            f"another worker leads the {entity} sync; --once does not wait for it "
            "(run without --once to stand by)"
        )


def _item(event: FeedEvent) -> SourceItem:
    assert event.legacy_id is not None
    document = strip_origin(event.document) if event.document is not None else None
    return SourceItem(event.legacy_id, document, event.version)
