"""The run worker (``strangler runs work``): runs started on the new side, driven to the end.

Four loops share one process (docs/runs.md):

* the dispatcher adds each pending ``run_dispatch`` row's message (:mod:`strangler.runs`)
  to the Redis Stream, then marks the row published, in the transaction that locked it
  (``FOR UPDATE SKIP LOCKED``, so several workers share the rows); it LISTENs for the
  NOTIFY a committed ``runNow`` sends and also looks every ``poll_seconds``;
* consumers read the stream in the consumer group ``runners`` (XREADGROUP) and drive each
  run as legacy's simulator does: queued -> running -> completed|failed, a log entry and a
  ``job_runs`` update per step, each in a transaction with its outbox row (the reverse sync
  carries it to legacy's ``jobRun``), each published on Redis pub/sub after it committed;
  a message is acknowledged (XACK) only once its run is final;
* the claimer takes over messages another consumer read and did not acknowledge for
  ``claim_idle_ms`` (a dead or stuck worker), and retries failed ones, each after
  ``claim_idle_ms * 2^(deliveries - 1)`` since its last delivery (exponential backoff):
  XPENDING gives each message's idle time and deliveries, XCLAIM takes it (XAUTOCLAIM
  would claim every message past one idle bound, with no backoff per message). A
  message delivered ``max_deliveries`` times goes to the dead-letter stream ``runs:dead``
  with the reason, and its run, if still not final, is failed;
* the activity relay (one per database: a session advisory lock elects it) LISTENs for the
  ``activity_feed`` NOTIFY of each recent ``user_activity`` row (schema 0042: the new
  side's writes and the legacy writes the forward sync brings), reads the row and
  publishes it, as ``getActivity`` lists it, on the tenant's activity channel.

At-least-once, and idempotent by ``job_run_id``: every status change is an UPDATE guarded
by the status it leaves (``WHERE status = 'queued'``, then ``'running'``), so a message
handled twice, by one worker or two, moves a run to its final status exactly once; a run
already final is acknowledged and left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from migrators.entities.common import to_json
from migrators.touched import redis_text
from proxy.handlers._pg import moment_of, record_outbox
from proxy.handlers.access import render_fields
from proxy.handlers.history import ACTIVITY, ACTIVITY_COLUMNS, DISPATCH_CHANNEL, ActivityHandlers
from schema.tenancy import enter_sync, enter_tenant
from strangler.runs import (
    DEAD_STREAM,
    FINAL_STATUSES,
    RUN_GROUP,
    RUN_STREAM,
    activity_channel,
    run_channel,
    run_message,
    run_outcome,
    status_message,
)

__all__ = ["RunWorker", "WorkerCounts"]

log = logging.getLogger(__name__)

ACTIVITY_FEED = "activity_feed"  # schema 0042's NOTIFY channel
_RELAY_LOCK = 0x5354524E52454C59  # "STRNRELY": one activity relay per database


@dataclass
class WorkerCounts:
    published: int = 0  # messages added to the stream
    finished: int = 0  # runs this worker moved to a final status
    acknowledged: int = 0
    duplicates: int = 0  # messages of runs already final (acknowledged, nothing done)
    claimed: int = 0  # messages taken over from another consumer
    dead: int = 0  # messages sent to the dead-letter stream
    failures: int = 0  # handling attempts that raised (left pending, retried later)
    relayed: int = 0  # activity entries published


class _NoRun(Exception):
    """A message naming no run: nothing can ever drive it."""


class RunWorker:
    """See the module docstring. ``prefix`` namespaces the Redis keys (streams, channels)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: aioredis.Redis,
        *,
        consumer: str,
        prefix: str = "",
        step_seconds: float = 1.0,
        concurrency: int = 8,
        claim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
        poll_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        listen_url: str | None = None,
    ) -> None:
        if concurrency < 1 or max_deliveries < 1 or claim_idle_ms < 1:
            raise ValueError("concurrency, max_deliveries and claim_idle_ms must be >= 1")
        self._pool, self._redis = pool, redis
        self.consumer = consumer
        self.prefix = prefix
        self.stream, self.dead_stream = prefix + RUN_STREAM, prefix + DEAD_STREAM
        self._step = step_seconds
        self._concurrency = concurrency
        self._claim_idle = claim_idle_ms
        self._max_deliveries = max_deliveries
        self._poll = poll_seconds
        self._clock = clock
        self.counts = WorkerCounts()
        self._wake = asyncio.Event()
        # The dispatcher and the relay LISTEN on connections of their own (held as long as
        # the worker runs); without a URL they take them from the pool.
        self._listen_url = listen_url

    @contextlib.asynccontextmanager
    async def _listening(self) -> AsyncIterator[asyncpg.Connection]:
        if self._listen_url is None:
            async with self._pool.acquire() as conn:
                yield conn
            return
        conn = await asyncpg.connect(self._listen_url)
        try:
            yield conn
        finally:
            await conn.close()

    # --- set-up ---------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """The consumer group, from the stream's start (messages added before it count)."""
        try:
            await self._redis.xgroup_create(self.stream, RUN_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- the dispatcher -----------------------------------------------------------------------

    async def dispatch_once(self, limit: int = 500) -> int:
        """Publish pending dispatch rows (one transaction); how many were published."""
        async with self._pool.acquire() as conn, conn.transaction():
            await enter_sync(conn)
            rows = await conn.fetch(
                "SELECT d.id, d.job_run_id, d.subscription_id, d.workflow_id, r.created_at "
                "FROM run_dispatch AS d LEFT JOIN LATERAL (SELECT created_at FROM job_runs "
                "WHERE job_runs.job_run_id = d.job_run_id LIMIT 1) AS r ON true "
                "WHERE d.published_at IS NULL ORDER BY d.id LIMIT $1 FOR UPDATE OF d SKIP LOCKED",
                limit,
            )
            if not rows:
                return 0
            # before the stream: a consumer must not announce "running" ahead of it
            await self._announce_queued(rows)
            async with self._redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    message = run_message(
                        row["job_run_id"], row["subscription_id"], row["workflow_id"]
                    )
                    pipe.xadd(self.stream, message)  # type: ignore[arg-type]
                ids = await pipe.execute()
            # Added: a crash from here to the commit adds them again (consumers dedupe).
            await conn.execute(
                "UPDATE run_dispatch AS d SET published_at = now(), message_id = m.mid "
                "FROM unnest($1::bigint[], $2::text[]) AS m (rid, mid) WHERE d.id = m.rid",
                [row["id"] for row in rows],
                [redis_text(i) for i in ids],
            )
        self.counts.published += len(rows)
        return len(rows)

    async def _announce_queued(self, rows: list[asyncpg.Record]) -> None:
        """A run's first status change, as legacy's hub sends it when runNow queues it: the
        run committed with its dispatch row, so ``/ws/runNow`` subscribers hear ``queued``
        (again, if a crash made this batch be dispatched twice: best effort, like every
        live update)."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    run = {"job_run_id": row["job_run_id"], "workflow_id": row["workflow_id"]}
                    moment = row["created_at"] or moment_of(self._clock)
                    pipe.publish(
                        run_channel(self.prefix, row["subscription_id"], row["workflow_id"] or ""),
                        json.dumps(status_message(run, "queued", moment)),
                    )
                await pipe.execute()
        except RedisError as exc:  # live updates are best effort; the rows are the truth
            log.warning("publishing %d queued runs failed: %s", len(rows), exc)

    def _heard(self, *_args: Any) -> None:
        self._wake.set()

    async def _dispatch_forever(self, stop: asyncio.Event) -> None:
        async with self._listening() as conn:
            await conn.add_listener(DISPATCH_CHANNEL, self._heard)
            try:
                while not stop.is_set():
                    try:
                        while await self.dispatch_once():
                            pass
                    except (RedisError, OSError, asyncpg.PostgresError) as exc:
                        log.warning("run dispatch failed (retried): %s", type(exc).__name__)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll)
                    self._wake.clear()
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(DISPATCH_CHANNEL, self._heard)

    # --- consumers -------------------------------------------------------------------------

    async def consume_once(self, count: int = 10, block_ms: int = 1000) -> int:
        """Read and handle up to ``count`` new messages; how many were read."""
        answer: Any = await self._redis.xreadgroup(
            RUN_GROUP, self.consumer, {self.stream: ">"}, count=count, block=block_ms
        )
        entries = [entry for _stream, items in answer or [] for entry in items]
        await asyncio.gather(*(self.handle(redis_text(mid), fields) for mid, fields in entries))
        return len(entries)

    async def claim_once(self, count: int = 50) -> int:
        """Take over messages idle longer than ``claim_idle_ms`` (dead-lettering those
        delivered too often); how many were handled."""
        pending: Any = await self._redis.xpending_range(
            self.stream, RUN_GROUP, min="-", max="+", count=count, idle=self._claim_idle
        )
        handled = 0
        for entry in pending:
            mid = redis_text(entry["message_id"])
            # backoff: a message's n-th retry waits claim_idle_ms * 2^(n-1) since its last try
            wait = self._claim_idle * 2 ** max(0, int(entry["times_delivered"]) - 1)
            if int(entry["time_since_delivered"]) < wait:
                continue
            claimed: Any = await self._redis.xclaim(
                self.stream, RUN_GROUP, self.consumer, wait, [mid]
            )
            if not claimed:
                continue  # another consumer took it first
            _, fields = claimed[0]
            self.counts.claimed += 1
            if entry["times_delivered"] >= self._max_deliveries:
                await self._dead_letter(mid, fields, "delivered too many times without success")
            else:
                await self.handle(mid, fields)
            handled += 1
        return handled

    async def handle(self, message_id: str, fields: dict[Any, Any]) -> None:
        """Drive the message's run to its end, then acknowledge; on failure, leave it pending
        (the claimer retries it after ``claim_idle_ms``)."""
        message = {redis_text(k): redis_text(v) for k, v in fields.items()}
        try:
            await self.drive(message["job_run_id"], message["subscription_id"])
        except (_NoRun, KeyError) as exc:
            await self._dead_letter(message_id, fields, f"no run to drive: {exc}")
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counts.failures += 1
            log.warning("run message %s failed (retried later): %r", message_id, exc)
            return
        await self._redis.xack(self.stream, RUN_GROUP, message_id)
        self.counts.acknowledged += 1

    async def _dead_letter(self, message_id: str, fields: dict[Any, Any], reason: str) -> None:
        message = {redis_text(k): redis_text(v) for k, v in fields.items()}
        dead: Any = {**message, "reason": reason, "id": message_id}
        await self._redis.xadd(self.dead_stream, dead)
        run_id, tenant = message.get("job_run_id"), message.get("subscription_id")
        if run_id and tenant:
            for expected in ("queued", "running"):  # never left unfinished for ever
                await self._transition(
                    run_id, tenant, expected, "failed",
                    {"error_message": f"the run could not be driven: {reason}"},
                    f"Run failed: {reason}", "ERROR",
                )  # fmt: skip
        await self._redis.xack(self.stream, RUN_GROUP, message_id)
        self.counts.dead += 1
        log.warning("run message %s dead-lettered: %s", message_id, reason)

    # --- a run's life ----------------------------------------------------------------------

    async def drive(self, job_run_id: str, subscription_id: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await enter_tenant(conn, subscription_id)
            run = await conn.fetchrow(
                "SELECT r.status, r.workflow_id, w.workflow_diagram_text AS diagram "
                "FROM job_runs r LEFT JOIN workflows w USING (workflow_id) "
                "WHERE r.job_run_id = $1 ORDER BY r.created_at DESC LIMIT 1",
                job_run_id,
            )
        if run is None:
            raise _NoRun(job_run_id)
        if run["status"] in FINAL_STATUSES:
            self.counts.duplicates += 1
            return
        if run["status"] == "queued":
            await asyncio.sleep(self._step)
            await self._transition(
                job_run_id, subscription_id, "queued", "running", {}, "Run started", "INFO"
            )
        await asyncio.sleep(self._step)
        status, rows, error = run_outcome(job_run_id, run["diagram"])
        fields: dict[str, Any] = {"rows_processed": rows, "error_message": error}
        if status == "completed":
            text, level = f"Run completed: {rows} rows processed", "INFO"
        else:
            text, level = f"Run failed: {error}", "ERROR"
        if await self._transition(
            job_run_id, subscription_id, "running", status, fields, text, level
        ):
            self.counts.finished += 1

    async def _transition(
        self,
        job_run_id: str,
        subscription_id: str,
        expected: str,
        status: str,
        fields: dict[str, Any],
        message: str,
        level: str,
    ) -> bool:
        """Move the run from ``expected`` to ``status`` (False when it was not there any
        more: another delivery moved it), with its log entry and outbox row; published
        after the commit."""
        moment = moment_of(self._clock)
        entry = to_json([{"ts": moment.replace(tzinfo=None), "level": level, "message": message}])
        final = status in FINAL_STATUSES
        async with self._pool.acquire() as conn, conn.transaction():
            await enter_tenant(conn, subscription_id)
            row = await conn.fetchrow(
                """UPDATE job_runs SET status = $3,
                       logs = CASE WHEN jsonb_typeof(logs) = 'array' THEN logs ELSE '[]' END
                              || $4::jsonb,
                       completed_at = CASE WHEN $5::boolean THEN $6::timestamptz
                                      ELSE completed_at END,
                       duration_ms = CASE WHEN $5::boolean THEN
                           floor(extract(epoch FROM $6::timestamptz - created_at) * 1000)::bigint
                           ELSE duration_ms END,
                       rows_processed = CASE WHEN $5::boolean THEN $7::bigint
                                        ELSE rows_processed END,
                       error_message = CASE WHEN $5::boolean THEN $8::text ELSE error_message END
                   WHERE job_run_id = $1 AND status = $2
                   RETURNING workflow_id""",
                job_run_id,
                expected,
                status,
                json.dumps(entry),
                final,
                moment,
                fields.get("rows_processed"),
                fields.get("error_message"),
            )
            if row is None:
                return False
            await record_outbox(conn, subscription_id, "job_runs", job_run_id, "update", {})
        run = {"job_run_id": job_run_id, "workflow_id": row["workflow_id"]}
        try:
            await self._redis.publish(
                run_channel(self.prefix, subscription_id, row["workflow_id"] or ""),
                json.dumps(status_message(run, status, moment)),
            )
        except RedisError as exc:  # live updates are best effort; the row is the truth
            log.warning("publishing run %s %s failed: %s", job_run_id, status, exc)
        return True

    # --- the activity relay ---------------------------------------------------------------

    async def relay_forever(self, stop: asyncio.Event) -> None:
        """Publish each recent user_activity row once it committed (while elected)."""
        heard: asyncio.Queue[str] = asyncio.Queue()

        def on_notify(*args: Any) -> None:
            heard.put_nowait(args[-1])

        async with self._listening() as conn:
            try:
                while not stop.is_set():  # elected: one relay per database, or entries twice
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _RELAY_LOCK):
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 2.0)
                if stop.is_set():
                    return
                await conn.add_listener(ACTIVITY_FEED, on_notify)
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        payloads = [await asyncio.wait_for(heard.get(), 0.5)]
                        while not heard.empty():
                            payloads.append(heard.get_nowait())
                        await self._relay(payloads)
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(ACTIVITY_FEED, on_notify)
                    await conn.execute("SELECT pg_advisory_unlock_all()")

    async def _relay(self, payloads: list[str]) -> None:
        keys = [json.loads(p) for p in payloads]
        async with self._pool.acquire() as conn, conn.transaction():
            await enter_sync(conn)
            rows = await conn.fetch(
                f"SELECT {ACTIVITY_COLUMNS} FROM user_activity "
                "WHERE (activity_id, created_at) IN "
                "(SELECT * FROM unnest($1::text[], $2::timestamptz[])) "
                "ORDER BY created_at, activity_id",
                [k["activity_id"] for k in keys],
                [datetime.fromisoformat(k["created_at"]) for k in keys],
            )
        async with self._redis.pipeline(transaction=False) as pipe:
            for row in rows:
                entry = render_fields(ActivityHandlers.document_of(row), ACTIVITY)
                pipe.publish(activity_channel(self.prefix, row["subscription_id"]),
                             json.dumps(entry))  # fmt: skip
            try:
                await pipe.execute()
            except RedisError as exc:  # live updates are best effort; the rows stay
                log.warning("publishing %d activity entries failed: %s", len(rows), exc)
        self.counts.relayed += len(rows)

    # --- the whole worker ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> WorkerCounts:
        """Dispatch, consume and claim until ``stop`` is set; the counts."""
        await self.ensure_group()

        async def consume() -> None:
            while not stop.is_set():
                try:
                    await self.consume_once(count=10, block_ms=500)
                except (RedisError, OSError) as exc:
                    log.warning("reading the run stream failed (retried): %s", exc)
                    await asyncio.sleep(1.0)

        async def claim() -> None:
            while not stop.is_set():
                try:
                    await self.claim_once()
                except (RedisError, OSError) as exc:
                    log.warning("claiming run messages failed (retried): %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(self._claim_idle / 2000, 0.05))

        tasks = [
            asyncio.create_task(self._dispatch_forever(stop), name="runs-dispatch"),
            asyncio.create_task(self.relay_forever(stop), name="activity-relay"),
            asyncio.create_task(claim(), name="runs-claim"),
            *(
                asyncio.create_task(consume(), name=f"runs-consume-{n}")
                for n in range(self._concurrency)
            ),
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.counts
