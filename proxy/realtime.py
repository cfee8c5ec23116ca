"""``/ws/runNow/{workflow_id}`` and ``/ws/activity`` served by any proxy instance, over Redis.

For an entity in ``new`` (job_runs, activity) the proxy answers these WebSockets itself
instead of tunnelling them to legacy's in-process hub: one Redis pub/sub connection per
proxy process (pattern subscriptions on the run and activity channels of
:mod:`strangler.runs`) feeds the process's sessions, each a bounded queue. Whoever
publishes (the run worker on each status change, the activity relay on each entry that
reaches ``user_activity``, whichever side wrote it) reaches every instance.

A session is what legacy's is (``legacy_emulator/routes/realtime.py``): the token as
``?token=``, a bad one accepted and closed with 1008, one JSON text message per update of
the caller's tenant (and workflow), anything the client sends ignored. Each open session
is a ``websocket_connections`` row (instance, channel, tenant), its ``last_seen_at``
refreshed every ``heartbeat_seconds`` and ``closed_at`` set when it ends, so what is open
where can be read from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from migrators.touched import redis_text
from schema.tenancy import ensure_subscription, enter_tenant
from strangler.runs import activity_channel, run_channel
from strangler.tokens import Caller, InvalidToken, verify_token

__all__ = ["POLICY_VIOLATION", "LiveFanout"]

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
QUEUE_SIZE = 1000


class LiveFanout:
    """See the module docstring."""

    def __init__(
        self,
        redis: aioredis.Redis,
        jwt_secret: str,
        *,
        prefix: str = "",
        pool: asyncpg.Pool | None = None,
        instance_id: str = "",
        heartbeat_seconds: float = 30.0,
    ) -> None:
        self._redis = redis
        self._secret = jwt_secret
        self.prefix = prefix
        self._pool = pool
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self._heartbeat = heartbeat_seconds
        self._sessions: defaultdict[str, set[asyncio.Queue[str]]] = defaultdict(set)
        self._reader: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.dropped = 0  # messages a full session queue could not take

    # --- the process's one subscription --------------------------------------------------

    async def start(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_forever(), name="live-fanout")

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def wait_subscribed(self) -> None:
        """Until the process's subscription is in place (bound it with asyncio.timeout)."""
        await self._subscribed.wait()

    async def _read_forever(self) -> None:
        patterns = (self.prefix + "runs:*", self.prefix + "activity:*")
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.psubscribe(*patterns)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        self._subscribed.set()
                        continue
                    if message["type"] == "pmessage":
                        self._deliver(redis_text(message["channel"]), redis_text(message["data"]))
            except (RedisError, OSError) as exc:
                self._subscribed.clear()
                log.warning("live updates: Redis subscription lost (%s); retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _deliver(self, channel: str, data: str) -> None:
        for queue in self._sessions.get(channel, ()):
            try:
                queue.put_nowait(data)
            except asyncio.QueueFull:
                self.dropped += 1

    @contextlib.contextmanager
    def _session(self, channel: str) -> Iterator[asyncio.Queue[str]]:
        queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)
        self._sessions[channel].add(queue)
        try:
            yield queue
        finally:
            self._sessions[channel].discard(queue)
            if not self._sessions[channel]:
                del self._sessions[channel]

    def open_sessions(self) -> int:
        return sum(len(queues) for queues in self._sessions.values())

    # --- one WebSocket ---------------------------------------------------------------------

    async def serve(self, scope: dict[str, Any], receive: Any, send: Any, entity: str) -> None:
        """Serve one WebSocket of ``entity`` (``job_runs`` or ``activity``) until it closes."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        caller = self._caller(scope)
        if caller is None:
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": POLICY_VIOLATION,
                        "reason": "Invalid token"})  # fmt: skip
            return
        workflow_id = None
        if entity == "job_runs":
            workflow_id = scope["path"].rstrip("/").rsplit("/", 1)[-1]
            channel = run_channel(self.prefix, caller.subscription_id, workflow_id)
        else:
            channel = activity_channel(self.prefix, caller.subscription_id)
        with self._session(channel) as queue:
            connection = await self._opened(caller, entity, workflow_id)
            await send({"type": "websocket.accept"})
            sender = asyncio.create_task(self._send_all(queue, send))
            beat = asyncio.create_task(self._beat(caller, connection))
            try:
                while True:  # anything the client sends is ignored; a disconnect ends it
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        return
            finally:
                for task in (sender, beat):
                    task.cancel()
                await asyncio.gather(sender, beat, return_exceptions=True)
                await self._closed(caller, connection)

    def _caller(self, scope: dict[str, Any]) -> Caller | None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        try:
            return verify_token(self._secret, (query.get("token") or [""])[0])
        except InvalidToken:
            return None

    @staticmethod
    async def _send_all(queue: asyncio.Queue[str], send: Any) -> None:
        while True:
            await send({"type": "websocket.send", "text": await queue.get()})

    # --- websocket_connections ----------------------------------------------------------------

    async def _opened(self, caller: Caller, entity: str, workflow_id: str | None) -> Any:
        if self._pool is None:
            return None
        channel = "run_now" if entity == "job_runs" else "activity"
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await enter_tenant(conn, caller.subscription_id)
                await ensure_subscription(conn, caller.subscription_id)
                return await conn.fetchval(
                    "INSERT INTO websocket_connections (subscription_id, user_id, channel, "
                    "workflow_id, instance_id) VALUES ($1, $2, $3, $4, $5) "
                    "RETURNING connection_id",
                    caller.subscription_id, caller.user_id, channel, workflow_id,
                    self.instance_id,
                )  # fmt: skip
        except (OSError, asyncpg.PostgresError) as exc:  # tracking never refuses a session
            log.warning("websocket_connections: not recorded (%s)", type(exc).__name__)
            return None

    async def _beat(self, caller: Caller, connection: Any) -> None:
        if connection is None or self._pool is None:
            return
        while True:
            await asyncio.sleep(self._heartbeat)
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                async with self._pool.acquire() as conn, conn.transaction():
                    await enter_tenant(conn, caller.subscription_id)
                    await conn.execute(
                        "UPDATE websocket_connections SET last_seen_at = now() "
                        "WHERE connection_id = $1",
                        connection,
                    )

    async def _closed(self, caller: Caller, connection: Any) -> None:
        if connection is None or self._pool is None:
            return
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            async with self._pool.acquire() as conn, conn.transaction():
                await enter_tenant(conn, caller.subscription_id)
                await conn.execute(
                    "UPDATE websocket_connections SET closed_at = now(), last_seen_at = now() "
                    "WHERE connection_id = $1",
                    connection,
                )
