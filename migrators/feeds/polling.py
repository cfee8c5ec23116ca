"""The polling feed, for a standalone ``mongod`` (no oplog, no change streams).

Two sources of ids to read again, combined in one feed:

* the touched-ids stream (:mod:`migrators.touched`): every write that went
  through the proxy to legacy names its id right after it succeeded; the feed
  blocks on it for ``block_ms`` at most, so such a write is applied within one
  batch's time (low latency);
* the revisited rows (``EntitySpec.revisit``): the documents of rows the spec names as
  changed by legacy on its own (job runs not final: legacy's simulator moves them), read
  again every ``revisit_interval`` seconds;
* the tail of an append-only collection keyed by ObjectId (``EntitySpec.append_only``,
  ``id_field == "_id"``: activity): the documents inserted after the last one seen, read
  every ``revisit_interval`` seconds (an entry inserted with an older ObjectId than one
  already seen, as the reverse sync inserts the new side's, is left to the sweep);
* the anti-entropy sweep (:mod:`migrators.feeds.sweep`): every
  ``sweep_interval`` seconds one round of bucket checksums, so that writes
  that bypassed the proxy are found within a full pass,
  ``ceil(buckets / buckets_per_round) * sweep_interval`` seconds.

For each batch of ids the feed takes a version from its
:class:`~migrators.feeds.ObservationClock` *before* it reads the documents
(``find`` on the legacy id), so the version labels a read that happened after
every write it could reflect; a document that is no longer there is a
deletion. Touched entries are acknowledged (XACK) only after the batch's
transaction committed.

Position (JSON, stored with the rows): ``observed`` (the last version used,
the floor of the next leader's clock) and ``next_bucket`` (where the sweep goes
on).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from bson import ObjectId

from migrators.feeds import FeedBatch, FeedEvent, ObservationClock
from migrators.feeds.sweep import Sweeper, read_documents
from migrators.spec import Document, EntitySpec
from migrators.touched import TouchedEntry, TouchedReader
from schema.tenancy import enter_sync
from strangler.mongo import Collection

__all__ = ["FEED_NAME", "PollingFeed"]

FEED_NAME = "polling"

Clock = Callable[[], float]


class PollingFeed:
    """A :class:`~migrators.feeds.Feed`: touched ids first, a sweep round when due."""

    name = FEED_NAME

    def __init__(
        self,
        spec: EntitySpec,
        collection: Collection,
        touched: TouchedReader,
        sweeper: Sweeper | None,
        conn: asyncpg.Connection,
        *,
        sweep_interval: float = 5.0,
        block_ms: int = 200,
        clock: Clock = time.time,
        revisit_interval: float = 1.0,
    ) -> None:
        self._spec = spec
        self._collection = collection
        self._touched = touched
        self._sweeper = sweeper
        self._conn = conn
        self._sweep_interval = sweep_interval
        self._block_ms = block_ms
        self._clock = clock
        self._observations = ObservationClock()
        self._next_bucket = 0
        self._next_sweep_at = 0.0
        self._swept_buckets = 0  # since open: a full pass is what `--once` waits for
        self._pending_sweep_ids: list[str] = []
        self._revisit_interval = revisit_interval
        self._next_revisit_at = 0.0
        self._tails = spec.append_only and spec.id_field == "_id"
        self._tail_after: ObjectId | None = None
        # sweep_only: when the round covering each bucket last started (epoch seconds)
        self._bucket_swept_at: dict[int, float] = {}

    @property
    def full_pass_done(self) -> bool:
        return self._sweeper is None or self._swept_buckets >= self._sweeper.buckets

    async def open(self, position: Mapping[str, Any] | None) -> None:
        position = position or {}
        self._observations = ObservationClock(int(position.get("observed") or 0))
        self._next_bucket = int(position.get("next_bucket") or 0)
        self._swept_buckets = 0
        self._bucket_swept_at = {}
        self._pending_sweep_ids = []
        self._next_sweep_at = 0.0  # a new leader sweeps at once
        tail = position.get("tail_after")
        self._tail_after = (
            ObjectId(tail) if isinstance(tail, str) and ObjectId.is_valid(tail) else None
        )
        await self._touched.ensure_group()

    def _position(self) -> dict[str, Any]:
        position: dict[str, Any] = {
            "observed": self._observations.last,
            "next_bucket": self._next_bucket,
        }
        if self._tail_after is not None:
            position["tail_after"] = str(self._tail_after)
        return position

    def watermark(self, read_at: float) -> float | None:
        """``read_at`` when touched ids name every change. A sweep-only entity's changes
        are found by the sweep alone: what the last full pass saw, i.e. the start of the
        oldest round among the latest of each bucket (its differing documents are applied
        by the time the feed is caught up)."""
        if not self._spec.sweep_only:
            return read_at
        if self._sweeper is None or len(self._bucket_swept_at) < self._sweeper.buckets:
            return None
        return min(read_at, *self._bucket_swept_at.values())

    async def _sweep_round(self) -> None:
        assert self._sweeper is not None
        started = self._clock()
        for bucket in self._sweeper.slice(self._next_bucket):
            self._bucket_swept_at[bucket] = started
        result = await self._sweeper.run_round(self._conn, self._next_bucket)
        self._next_bucket = (self._next_bucket + self._sweeper.buckets_per_round) % (
            self._sweeper.buckets
        )
        self._swept_buckets += self._sweeper.buckets_per_round
        self._pending_sweep_ids.extend(result.differing_ids)
        self._next_sweep_at = time.monotonic() + self._sweep_interval

    async def _tail(self) -> None:
        """Queue the documents inserted after the last ObjectId seen (1,000 at most)."""
        if self._tail_after is None:  # a first leader: what is there now, the sweep's
            newest = await self._collection.find({}, {"_id": 1}).sort("_id", -1).limit(1).to_list(1)
            oid = newest[0]["_id"] if newest else None
            self._tail_after = oid if isinstance(oid, ObjectId) else ObjectId.from_datetime(
                datetime.fromtimestamp(self._clock(), UTC))  # fmt: skip
            return
        found = await (
            self._collection.find({"_id": {"$gt": self._tail_after}}, {"_id": 1})
            .sort("_id", 1).limit(1000).to_list(1000)
        )  # fmt: skip
        ids = [d["_id"] for d in found if isinstance(d.get("_id"), ObjectId)]
        if ids:
            self._tail_after = ids[-1]
            known = set(self._pending_sweep_ids)
            self._pending_sweep_ids.extend(str(i) for i in ids if str(i) not in known)

    async def _revisit(self) -> None:
        """Queue the documents of the rows ``spec.revisit`` names (at most 1,000 a time)."""
        self._next_revisit_at = time.monotonic() + self._revisit_interval
        if self._tails:
            await self._tail()
        spec = self._spec
        if not spec.revisit:
            return
        async with self._conn.transaction(readonly=True):
            await enter_sync(self._conn)
            rows = await self._conn.fetch(
                f"SELECT {spec.legacy_id_column} FROM {spec.tables[0]} "
                f"WHERE {spec.revisit} LIMIT 1000"
            )
        known = set(self._pending_sweep_ids)
        self._pending_sweep_ids.extend(r[0] for r in rows if r[0] not in known)

    async def _read(self, ids: list[str]) -> dict[str, Document]:
        return await read_documents(self._spec, self._collection, ids)

    async def next_batch(self, max_events: int) -> FeedBatch | None:
        # A new leader first makes one full pass at once (rounds back to back): whatever
        # happened while no one led is found; then a round every sweep_interval.
        sweep_due = self._sweeper is not None and (
            not self.full_pass_done or time.monotonic() >= self._next_sweep_at
        )
        swept_now = False
        if (self._spec.revisit or self._tails) and time.monotonic() >= self._next_revisit_at:
            await self._revisit()
        if sweep_due and not self._pending_sweep_ids:
            await self._sweep_round()
            swept_now = True
        entries: list[TouchedEntry] = await self._touched.read(
            max_events, 0 if (swept_now or self._pending_sweep_ids) else self._block_ms
        )
        swept = self._pending_sweep_ids[: max(0, max_events - len(entries))]
        self._pending_sweep_ids = self._pending_sweep_ids[len(swept) :]
        if not entries and not swept and not swept_now:
            return None
        occurred: dict[str, float] = {}
        for entry in entries:  # the oldest write of an id is the one its lag counts from
            if entry.legacy_id:
                occurred[entry.legacy_id] = min(entry.at, occurred.get(entry.legacy_id, math.inf))
        ids = list(dict.fromkeys([*occurred, *swept]))
        version = self._observations.next(self._clock())  # before the read it labels
        documents = await self._read(ids)
        events = [
            FeedEvent(
                legacy_id=legacy_id,
                document=documents.get(legacy_id),
                version=version,
                occurred_at=occurred.get(legacy_id),
                raw={"feed": FEED_NAME, "reason": "touched" if legacy_id in occurred else "sweep"},
            )
            for legacy_id in ids
        ]
        entry_ids = [entry.entry_id for entry in entries]

        async def acknowledge() -> None:
            await self._touched.acknowledge(entry_ids)

        return FeedBatch(
            events=events,
            position=self._position(),
            acknowledge=acknowledge if entry_ids else None,
            caught_up=len(entries) < max_events
            and not self._pending_sweep_ids
            and self.full_pass_done,
        )

    async def close(self) -> None:
        self._pending_sweep_ids = []
