"""Change feeds of the forward sync: what a feed hands the worker, and how versions are made.

A feed turns changes in one legacy collection into :class:`FeedEvent` batches.
The worker (:mod:`migrators.sync`) applies each batch through the one batch
writer in one PostgreSQL transaction, together with the batch's
:attr:`FeedBatch.position`, and only then calls :meth:`FeedBatch.acknowledge`.
So a position is never ahead of the rows it stands for, and whatever a crash
loses between the commit and the acknowledgement is delivered again and
absorbed by the version guard.

Two feeds exist:

* :mod:`migrators.feeds.change_stream`: MongoDB change streams, resumed from
  the stored resume token (replica sets and sharded clusters);
* :mod:`migrators.feeds.polling`: for a standalone ``mongod``, the ids that
  writes through the proxy touched (:mod:`migrators.touched`) plus an
  anti-entropy sweep (:mod:`migrators.feeds.sweep`).

Versions (``source_version`` in every migrated table) share one encoding in
both feeds: ``seconds << 32 | ordinal``, the layout of a BSON Timestamp. A
change-stream event's version is its ``clusterTime``; a polled document's
version is the moment it was observed (:class:`ObservationClock`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from migrators.spec import Document

__all__ = [
    "Feed",
    "FeedBatch",
    "FeedEvent",
    "ObservationClock",
    "observation_version",
    "version_from_timestamp",
    "version_seconds",
]

_ORDINAL_BITS = 32
_ORDINAL_MASK = (1 << _ORDINAL_BITS) - 1


def version_from_timestamp(seconds: int, increment: int) -> int:
    """The version of a change made at BSON Timestamp ``(seconds, increment)``."""
    if seconds < 0 or not 0 <= increment <= _ORDINAL_MASK:
        raise ValueError(f"not a BSON Timestamp: ({seconds}, {increment})")
    return (seconds << _ORDINAL_BITS) | increment


def version_seconds(version: int) -> int:
    """The wall-clock second a version stands for."""
    return version >> _ORDINAL_BITS


def observation_version(now: float) -> int:
    """The version of a read made at epoch seconds ``now`` (microseconds in the ordinal).

    For one-off readers (backfill, verify --repair) that take one version per batch before
    reading; the sync's feeds use :class:`ObservationClock`, which also never repeats.
    """
    seconds = int(now)
    return version_from_timestamp(seconds, int((now - seconds) * 1_000_000))


class ObservationClock:
    """Versions for documents read (polled) rather than reported by the source.

    A version is taken *before* the read it labels, and reads are serialized by
    the entity's single leader, so a larger version always labels a read that
    started later and therefore saw every write the earlier read saw, or more:
    a later read never loses to an earlier one. The floor (the last version the
    previous leader committed, kept in the feed position) keeps versions rising
    across restarts and take-overs even if the new leader's clock is behind.

    The microseconds within the second fill the ordinal, so an observation at
    wall time T compares with a change-stream event at ``clusterTime`` T the
    way time does.
    """

    def __init__(self, floor: int = 0) -> None:
        self.last = floor

    def next(self, now: float) -> int:
        self.last = max(observation_version(now), self.last + 1)
        return self.last


@dataclass(frozen=True)
class FeedEvent:
    """One change of one legacy document, ready to apply."""

    legacy_id: str | None  # None when the source did not say which document (dead-lettered)
    document: Document | None  # the document as it now is; None when it was deleted
    version: int  # seconds << 32 | ordinal; the writer keeps the highest per row
    occurred_at: float | None  # epoch seconds of the change in the source, for the lag
    # What the feed saw, JSON-safe, kept with a dead letter; never holds more than the
    # source document already does.
    raw: Mapping[str, Any] = field(default_factory=dict)
    # Written by the reverse sync (see migrators.origin): not applied, never echoed back.
    echo: bool = False


@dataclass
class FeedBatch:
    """Events plus the feed position that is stored with them."""

    events: list[FeedEvent]
    position: dict[str, Any]  # JSON; migration_feed_positions.position
    # Called once the batch's transaction committed (e.g. XACK of the touched ids).
    acknowledge: Callable[[], Awaitable[None]] | None = None
    # True when the feed has nothing older left to give (the worker reports lag 0 then).
    caught_up: bool = False


class Feed(Protocol):
    """What the worker needs from a feed; one feed instance serves one entity."""

    name: str  # "change-stream" or "polling"; the second key of the stored position

    async def open(self, position: Mapping[str, Any] | None) -> None:
        """Start from the stored position (None: from now on / the beginning)."""

    async def next_batch(self, max_events: int) -> FeedBatch | None:
        """The next events, waiting briefly for some; None when there is nothing yet."""

    def watermark(self, read_at: float) -> float | None:
        """How far the worker may say it applied, having found the feed caught up at
        ``read_at`` (epoch seconds): every change before the result is applied. None: no
        claim yet."""

    async def close(self) -> None: ...
