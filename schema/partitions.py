"""Monthly partitions of the high-volume tables (job_runs, user_activity).

Native range partitioning on ``created_at``, one partition per calendar month
(UTC), created ahead of time by :func:`ensure_partitions`, which ``strangler
schema upgrade`` calls and a periodic job (``strangler schema partitions``)
can call as often as it likes. Each table also has a DEFAULT partition so that
an insert never fails for want of a partition: far-future and far-past rows
(dirty legacy dates, a backfill of old history) land there.

A DEFAULT partition holding rows of a month forbids creating that month's
partition; so when it does, the rows are moved into the new partition in the
same transaction, under a lock that holds writers of the table for that time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

__all__ = [
    "MONTHLY_PARTITIONED",
    "NO_DATE",
    "PARTITION_COLUMN",
    "Month",
    "OldPartition",
    "PartitionCoverage",
    "RetentionPlan",
    "apply_retention",
    "ensure_months",
    "ensure_partitions",
    "is_no_date",
    "months_around",
    "parse_retention",
    "partition_coverage",
    "partition_name",
    "retention_horizon",
    "retention_plan",
]

MONTHLY_PARTITIONED: tuple[str, ...] = ("job_runs", "user_activity")
PARTITION_COLUMN = "created_at"
# The created_at of a row whose document gives no date at all (migrators.entities.runs):
# no month partition is ever made for it, so such rows stay in the DEFAULT partition.
NO_DATE = datetime(1, 1, 1, tzinfo=UTC)


def is_no_date(moment: datetime | None) -> bool:
    """Whether ``moment`` is NO_DATE (asyncpg reads the year 1 back as a naive datetime)."""
    return moment is not None and moment.replace(tzinfo=None) == datetime(1, 1, 1)


# Serializes partition maintenance on one database (upgrade and periodic jobs alike).
_LOCK_KEY = 0x5354524E50415254  # "STRNPART"


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of(cls, moment: datetime) -> Month:
        utc = moment.astimezone(UTC) if moment.tzinfo else moment
        return cls(utc.year, utc.month)

    def shifted(self, months: int) -> Month:
        index = self.year * 12 + (self.month - 1) + months
        return Month(index // 12, index % 12 + 1)

    @property
    def start(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.shifted(1).start

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


def months_around(current: Month, *, back: int, ahead: int) -> list[Month]:
    """``current`` with ``back`` months before it and ``ahead`` after it, in order."""
    return [current.shifted(offset) for offset in range(-back, ahead + 1)]


def partition_name(table: str, month: Month) -> str:
    return f"{table}_{month.year:04d}_{month.month:02d}"


def default_partition_name(table: str) -> str:
    return f"{table}_default"


def _literal(moment: datetime) -> str:
    return "'" + moment.strftime("%Y-%m-%d %H:%M:%S+00") + "'"


async def _existing_tables(conn: asyncpg.Connection, tables: Iterable[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1::text[])",
        list(tables),
    )
    present = {row["relname"] for row in rows}
    return [t for t in tables if t in present]


async def _partitions_of(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = $1::regclass",
        table,
    )
    return {row["relname"] for row in rows}


async def _columns(conn: asyncpg.Connection, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT quote_ident(attname) AS name FROM pg_attribute WHERE attrelid = $1::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        table,
    )
    return [row["name"] for row in rows]


async def _months_in_default(conn: asyncpg.Connection, table: str) -> list[Month]:
    rows = await conn.fetch(
        f"SELECT DISTINCT date_trunc('month', {PARTITION_COLUMN} AT TIME ZONE 'UTC') AS m "
        f"FROM {default_partition_name(table)} WHERE {PARTITION_COLUMN} IS NOT NULL "
        f"AND {PARTITION_COLUMN} > $1",
        NO_DATE,
    )
    return sorted(Month(row["m"].year, row["m"].month) for row in rows)


async def _create_month(conn: asyncpg.Connection, table: str, month: Month) -> int:
    """Create ``table``'s partition of ``month``; returns how many rows left the default."""
    name, default = partition_name(table, month), default_partition_name(table)
    low, high = _literal(month.start), _literal(month.end)
    in_month = f"{PARTITION_COLUMN} >= {low} AND {PARTITION_COLUMN} < {high}"
    if not await conn.fetchval(f"SELECT EXISTS (SELECT FROM {default} WHERE {in_month})"):
        await conn.execute(
            f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({low}) TO ({high})"
        )
        return 0
    columns = ", ".join(await _columns(conn, table))
    await conn.execute(
        f"CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    status = await conn.execute(
        f"WITH moved AS (DELETE FROM {default} WHERE {in_month} RETURNING {columns}) "
        f"INSERT INTO {name} ({columns}) SELECT {columns} FROM moved"
    )
    await conn.execute(
        f"ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({low}) TO ({high})"
    )
    return int(status.rsplit(" ", 1)[-1])


async def _ensure_table(
    conn: asyncpg.Connection,
    table: str,
    months: tuple[int, int],
    from_default: bool,
    lock_timeout_ms: int,
) -> list[tuple[str, int]]:
    """Partitions created for ``table`` (name, rows moved out of the default), one transaction."""
    months_back, months_ahead = months
    created: list[tuple[str, int]] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        now: datetime = await conn.fetchval("SELECT now()")
        wanted = set(months_around(Month.of(now), back=months_back, ahead=months_ahead))
        existing = await _partitions_of(conn, table)
        default = default_partition_name(table)
        if default not in existing:
            await conn.execute(f"CREATE TABLE {default} PARTITION OF {table} DEFAULT")
            created.append((default, 0))
        if from_default:
            wanted.update(await _months_in_default(conn, table))
        missing = [m for m in sorted(wanted) if partition_name(table, m) not in existing]
        if missing:
            # Creating a partition needs the parent's strongest lock; taken at once (no
            # upgrade from a weaker one, which could deadlock with a reader that writes).
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        for month in missing:
            created.append((partition_name(table, month), await _create_month(conn, table, month)))
    return created


async def ensure_months(
    conn: asyncpg.Connection,
    table: str,
    months: Iterable[Month],
    *,
    lock_timeout_ms: int = 5000,
) -> list[str]:
    """Create ``table``'s partitions of ``months`` that are missing (rows of those months
    already in the default partition move into them), in a transaction of its own; the
    names created. Called by the writer before a batch of old rows, so that history lands
    in its month. The month of :data:`NO_DATE` is never made. When the table's lock cannot
    be had within ``lock_timeout_ms``, nothing is created (LockNotAvailableError is
    raised): the rows go to the default partition, and ``strangler schema partitions
    --from-default`` carves them out later."""
    wanted = sorted({m for m in months if m != Month.of(NO_DATE)})
    if not wanted:
        return []
    existing = await _partitions_of(conn, table)
    if all(partition_name(table, m) in existing for m in wanted):
        return []
    created: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
        existing = await _partitions_of(conn, table)
        missing = [m for m in wanted if partition_name(table, m) not in existing]
        if missing:
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        for month in missing:
            await _create_month(conn, table, month)
            created.append(partition_name(table, month))
    return created


async def ensure_partitions(
    conn: asyncpg.Connection,
    months_ahead: int = 3,
    *,
    months_back: int = 1,
    from_default: bool = False,
    tables: Iterable[str] = MONTHLY_PARTITIONED,
    lock_timeout_ms: int = 5000,
    progress: Callable[[str], object] | None = None,
) -> list[str]:
    """Create the monthly partitions from ``months_back`` before the current month (database
    clock, UTC) to ``months_ahead`` after it, plus, with ``from_default``, one for every
    month that has rows in the default partition. Returns the names created; idempotent.

    Tables of ``tables`` that do not exist (yet) are skipped. A table whose lock cannot be
    had within ``lock_timeout_ms`` (a long transaction uses it) is skipped too, rather than
    queueing every writer of the table behind the wait: its months are created on the next
    run, months ahead of need, and the default partition takes any row meanwhile.
    """
    if months_ahead < 0 or months_back < 0:
        raise ValueError("months_ahead and months_back must not be negative")
    report = progress or (lambda _line: None)
    created: list[str] = []
    for table in await _existing_tables(conn, tables):
        try:
            done = await _ensure_table(
                conn, table, (months_back, months_ahead), from_default, lock_timeout_ms
            )
        except asyncpg.LockNotAvailableError:
            report(
                f"{table}: busy (no lock within {lock_timeout_ms} ms); its partitions will be "
                "created on the next run"
            )
            continue
        for name, moved in done:
            created.append(name)
            note = f", moved {moved} rows out of {default_partition_name(table)}" if moved else ""
            report(f"created partition {name}{note}")
    return created


@dataclass(frozen=True)
class PartitionCoverage:
    table: str
    months: tuple[Month, ...]
    default_rows: int

    def describe(self) -> str:
        span = f"{self.months[0]} to {self.months[-1]}" if self.months else "no monthly partition"
        return (
            f"{self.table}: {len(self.months)} monthly partitions ({span}); "
            f"default partition holds {self.default_rows} rows"
        )


async def partition_coverage(
    conn: asyncpg.Connection, tables: Iterable[str] = MONTHLY_PARTITIONED
) -> list[PartitionCoverage]:
    report = []
    for table in await _existing_tables(conn, tables):
        names = await _partitions_of(conn, table)
        months = []
        for name in names:
            suffix = name.removeprefix(f"{table}_")
            year, _, month = suffix.partition("_")
            if year.isdigit() and month.isdigit():
                months.append(Month(int(year), int(month)))
        default = default_partition_name(table)
        rows = await conn.fetchval(f"SELECT count(*) FROM {default}") if default in names else 0
        report.append(PartitionCoverage(table, tuple(sorted(months)), int(rows)))
    return report


# --- retention: whole old partitions dropped, never rows deleted ---------------------------


@dataclass(frozen=True)
class OldPartition:
    """A monthly partition wholly older than the retention horizon."""

    table: str
    name: str
    month: Month
    rows: int


@dataclass(frozen=True)
class RetentionPlan:
    keep_from: datetime  # the first day of the oldest month kept (UTC)
    partitions: tuple[OldPartition, ...]

    def lines(self) -> list[str]:
        if not self.partitions:
            return [f"no partition is older than {self.keep_from:%Y-%m-%d}: nothing to drop"]
        lines = [f"partitions wholly older than {self.keep_from:%Y-%m-%d} (kept from then on):"]
        lines += [f"  {p.name}: {p.rows} rows" for p in self.partitions]
        total = sum(p.rows for p in self.partitions)
        lines.append(f"{len(self.partitions)} partition(s), {total} rows")
        return lines


def parse_retention(text: str) -> int:
    """``12mo``, ``12m``, ``12`` (months) or ``2y`` -> a number of months (at least 1)."""
    cleaned = text.strip().lower()
    factor = 1
    for suffix, months in (("mo", 1), ("m", 1), ("y", 12)):
        if cleaned.endswith(suffix):
            cleaned, factor = cleaned.removesuffix(suffix), months
            break
    if not cleaned.isdigit() or int(cleaned) * factor < 1:
        raise ValueError(f"{text!r} is no retention: give months as 12mo (or 12, 2y), at least 1")
    return int(cleaned) * factor


async def retention_plan(
    conn: asyncpg.Connection, months: int, tables: Iterable[str] = MONTHLY_PARTITIONED
) -> RetentionPlan:
    """The monthly partitions of ``tables`` whose whole month lies before the horizon: the
    current month (database clock, UTC) and the ``months`` before it are kept."""
    if months < 1:
        raise ValueError("retention must keep at least one month")
    now: datetime = await conn.fetchval("SELECT now()")
    keep_from = Month.of(now).shifted(-months).start
    old: list[OldPartition] = []
    for table in await _existing_tables(conn, tables):
        for name in sorted(await _partitions_of(conn, table)):
            suffix = name.removeprefix(f"{table}_")
            year, _, month = suffix.partition("_")
            if not (year.isdigit() and month.isdigit()):
                continue  # the default partition: never dropped by retention
            found = Month(int(year), int(month))
            if found.end <= keep_from:
                rows = int(await conn.fetchval(f"SELECT count(*) FROM {name}"))
                old.append(OldPartition(table, name, found, rows))
    return RetentionPlan(keep_from, tuple(old))


async def apply_retention(
    conn: asyncpg.Connection, plan: RetentionPlan, *, lock_timeout_ms: int = 5000
) -> list[str]:
    """Drop the plan's partitions, one transaction per table. The horizon is recorded
    first (``partition_retention``), in the same transaction, so that no writer brings the
    dropped rows back from MongoDB. Returns the names dropped."""
    dropped: list[str] = []
    for table in sorted({p.table for p in plan.partitions}):
        names = [p.name for p in plan.partitions if p.table == table]
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await conn.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            await conn.execute(
                """INSERT INTO partition_retention AS r (table_name, keep_from, dropped)
                   VALUES ($1, $2, $3)
                   ON CONFLICT (table_name) DO UPDATE
                   SET keep_from = greatest(r.keep_from, EXCLUDED.keep_from), set_at = now(),
                       dropped = r.dropped || EXCLUDED.dropped""",
                table,
                plan.keep_from,
                names,
            )
            await conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            present = await _partitions_of(conn, table)
            for name in names:
                if name in present:
                    await conn.execute(f"DROP TABLE {name}")
                    dropped.append(name)
    return dropped


async def retention_horizon(conn: asyncpg.Connection, table: str) -> datetime | None:
    """The moment before which ``table`` keeps no rows (None: nothing was ever dropped)."""
    exists = await conn.fetchval("SELECT to_regclass('partition_retention') IS NOT NULL")
    if not exists:
        return None
    value: datetime | None = await conn.fetchval(
        "SELECT keep_from FROM partition_retention WHERE table_name = $1", table
    )
    return value
