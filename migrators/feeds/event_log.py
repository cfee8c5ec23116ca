"""An in-process change-stream source, for the store that has no change streams.

mongomock (behind ``MONGO_URL=memory://``) cannot ``watch``. :class:`EventLog`
stands in for the server's oplog: every write made through its ``insert``,
``update``, ``replace`` and ``delete`` is applied to the collection and
appended as a change event in MongoDB's documented format (``_id`` resume
token ``{"_data": <hex>}``, ``operationType``, ``documentKey``,
``fullDocument``, ``updateDescription``, ``clusterTime`` as a BSON Timestamp,
``wallTime``). :meth:`EventLog.open` returns a cursor with the part of
PyMongo's ``AsyncChangeStream`` the feed uses, and follows ``updateLookup``:
an update's ``fullDocument`` is looked up in the collection when the event is
read, as the server does.

It is the seam of :mod:`migrators.feeds.change_stream`; the production path
(``MongoChangeStreamSource``) calls ``collection.watch`` itself.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bson.timestamp import Timestamp

from migrators.feeds.change_stream import ChangeStreamHistoryLost
from strangler.mongo import Collection

__all__ = ["ChangeStreamHistoryLost", "EventLog", "EventLogCursor"]

Clock = Callable[[], float]


def _token(sequence: int) -> dict[str, str]:
    """The token standing after the first ``sequence`` events of the log."""
    return {"_data": f"82{sequence:016X}"}


def _sequence(token: Mapping[str, Any]) -> int | None:
    data = token.get("_data")
    if not isinstance(data, str) or not data.startswith("82") or len(data) != 18:
        return None
    try:
        return int(data[2:], 16)
    except ValueError:
        return None


class EventLog:
    """Writes to one collection, recorded as documented change events."""

    def __init__(
        self,
        collection: Collection,
        *,
        id_field: str,
        pre_images: bool = True,
        clock: Clock = time.time,
    ) -> None:
        self.collection = collection
        self._id_field = id_field
        self._pre_images = pre_images
        self._clock = clock
        self.events: list[dict[str, Any]] = []
        self._last_time = Timestamp(0, 0)
        self._appended = asyncio.Event()
        # legacy id -> _id of the documents written through this log: one scan less per
        # write on the in-process store, which has no indexes.
        self._keys: dict[Any, Any] = {}

    def _cluster_time(self) -> tuple[Timestamp, datetime]:
        now = self._clock()
        seconds = int(now)
        if seconds > self._last_time.time:
            stamp = Timestamp(seconds, 1)
        else:  # the same second (or a clock step back): the increment orders events
            stamp = Timestamp(self._last_time.time, self._last_time.inc + 1)
        self._last_time = stamp
        return stamp, datetime.fromtimestamp(now, tz=UTC)

    def _append(self, operation: str, key: Any, **fields: Any) -> dict[str, Any]:
        cluster_time, wall_time = self._cluster_time()
        event = {
            "_id": _token(len(self.events) + 1),
            "operationType": operation,
            "clusterTime": cluster_time,
            "wallTime": wall_time,
            "ns": {"db": "uzo", "coll": self.collection.name},
            "documentKey": {"_id": key},
            **fields,
        }
        self.events.append(event)
        self._appended.set()
        self._appended = asyncio.Event()
        return event

    async def wait_for_more(self, known: int, seconds: float) -> None:
        """Return when the log holds more than ``known`` events, or after ``seconds``."""
        if len(self.events) > known:
            return
        try:
            await asyncio.wait_for(self._appended.wait(), seconds)
        except TimeoutError:
            pass

    async def insert(self, document: Mapping[str, Any]) -> dict[str, Any]:
        stored = dict(document)
        await self.collection.insert_one(stored)  # sets _id
        self._keys[stored.get(self._id_field)] = stored["_id"]
        return self._append("insert", stored["_id"], fullDocument=copy.deepcopy(stored))

    async def _key(self, legacy_id: Any) -> Any:
        key = self._keys.get(legacy_id)
        if key is None:
            found = await self.collection.find_one({self._id_field: legacy_id}, {"_id": 1})
            key = self._keys[legacy_id] = found["_id"] if found else None
        return key

    async def update(self, legacy_id: str, changes: Mapping[str, Any]) -> dict[str, Any] | None:
        key = await self._key(legacy_id)
        if key is None:
            return None
        await self.collection.update_one({"_id": key}, {"$set": dict(changes)})
        return self._append(
            "update",
            key,
            updateDescription={
                "updatedFields": copy.deepcopy(dict(changes)),
                "removedFields": [],
                "truncatedArrays": [],
            },
        )

    async def replace(self, document: Mapping[str, Any]) -> dict[str, Any] | None:
        key = await self._key(document[self._id_field])
        if key is None:
            return None
        replacement = {**document, "_id": key}
        await self.collection.replace_one({"_id": key}, replacement)
        return self._append("replace", key, fullDocument=copy.deepcopy(replacement))

    async def delete(self, legacy_id: str) -> dict[str, Any] | None:
        key = await self._key(legacy_id)
        found = await self.collection.find_one({"_id": key}) if key is not None else None
        if found is None:
            return None
        self._keys.pop(legacy_id, None)
        await self.collection.delete_one({"_id": found["_id"]})
        extra = {"fullDocumentBeforeChange": found} if self._pre_images else {}
        return self._append("delete", found["_id"], **extra)

    async def open(
        self, resume_after: Mapping[str, Any] | None, *, max_await_seconds: float = 0.2
    ) -> EventLogCursor:
        # No token: like watch(), from now on.
        start = len(self.events) if resume_after is None else _sequence(resume_after)
        if start is None or start > len(self.events):
            raise ChangeStreamHistoryLost(resume_after or {})
        return EventLogCursor(self, start, max_await_seconds)


class EventLogCursor:
    """What the feed uses of ``AsyncChangeStream``: ``try_next``, ``resume_token``, ``close``."""

    def __init__(self, log: EventLog, start: int, max_await_seconds: float) -> None:
        self._log = log
        self._max_await = max_await_seconds
        self._next = start
        self._closed = False
        # Before any event, the token of where the cursor started (postBatchResumeToken).
        self._resume_token: dict[str, str] = _token(start)

    @property
    def resume_token(self) -> Mapping[str, Any] | None:
        return self._resume_token

    async def try_next(self) -> Mapping[str, Any] | None:
        if self._closed:
            raise RuntimeError("the change stream is closed")
        if self._next >= len(self._log.events):
            # Like a getMore with maxAwaitTimeMS: wait a little for new events first.
            await self._log.wait_for_more(self._next, self._max_await)
        if self._next >= len(self._log.events):
            return None
        event = copy.deepcopy(self._log.events[self._next])
        self._next += 1
        if event["operationType"] == "update":
            # updateLookup: the document as it is now, or null if it is gone.
            event["fullDocument"] = await self._log.collection.find_one(
                {"_id": event["documentKey"]["_id"]}
            )
        self._resume_token = dict(event["_id"])
        return event

    async def close(self) -> None:
        self._closed = True
