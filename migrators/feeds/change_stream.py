"""The change-stream feed: MongoDB change events, resumed from the stored resume token.

Production opens ``collection.watch(full_document="updateLookup",
resume_after=<stored token>)`` on PyMongo's ``AsyncCollection``
(:class:`MongoChangeStreamSource`). The token of the last event of a batch is
the batch's position, committed in the same PostgreSQL transaction as the rows
that batch produced; after a crash the stream resumes right after the last
committed event, so nothing is lost, and anything delivered twice carries the
same ``clusterTime`` version, which the writer's version guard turns into a
no-op.

The seam: the feed only needs :class:`ChangeStreamSource` (open a cursor after
a token) and :class:`ChangeStreamCursor` (``try_next``, ``close``), which is
exactly the part of PyMongo's ``AsyncChangeStream`` it uses. mongomock has no
change streams, so tests and the in-process demo plug in
:class:`migrators.feeds.event_log.EventLog`, which produces events in MongoDB's
documented format for every write made through it.

Events are read as documented
(https://www.mongodb.com/docs/manual/reference/change-events/):
``_id`` (the resume token ``{"_data": ...}``), ``operationType``,
``documentKey``, ``fullDocument`` (with ``updateLookup``: the document as it is
when the event is read, or null when it is gone), ``updateDescription``,
``clusterTime`` (a BSON Timestamp) and ``wallTime`` (a date, MongoDB 6.0+).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from bson import json_util
from bson.timestamp import Timestamp

from migrators.backfill import legacy_id_of
from migrators.feeds import FeedBatch, FeedEvent, version_from_timestamp
from migrators.feeds.sweep import Sweeper, full_pass, read_documents
from migrators.origin import is_reverse_sync_change
from migrators.spec import Document, EntitySpec
from strangler.errors import PermanentError, ServiceUnavailable
from strangler.mongo import Collection

__all__ = [
    "FEED_NAME",
    "ChangeStreamCursor",
    "ChangeStreamFeed",
    "ChangeStreamHistoryLost",
    "ChangeStreamInvalidated",
    "ChangeStreamSource",
    "HistoryRecovery",
    "MongoChangeStreamSource",
    "event_from_change",
    "is_history_lost",
]

log = logging.getLogger("migrators.sync")

FEED_NAME = "change-stream"
HISTORY_LOST = 286  # MongoDB's ChangeStreamHistoryLost
# How often an idle stream stores how far it has read, so a restart need not start over.
IDLE_POSITION_SECONDS = 5.0
_DATA_OPERATIONS = frozenset({"insert", "update", "replace", "delete"})
# The stream cannot go on after these (the collection is gone or renamed).
_ENDING_OPERATIONS = frozenset({"invalidate", "drop", "rename", "dropDatabase"})


class ChangeStreamInvalidated(PermanentError):
    def __init__(self, collection: str, operation: str) -> None:
        self.collection = collection
        self.operation = operation
        super().__init__(
            f"the change stream on {collection!r} ended with a {operation!r} event; "
            f"run 'strangler backfill' for it again, then restart the sync"
        )


class ChangeStreamHistoryLost(PermanentError):
    """The stored resume token is no longer in the server's change history (MongoDB error
    286, ChangeStreamHistoryLost: the oplog rolled over past it)."""

    def __init__(self, token: Mapping[str, Any] | None, detail: str = "") -> None:
        self.token = dict(token or {})
        super().__init__(
            f"resume token {self.token!r} is no longer in the change history"
            + (f" ({detail})" if detail else "")
            + "; run 'strangler backfill' again, then restart the sync"
        )


def is_history_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the change history after a token is gone: the feed's own error,
    or the driver's (PyMongo's ``OperationFailure`` with code 286)."""
    return isinstance(exc, ChangeStreamHistoryLost) or getattr(exc, "code", None) == HISTORY_LOST


class ChangeStreamCursor(Protocol):
    async def try_next(self) -> Mapping[str, Any] | None: ...
    async def close(self) -> None: ...

    # Where the cursor stands even when no event came (the server's postBatchResumeToken).
    @property
    def resume_token(self) -> Mapping[str, Any] | None: ...


class ChangeStreamSource(Protocol):
    async def open(self, resume_after: Mapping[str, Any] | None) -> ChangeStreamCursor: ...


class MongoChangeStreamSource:
    """The real source: PyMongo's ``AsyncCollection.watch``."""

    # Each getMore waits this long at most for new events: it bounds how long a batch
    # that has events already can be held back waiting for more.
    def __init__(self, collection: Any, *, max_await_ms: int = 100) -> None:
        self._collection = collection
        self._max_await_ms = max_await_ms

    async def open(self, resume_after: Mapping[str, Any] | None) -> ChangeStreamCursor:
        from pymongo.errors import PyMongoError

        try:
            stream: ChangeStreamCursor = await self._collection.watch(
                full_document="updateLookup",
                # Pre-images (when the collection enables them) give deletes their legacy id.
                full_document_before_change="whenAvailable",
                resume_after=resume_after,
                max_await_time_ms=self._max_await_ms,
            )
        except PyMongoError as exc:
            if is_history_lost(exc):
                raise ChangeStreamHistoryLost(resume_after, str(exc)) from exc
            raise ServiceUnavailable("MONGO_URL", "the change stream", str(exc)) from exc
        return stream


class HistoryRecovery:
    """What the feed needs to recover from a lost history: a full sweep pass of one entity
    (documents against rows) and a read of the documents that differ."""

    def __init__(
        self, spec: EntitySpec, collection: Collection, sweeper: Sweeper, conn: Any
    ) -> None:
        self._spec = spec
        self._collection = collection
        self._sweeper = sweeper
        self._conn = conn

    async def sweep(self) -> tuple[int, list[str], dict[str, Document]]:
        """(documents compared, ids that differ, the documents of those still there)."""
        compared, differing = await full_pass(self._sweeper, self._conn)
        documents = await read_documents(self._spec, self._collection, differing)
        return compared, differing, documents


def _epoch_seconds(value: Any) -> float | None:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.timestamp()
    return None


def _json_safe(value: Any) -> Any:
    """Relaxed Extended JSON, as the quarantine keeps documents."""
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


def _legacy_id(spec: EntitySpec, event: Mapping[str, Any]) -> str | None:
    """The legacy id as backfill names it (``migrators.backfill.legacy_id_of``)."""
    for source in ("fullDocument", "fullDocumentBeforeChange"):
        document = event.get(source)
        if document:
            return legacy_id_of(spec, document)
    key = event.get("documentKey") or {}
    if spec.id_field == "_id" and "_id" in key:
        return legacy_id_of(spec, key)
    value = key.get(spec.id_field)  # sharded collections add the shard key
    return value if isinstance(value, str) and value.strip() else None


def event_from_change(spec: EntitySpec, change: Mapping[str, Any]) -> FeedEvent | None:
    """The feed event for one documented change event; None for events with no data."""
    operation = change.get("operationType")
    if operation in _ENDING_OPERATIONS:
        raise ChangeStreamInvalidated(spec.collection, str(operation))
    if operation not in _DATA_OPERATIONS:
        return None  # createIndexes and other DDL events carry no document
    cluster_time = change.get("clusterTime")
    if not isinstance(cluster_time, Timestamp):
        raise ValueError(f"change event without a BSON Timestamp clusterTime: {cluster_time!r}")
    version = version_from_timestamp(cluster_time.time, cluster_time.inc)
    occurred = _epoch_seconds(change.get("wallTime"))
    document: Any = None if operation == "delete" else change.get("fullDocument")
    raw = {
        "operationType": operation,
        "documentKey": _json_safe(change.get("documentKey")),
        "clusterTime": [cluster_time.time, cluster_time.inc],
        "resumeToken": _json_safe(change.get("_id")),
    }
    if operation == "update" and document is None:
        # updateLookup found nothing: the document was deleted after this update, and its
        # delete event follows; there is nothing to apply for this one.
        return None
    return FeedEvent(
        legacy_id=_legacy_id(spec, change),
        document=dict(document) if document is not None else None,
        version=version,
        occurred_at=occurred if occurred is not None else float(cluster_time.time),
        raw=raw,
        echo=is_reverse_sync_change(change),
    )


class ChangeStreamFeed:
    """A :class:`~migrators.feeds.Feed` over a change-stream source."""

    name = FEED_NAME

    def __init__(
        self,
        spec: EntitySpec,
        source: ChangeStreamSource,
        *,
        batch_window: float = 0.1,
        recovery: HistoryRecovery | None = None,
    ) -> None:
        self._spec = spec
        self._source = source
        # A batch closes this long after its first event even if events keep coming, so a
        # steady trickle cannot hold events back until max_events have gathered.
        self._batch_window = batch_window
        # Without it, a lost history stops the worker (ChangeStreamHistoryLost).
        self._recovery = recovery
        self._cursor: ChangeStreamCursor | None = None
        self._token: Mapping[str, Any] | None = None
        self._token_stored_at = 0.0
        # What a recovery found, given out before the new stream's events (None: nothing
        # pending; an empty list still stores the new stream's position).
        self._swept: list[FeedEvent] | None = None
        self._swept_position: dict[str, Any] = {}
        self._lost_token: Any = None

    async def open(self, position: Mapping[str, Any] | None) -> None:
        self._token = (position or {}).get("resume_token")
        self._token_stored_at = 0.0  # store the starting point at once when there was none
        self._swept = None
        try:
            self._cursor = await self._source.open(self._token)
        except Exception as exc:
            if not is_history_lost(exc):
                raise
            await self._recover(exc)

    async def _recover(self, exc: BaseException) -> None:
        """The history after the stored token is gone: sweep the gap, go on with a new stream.

        1. Wait for the next whole second ``S`` of the clock, then open a new stream from
           "now": every write from then on comes through it, with a version above
           ``(S, 0)``.
        2. A full sweep pass compares every document with its rows; each id that differs is
           read again and given out with version ``(S, 0)`` (absent: a delete). A write the
           lost history held happened before ``S``, so the document read carries it; one
           made after the new stream opened has a higher version and wins.
        3. Every batch of swept events but the last keeps the old token: a crash part way
           through starts the recovery again. The last stores the new stream's token.
        """
        if self._recovery is None:
            if isinstance(exc, ChangeStreamHistoryLost):
                raise exc
            raise ChangeStreamHistoryLost(self._token, str(exc)) from exc
        lost_at = dict(self._token or {})
        self._lost_token = _json_safe(lost_at)
        if self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            await cursor.close()
        second = math.floor(time.time()) + 1
        await asyncio.sleep(max(0.0, second - time.time()))
        self._cursor = await self._source.open(None)
        compared, differing, documents = await self._recovery.sweep()
        version = version_from_timestamp(second, 0)
        self._swept = [
            FeedEvent(
                legacy_id=legacy_id,
                document=documents.get(legacy_id),
                version=version,
                occurred_at=None,
                raw={"feed": FEED_NAME, "reason": "history-lost sweep"},
            )
            for legacy_id in differing
        ]
        token = self._cursor.resume_token
        # With no token yet from the new stream, the old one stays until its first event.
        self._swept_position = {"resume_token": _json_safe(token if token else self._token)}
        if token:
            self._token, self._token_stored_at = token, time.monotonic()
        log.warning(
            "%s sync: change history lost at token %s; swept %d documents, %d differed, "
            "resumed on a new stream",
            self._spec.name,
            json.dumps(self._lost_token),
            compared,
            len(differing),
        )

    def _swept_batch(self, max_events: int) -> FeedBatch:
        assert self._swept is not None
        events, rest = self._swept[:max_events], self._swept[max_events:]
        if rest:  # not the last: the lost token stays, so a crash recovers again
            self._swept = rest
            return FeedBatch(events=events, position={"resume_token": self._lost_token})
        self._swept = None
        return FeedBatch(events=events, position=self._swept_position)

    def _idle_batch(self) -> FeedBatch | None:
        """An empty batch that stores how far an idle stream has read, now and then."""
        assert self._cursor is not None
        token = self._cursor.resume_token
        now = time.monotonic()
        if token is None or token == self._token:
            return None
        if self._token is not None and now - self._token_stored_at < IDLE_POSITION_SECONDS:
            return None
        self._token, self._token_stored_at = token, now
        return FeedBatch(events=[], position={"resume_token": _json_safe(token)}, caught_up=True)

    def watermark(self, read_at: float) -> float | None:
        return read_at  # every change reaches the stream, in order

    async def next_batch(self, max_events: int) -> FeedBatch | None:
        if self._cursor is None:
            raise RuntimeError("ChangeStreamFeed.next_batch before open")
        if self._swept is not None:
            return self._swept_batch(max_events)
        events: list[FeedEvent] = []
        last_token: Mapping[str, Any] | None = None
        caught_up = False
        closes_at = float("inf")
        while len(events) < max_events and time.monotonic() < closes_at:
            try:
                change = await self._cursor.try_next()
            except Exception as exc:
                if not is_history_lost(exc):
                    raise
                # What this batch gathered is not lost: the sweep reads those documents.
                await self._recover(exc)
                return self._swept_batch(max_events)
            if change is None:
                caught_up = True
                break
            if last_token is None:
                closes_at = time.monotonic() + self._batch_window
            last_token = change["_id"]
            event = event_from_change(self._spec, change)
            if event is not None:
                events.append(event)
        if last_token is None:
            return self._idle_batch()
        self._token, self._token_stored_at = last_token, time.monotonic()
        return FeedBatch(
            events=events,
            position={"resume_token": _json_safe(last_token)},
            caught_up=caught_up,
        )

    async def close(self) -> None:
        if self._cursor is not None:
            cursor, self._cursor = self._cursor, None
            await cursor.close()
