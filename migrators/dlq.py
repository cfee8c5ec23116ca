"""Dead letters: feed events that kept failing, kept for inspection and replay.

The worker records an event here after it failed ``max_attempts`` times (or
once, for an error that retrying cannot fix), in the same transaction as the
feed position that moves past it, so the feed goes on and the event is never
silently dropped. What is kept: the legacy id, the event's version and time,
what the feed saw (operation, resume token or stream entry), the error, and the
document with its secrets sealed the way the quarantine keeps documents
(``spec.seal_document``): a plaintext password never reaches PostgreSQL.

Replay does not re-apply the old event: it reads the document as MongoDB holds
it *now* and applies that through the writer with a fresh observation version
(see :class:`migrators.feeds.ObservationClock`), which is what the feed would
deliver for it today. The version guard keeps that safe beside a running
worker: whichever of the two read later wins.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from bson import json_util
from bson.json_util import RELAXED_JSON_OPTIONS

from migrators.backfill import legacy_id_filter
from migrators.feeds import FeedEvent, ObservationClock
from migrators.origin import strip_origin
from migrators.spec import EntitySpec, MappingContext
from migrators.writer import SourceItem, write_batch
from strangler.errors import ServiceUnavailable, StranglerError
from strangler.mongo import Database

__all__ = [
    "DeadLetter",
    "Failure",
    "ReplayOutcome",
    "list_dead_letters",
    "record_dead_letters",
    "replay_dead_letters",
]

_ERROR_TEXT_LIMIT = 1000


@dataclass(frozen=True)
class Failure:
    event: FeedEvent
    error: BaseException
    attempts: int


@dataclass(frozen=True)
class DeadLetter:
    id: int
    entity: str
    legacy_id: str | None
    feed: str
    error_class: str
    error: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    replayed_at: datetime | None
    replay_outcome: str | None
    event: dict[str, Any]


@dataclass(frozen=True)
class ReplayOutcome:
    id: int
    legacy_id: str | None
    outcome: str  # applied | skipped | failed
    detail: str = ""


def _storable(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL: shown as U+FFFD (often why the event failed)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _event_json(spec: EntitySpec, ctx: MappingContext, event: FeedEvent) -> str:
    document = event.document
    if document is not None:
        document = strip_origin(document)
        if spec.seal_document is not None:
            document = spec.seal_document(document, ctx)
    body = {
        "legacy_id": event.legacy_id,
        "version": event.version,
        "occurred_at": event.occurred_at,
        "source": dict(event.raw),
        "document": json.loads(json_util.dumps(document, json_options=RELAXED_JSON_OPTIONS)),
    }
    return json.dumps(_storable(body))


def _error_text(error: BaseException) -> str:
    return _storable((str(error) or type(error).__name__)[:_ERROR_TEXT_LIMIT])


async def record_dead_letters(
    conn: asyncpg.Connection,
    spec: EntitySpec,
    ctx: MappingContext,
    feed: str,
    failures: Sequence[Failure],
) -> None:
    """Insert one dead letter per failure (call inside the batch's transaction)."""
    if not failures:
        return
    await conn.executemany(
        """INSERT INTO migration_dead_letters
               (entity, legacy_id, feed, event, error_class, error, attempts)
           VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)""",
        [
            (
                spec.name,
                _storable(f.event.legacy_id),
                feed,
                _event_json(spec, ctx, f.event),
                type(f.error).__name__,
                _error_text(f.error),
                max(1, f.attempts),
            )
            for f in failures
        ],
    )


async def list_dead_letters(
    conn: asyncpg.Connection,
    *,
    entity: str | None = None,
    include_replayed: bool = False,
    ids: Sequence[int] = (),
    limit: int = 1000,
) -> list[DeadLetter]:
    records = await conn.fetch(
        """SELECT * FROM migration_dead_letters
           WHERE ($1::text IS NULL OR entity = $1)
             AND ($2 OR replayed_at IS NULL OR replay_outcome = 'failed')
             AND (cardinality($3::bigint[]) = 0 OR id = ANY($3::bigint[]))
           ORDER BY id LIMIT $4""",
        entity,
        include_replayed,
        list(ids),
        limit,
    )
    return [
        DeadLetter(
            id=r["id"],
            entity=r["entity"],
            legacy_id=r["legacy_id"],
            feed=r["feed"],
            error_class=r["error_class"],
            error=r["error"],
            attempts=r["attempts"],
            first_failed_at=r["first_failed_at"],
            last_failed_at=r["last_failed_at"],
            replayed_at=r["replayed_at"],
            replay_outcome=r["replay_outcome"],
            event=json.loads(r["event"]) if isinstance(r["event"], str) else r["event"],
        )
        for r in records
    ]


async def _mark(
    conn: asyncpg.Connection, letter: DeadLetter, outcome: str, error: BaseException | None
) -> None:
    if error is None:
        await conn.execute(
            """UPDATE migration_dead_letters SET replayed_at = now(), replay_outcome = $2
               WHERE id = $1""",
            letter.id,
            outcome,
        )
        return
    await conn.execute(
        """UPDATE migration_dead_letters
           SET replayed_at = now(), replay_outcome = 'failed', attempts = attempts + 1,
               last_failed_at = now(), error_class = $2, error = $3
           WHERE id = $1""",
        letter.id,
        type(error).__name__,
        _error_text(error),
    )


async def replay_dead_letters(
    conn: asyncpg.Connection,
    db: Database,
    specs: dict[str, EntitySpec],
    ctx: MappingContext,
    letters: Sequence[DeadLetter],
    *,
    clock: ObservationClock | None = None,
) -> list[ReplayOutcome]:
    """Re-sync each letter's document from MongoDB as it is now; record the outcome."""
    clock = clock or ObservationClock()
    outcomes: list[ReplayOutcome] = []
    for letter in letters:
        spec = specs[letter.entity]
        clock.last = max(clock.last, int(letter.event.get("version") or 0))
        if not letter.legacy_id:
            error = ValueError("the event named no legacy id; run 'strangler verify --repair'")
            await _mark(conn, letter, "failed", error)
            outcomes.append(ReplayOutcome(letter.id, None, "failed", str(error)))
            continue
        version = clock.next(time.time())  # taken before the read it labels
        document = await db[spec.collection].find_one(legacy_id_filter(spec, [letter.legacy_id]))
        item = SourceItem(
            letter.legacy_id, strip_origin(document) if document is not None else None, version
        )
        try:
            result = await write_batch(conn, spec, [item], ctx=ctx, source="sync")
        except ServiceUnavailable:
            raise
        except StranglerError as exc:
            await _mark(conn, letter, "failed", exc)
            outcomes.append(ReplayOutcome(letter.id, letter.legacy_id, "failed", str(exc)))
            continue
        changed = result.written + result.deleted + sum(result.quarantined.values())
        outcome = "applied" if changed else "skipped"
        await _mark(conn, letter, outcome, None)
        detail = ", ".join(f"quarantined: {reason}" for reason in result.quarantined)
        outcomes.append(ReplayOutcome(letter.id, letter.legacy_id, outcome, detail))
    return outcomes
