"""Whether MongoDB was retired: the point of no return ``strangler retire`` records.

    retirement = await read_retirement(conn)        # None while MongoDB is still in use
    await refuse_if_retired(conn, "the reverse sync does not start")  # Retired after it

The record is the one row of ``migration_retirement`` (migration 0043). After it,
PostgreSQL alone is the truth: nothing is carried back to MongoDB, so the reverse sync
must not run and no entity may leave ``new`` (both ask here). It lives below the control
plane because the workers ask too, and migrators never import control or proxy.

:func:`record_retirement` writes the row in one transaction, as ``strangler_sync`` (the
outbox it checks is a tenant table): it refuses while any outbox row is unapplied, and
inserts nothing when a row exists already, so retiring twice records once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from schema.tenancy import enter_sync
from strangler.errors import PermanentError

__all__ = [
    "OutboxNotDrained",
    "Retired",
    "Retirement",
    "read_retirement",
    "record_retirement",
    "refuse_if_retired",
    "retirement_recordable",
]

_COLUMNS = (
    "retired_at, who, reason, flag_table_hash, mongo_url, verify_summary, outbox_applied_up_to"
)


@dataclass(frozen=True)
class Retirement:
    retired_at: datetime
    who: str
    flag_table_hash: str
    mongo_url: str  # redacted when it was recorded
    outbox_applied_up_to: int | None
    reason: str | None = None
    verify_summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def when(self) -> str:
        return self.retired_at.astimezone(UTC).isoformat(timespec="seconds")

    def describe(self) -> str:
        return f"MongoDB was retired at {self.when} by {self.who}"


class Retired(PermanentError):
    """Refused: MongoDB was retired, PostgreSQL alone is the truth (docs/retire.md)."""

    def __init__(self, retirement: Retirement, refused: str) -> None:
        self.retirement = retirement
        self.refused = refused
        super().__init__(
            f"{retirement.describe()}: {refused} (nothing is carried back to MongoDB any "
            "more; docs/retire.md)"
        )


class OutboxNotDrained(PermanentError):
    def __init__(self, pending: int) -> None:
        self.pending = pending
        super().__init__(
            f"{pending} outbox row(s) not yet applied to MongoDB: run 'strangler reverse-sync' "
            "(or let the running one drain them), then retire again"
        )


def _retirement(row: asyncpg.Record) -> Retirement:
    summary = row["verify_summary"]
    return Retirement(
        retired_at=row["retired_at"],
        who=row["who"],
        flag_table_hash=row["flag_table_hash"],
        mongo_url=row["mongo_url"],
        outbox_applied_up_to=row["outbox_applied_up_to"],
        reason=row["reason"],
        verify_summary=json.loads(summary) if isinstance(summary, str) else dict(summary),
    )


async def retirement_recordable(conn: asyncpg.Connection) -> bool:
    """Whether the schema has the table (migration 0043)."""
    exists: bool = await conn.fetchval("SELECT to_regclass('migration_retirement') IS NOT NULL")
    return exists


async def read_retirement(conn: asyncpg.Connection) -> Retirement | None:
    """The point of no return, or None: not retired (or a schema from before 0043)."""
    if not await retirement_recordable(conn):
        return None
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM migration_retirement")
    return None if row is None else _retirement(row)


async def refuse_if_retired(conn: asyncpg.Connection, refused: str) -> None:
    """After it, raise :class:`Retired`; ``refused`` says what does not happen."""
    retirement = await read_retirement(conn)
    if retirement is not None:
        raise Retired(retirement, refused)


async def record_retirement(
    conn: asyncpg.Connection,
    *,
    who: str,
    flag_table_hash: str,
    mongo_url: str,
    verify_summary: Mapping[str, Any],
    reason: str | None = None,
) -> tuple[Retirement, bool]:
    """Record the point of no return; (the record, whether this call wrote it).

    ``mongo_url`` must be redacted already. The outbox is checked again inside the
    transaction: a write the new side committed meanwhile and the reverse sync has not
    applied yet refuses it (:class:`OutboxNotDrained`), nothing recorded."""
    async with conn.transaction():
        await enter_sync(conn)
        outbox = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE applied_at IS NULL) AS pending, "
            "max(id) FILTER (WHERE applied_at IS NOT NULL) AS applied_up_to "
            "FROM migration_outbox WHERE origin = 'new'"
        )
        row = await conn.fetchrow(
            "INSERT INTO migration_retirement (who, reason, flag_table_hash, mongo_url, "
            "verify_summary, outbox_applied_up_to) VALUES ($1, $2, $3, $4, $5::jsonb, $6) "
            f"ON CONFLICT (singleton) DO NOTHING RETURNING {_COLUMNS}",
            who,
            reason,
            flag_table_hash,
            mongo_url,
            json.dumps(verify_summary, sort_keys=True),
            outbox["applied_up_to"],
        )
        if row is not None and outbox["pending"]:
            raise OutboxNotDrained(outbox["pending"])  # rolls the insert back
    if row is not None:
        return _retirement(row), True
    # Retired before, or by a concurrent retire: the conflict waited for its commit.
    existing = await read_retirement(conn)
    if existing is None:  # pragma: no cover - the conflicting row cannot vanish (no DELETE)
        raise PermanentError("migration_retirement: the conflicting row is gone; run again")
    return existing, False
