"""The comparator apart from the proxy: sampled exchanges over a Redis Stream.

In-process (the default), the proxy's ShadowRunner calls the other side, settles noisy
reads, compares and records, all on the event loop that serves clients: on a busy
machine that work shows in the clients' tail latency. With ``proxy serve --shadow-queue``
the proxy only appends each sampled exchange to a stream (:class:`QueuedSink`: buffered,
one pipelined XADD per batch, never awaited by a request), and ``strangler shadow work``
(:class:`ExchangeWorker`, any number of them in the consumer group ``comparators``) takes
them off and does all of the rest, asking legacy and the new side over HTTP.

Message (stream ``{prefix}shadow:exchanges``, trimmed to about ``maxlen`` entries): the
fields ``entity``, ``endpoint``, ``method``, ``path``, ``query``, ``headers`` (JSON pairs:
only those a side needs to answer as it did, the bearer token among them), ``body``,
``request_id``, ``status``, ``response_headers`` (JSON pairs), ``response``, ``side`` (who
served the client: legacy or new) and ``at`` (epoch seconds when the client was answered).

Delivery is at most once (read with NOACK): a comparison is a sample, so an exchange lost
with a crashed worker is one sample fewer, never one counted twice. An exchange that
reaches a worker more than ``max_wait_seconds`` after the client was answered is counted
stale and not compared, as in-process (the difference would be the wait's): a backlog
sheds itself instead of comparing old answers against the other side's later state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from shadow_compare.runner import ShadowRunner
from strangler.exchange import RecordedRequest, RecordedResponse

__all__ = [
    "CONSUMER_GROUP",
    "ExchangeWorker",
    "QueuedExchange",
    "QueuedSink",
    "decode_exchange",
    "encode_exchange",
    "stream_key",
]

log = logging.getLogger("shadow_compare.queue")

CONSUMER_GROUP = "comparators"
DEFAULT_MAXLEN = 20_000  # about a minute of sampled reads at a busy proxy's rate
DEFAULT_BATCH = 128
DEFAULT_FLUSH_SECONDS = 0.005
DEFAULT_BUFFER = 4_096  # exchanges held in the proxy while Redis is slow; beyond: dropped

# The request headers a side needs to answer as it answered the client; the rest (cookies,
# proxies' own headers) never leaves the proxy.
_KEPT_HEADERS = frozenset(
    {"authorization", "content-type", "accept", "user-agent", "x-forwarded-for", "x-request-id"}
)


def stream_key(prefix: str = "") -> str:
    return f"{prefix}shadow:exchanges"


@dataclass(frozen=True)
class QueuedExchange:
    entity: str
    endpoint: str
    request: RecordedRequest
    primary: RecordedResponse
    at: float  # epoch seconds: when the client had its answer


def encode_exchange(
    entity: str, endpoint: str, request: RecordedRequest, primary: RecordedResponse, at: float
) -> dict[str, str | bytes]:
    headers = [[k, v] for k, v in request.headers if k.lower() in _KEPT_HEADERS]
    return {
        "entity": entity,
        "endpoint": endpoint,
        "method": request.method,
        "path": request.path,
        "query": request.query_string,
        "headers": json.dumps(headers),
        "body": request.body,
        "request_id": request.request_id,
        "status": str(primary.status),
        "response_headers": json.dumps([list(h) for h in primary.headers]),
        "response": primary.body,
        "side": primary.side or "legacy",
        "at": repr(at),
    }


def _text(fields: Mapping[bytes, bytes], name: str) -> str:
    return fields.get(name.encode(), b"").decode("utf-8")


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in json.loads(text or "[]"))


def decode_exchange(fields: Mapping[bytes, bytes]) -> QueuedExchange:
    """A stream entry back as values; ValueError (or KeyError) when it is not one."""
    side = _text(fields, "side")
    if side not in ("legacy", "new"):
        raise ValueError(f"unknown side {side!r}")
    request = RecordedRequest(
        method=_text(fields, "method"),
        path=_text(fields, "path"),
        query_string=_text(fields, "query"),
        headers=_pairs(_text(fields, "headers")),
        body=fields.get(b"body", b""),
        request_id=_text(fields, "request_id"),
    )
    primary = RecordedResponse(
        status=int(_text(fields, "status")),
        headers=_pairs(_text(fields, "response_headers")),
        body=fields.get(b"response", b""),
        side="new" if side == "new" else "legacy",
    )
    return QueuedExchange(
        _text(fields, "entity"), _text(fields, "endpoint"), request, primary,
        float(_text(fields, "at")),
    )  # fmt: skip


class QueuedSink:
    """The proxy's ShadowSink with ``--shadow-queue``: ``submit`` appends to a buffer and
    returns; a task of its own sends the buffer as one pipelined XADD per batch. Redis
    down or slow: the buffer fills and further exchanges are dropped (False), counted by
    the proxy; a client never waits on it."""

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str = "",
        maxlen: int = DEFAULT_MAXLEN,
        batch: int = DEFAULT_BATCH,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        buffer: int = DEFAULT_BUFFER,
    ) -> None:
        self._redis = redis
        self.key = stream_key(prefix)
        self._maxlen = maxlen
        self._batch = batch
        self._flush_seconds = flush_seconds
        self._limit = buffer
        self._buffer: list[dict[str, str | bytes]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.lost = 0  # accepted, then lost with a failed XADD

    def submit(
        self,
        entity: str,
        endpoint: str,
        request: RecordedRequest,
        primary: RecordedResponse,
        other: Any = None,
        primary_again: Any = None,
    ) -> bool:
        """Queue the exchange for a worker (``other`` and ``primary_again`` are the worker's
        to make: it asks both sides itself). False when the buffer is full or stopped."""
        if self._task is None or len(self._buffer) >= self._limit:
            return False
        self._buffer.append(encode_exchange(entity, endpoint, request, primary, time.time()))
        if len(self._buffer) >= self._batch:
            self._wake.set()
        return True

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever(), name="shadow-queue")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._flush()  # what was accepted goes out if Redis takes it

    async def _flush_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._flush_seconds)
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._buffer:
            batch, self._buffer = self._buffer[: self._batch], self._buffer[self._batch :]
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for fields in batch:
                        pipe.xadd(self.key, fields, maxlen=self._maxlen, approximate=True)
                    await pipe.execute()
                self.sent += len(batch)
            except Exception as exc:  # redis raises many kinds; none may reach a client
                self.lost += len(batch)
                log.warning("%d sampled exchanges not queued for comparison: %s", len(batch), exc)
                return


class _WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "strangler_shadow_queue_received",
            "Exchanges a comparator took off the stream",
            registry=registry,
        )
        self.malformed = Counter(
            "strangler_shadow_queue_malformed",
            "Stream entries that were not exchanges (skipped)",
            registry=registry,
        )


class ExchangeWorker:
    """``strangler shadow work``: exchanges off the stream into a ShadowRunner, whose
    other side and re-reads are HTTP calls (``legacy`` and ``new``: anything with
    ``async call(RecordedRequest) -> RecordedResponse``, e.g. shadow_compare.replay's
    HttpSide)."""

    def __init__(
        self,
        redis: Any,
        runner: ShadowRunner,
        legacy: Any,
        new: Any,
        registry: CollectorRegistry,
        *,
        prefix: str = "",
        batch: int = DEFAULT_BATCH,
        block_ms: int = 1000,
        consumer: str | None = None,
    ) -> None:
        self._redis = redis
        self._runner = runner
        self._sides = {"legacy": legacy, "new": new}
        self.key = stream_key(prefix)
        self._batch = batch
        self._block_ms = block_ms
        self._consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self._metrics = _WorkerMetrics(registry)

    async def ensure_group(self) -> None:
        try:
            # "$": a new group starts with what comes next; exchanges older than the group
            # would be stale anyway.
            await self._redis.xgroup_create(self.key, CONSUMER_GROUP, id="$", mkstream=True)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def hand_over(self, fields: Mapping[bytes, bytes]) -> bool:
        """One entry into the runner; False when it was not an exchange or was shed."""
        self._metrics.received.inc()
        try:
            exchange = decode_exchange(fields)
        except (KeyError, ValueError) as exc:
            self._metrics.malformed.inc()
            log.warning("skipped a stream entry that is not an exchange: %s", exc)
            return False
        primary_side = self._sides[exchange.primary.side or "legacy"]
        other_side = self._sides["legacy" if exchange.primary.side == "new" else "new"]
        request = exchange.request

        async def other() -> RecordedResponse:
            response: RecordedResponse = await other_side.call(request)
            return response

        async def primary_again() -> RecordedResponse:
            response: RecordedResponse = await primary_side.call(request)
            return response

        return self._runner.submit(
            exchange.entity, exchange.endpoint, request, exchange.primary, other,
            primary_again=primary_again, waited=max(0.0, time.time() - exchange.at),
        )  # fmt: skip

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Read and hand over until ``stop`` is set (or for ever)."""
        await self.ensure_group()
        stop = stop or asyncio.Event()
        while not stop.is_set():
            replies = await self._redis.xreadgroup(
                CONSUMER_GROUP, self._consumer, {self.key: ">"},
                count=self._batch, block=self._block_ms, noack=True,
            )  # fmt: skip
            for _stream, entries in replies or ():
                for _entry_id, fields in entries:
                    if fields:  # an entry trimmed away since it was read comes back empty
                        self.hand_over(fields)
