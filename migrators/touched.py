"""The touched-ids streams: which legacy documents writes through the proxy changed.

The proxy calls :func:`record_touched` right after a legacy write succeeded
(status 2xx from the legacy backend), with the entity and the legacy id(s) the
write touched::

    await record_touched(redis, "connectors", [connector_id], subscription_id=caller_sub)

Each id becomes one entry ``{legacy_id, subscription_id, at}`` of the Redis
Stream ``strangler:touched:<entity>``. The polling feed reads it with
:class:`TouchedReader` through the consumer group ``strangler-sync``: an entry
is acknowledged only after the PostgreSQL transaction that applied its
document committed, so a worker killed in between gets it again (at least
once; the version guard absorbs the repeat).

Every leader of an entity reads as the same consumer name, so the entries a
dead leader took but never acknowledged are the first thing its successor
reads (``XREADGROUP ... 0``) before it takes new ones (``>``).

A lost entry (Redis restarted without persistence, a stream trimmed past
unread entries) is not a lost write: the anti-entropy sweep finds the
document later (see docs/sync.md for the bound).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from strangler.errors import ServiceUnavailable

__all__ = [
    "CONSUMER_GROUP",
    "LEADER_CONSUMER",
    "STREAM_MAX_LENGTH",
    "TouchedEntry",
    "TouchedReader",
    "record_touched",
    "redis_text",
    "stream_key",
]

CONSUMER_GROUP = "strangler-sync"
LEADER_CONSUMER = "leader"
# Approximate cap; the sweep covers whatever trimming drops before it was read.
STREAM_MAX_LENGTH = 1_000_000


def stream_key(entity: str, prefix: str = "") -> str:
    return f"{prefix}strangler:touched:{entity}"


def _unavailable(exc: RedisError) -> ServiceUnavailable:
    return ServiceUnavailable("REDIS_URL", "Redis", f"{type(exc).__name__}: {exc}")


async def record_touched(
    redis: aioredis.Redis,
    entity: str,
    legacy_ids: Iterable[str],
    *,
    subscription_id: str | None = None,
    at: float | None = None,
    prefix: str = "",
) -> int:
    """Append one entry per touched id; returns how many were recorded."""
    stamp = repr(time.time() if at is None else at)
    key = stream_key(entity, prefix)
    count = 0
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for legacy_id in legacy_ids:
                fields: dict[Any, Any] = {"legacy_id": legacy_id, "at": stamp}
                fields["subscription_id"] = subscription_id or ""
                pipe.xadd(key, fields, maxlen=STREAM_MAX_LENGTH, approximate=True)
                count += 1
            if count:
                await pipe.execute()
    except RedisError as exc:
        raise _unavailable(exc) from exc
    return count


@dataclass(frozen=True)
class TouchedEntry:
    entry_id: str
    legacy_id: str
    subscription_id: str
    at: float  # epoch seconds the proxy recorded the write


def redis_text(value: Any) -> str:
    """A Redis reply's key or value as text (the client answers bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


class TouchedReader:
    """At-least-once reader of one entity's touched ids (one consumer group)."""

    def __init__(self, redis: aioredis.Redis, entity: str, *, prefix: str = "") -> None:
        self._redis = redis
        self.key = stream_key(entity, prefix)
        self._draining_pending = True

    async def ensure_group(self) -> None:
        """Create the group at the stream's start, so nothing written before is skipped."""
        try:
            await self._redis.xgroup_create(self.key, CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise _unavailable(exc) from exc
        except RedisError as exc:
            raise _unavailable(exc) from exc
        self._draining_pending = True

    async def read(self, count: int, block_ms: int) -> list[TouchedEntry]:
        """Entries a previous leader left unacknowledged first, then new ones."""
        try:
            while self._draining_pending:
                reply = await self._redis.xreadgroup(
                    CONSUMER_GROUP, LEADER_CONSUMER, {self.key: "0"}, count=count
                )
                entries = self._entries(reply)
                trimmed = self._trimmed(reply)
                if trimmed:
                    # Trimmed from the stream while pending: nothing left to read (the sweep
                    # covers those ids); acknowledged so that the pending list drains.
                    await self._redis.xack(self.key, CONSUMER_GROUP, *trimmed)
                if entries:
                    return entries
                if not trimmed:
                    self._draining_pending = False
            reply = await self._redis.xreadgroup(
                CONSUMER_GROUP,
                LEADER_CONSUMER,
                {self.key: ">"},
                count=count,
                block=block_ms or None,
            )
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return self._entries(reply)

    @staticmethod
    def _trimmed(reply: Any) -> list[str]:
        return [redis_text(i) for _s, items in reply or () for i, fields in items if not fields]

    @staticmethod
    def _entries(reply: Any) -> list[TouchedEntry]:
        entries: list[TouchedEntry] = []
        for _stream, items in reply or ():
            for entry_id, fields in items:
                if not fields:  # deleted from the stream while pending
                    continue
                decoded = {redis_text(k): redis_text(v) for k, v in fields.items()}
                entries.append(
                    TouchedEntry(
                        entry_id=redis_text(entry_id),
                        legacy_id=decoded.get("legacy_id", ""),
                        subscription_id=decoded.get("subscription_id", ""),
                        at=float(decoded.get("at") or 0.0),
                    )
                )
        return entries

    async def acknowledge(self, entry_ids: list[str]) -> None:
        if not entry_ids:
            return
        try:
            await self._redis.xack(self.key, CONSUMER_GROUP, *entry_ids)
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def pending_count(self) -> int:
        try:
            info = await self._redis.xpending(self.key, CONSUMER_GROUP)
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return int(info["pending"] if isinstance(info, dict) else info[0])
