"""Applies the schema migrations: ``upgrade`` and ``status``.

Each pending migration runs in its own transaction together with the row that
records its name and checksum in ``schema_migrations``: it is applied whole or
not at all. A session-level advisory lock serializes runners on one database:
a second runner waits for the first, then finds nothing left to do. Before
anything runs, every applied migration's file is checked against its recorded
checksum; an edited or deleted file stops the run.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from schema.connect import Progress, connect, connect_creating, database_errors, database_name
from schema.errors import (
    MigrationChanged,
    MigrationFailed,
    MigrationLayoutError,
    MigrationMissing,
    RoleSetupError,
)
from schema.files import MIGRATIONS_DIR, Migration, load_migrations
from schema.partitions import PartitionCoverage, ensure_partitions, partition_coverage
from schema.tenancy import APP_ROLE, SYNC_ROLE

__all__ = ["MigrationState", "SchemaStatus", "status", "upgrade"]

# "STRNGLER": one lock per database (advisory locks are scoped to the current database).
_UPGRADE_LOCK_KEY = 0x5354524E474C4552
_TRANSACTION_CONTROL = re.compile(
    r"^\s*(BEGIN|COMMIT|ROLLBACK|START\s+TRANSACTION)\s*;", re.IGNORECASE | re.MULTILINE
)
_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name        text PRIMARY KEY,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    duration_ms integer NOT NULL
)
"""
# Created when missing. strangler_app logs in without a password: only where pg_hba trusts
# it, elsewhere an administrator sets one or grants it to a login role.
_ROLES = {
    APP_ROLE: f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS",
    SYNC_ROLE: f"CREATE ROLE {SYNC_ROLE} NOLOGIN NOSUPERUSER BYPASSRLS",
}


@dataclass(frozen=True)
class MigrationState:
    name: str
    state: str  # "applied", "pending", "changed" (file edited since) or "missing" (file gone)
    checksum: str  # of the file as it is now; for a missing file, as recorded
    applied_at: datetime | None = None
    recorded_checksum: str | None = None


@dataclass(frozen=True)
class SchemaStatus:
    database: str
    exists: bool
    migrations: tuple[MigrationState, ...]
    partitions: tuple[PartitionCoverage, ...]

    @property
    def pending(self) -> list[str]:
        return [m.name for m in self.migrations if m.state == "pending"]

    @property
    def problems(self) -> list[MigrationState]:
        return [m for m in self.migrations if m.state in ("changed", "missing")]


async def _ensure_roles(conn: asyncpg.Connection) -> None:
    """Create the two roles if missing and let the migrating user switch to them."""
    for role, ddl in _ROLES.items():
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            continue
        try:
            await conn.execute(ddl)
        except (asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
            pass  # created meanwhile by a runner working on another database
        except asyncpg.InsufficientPrivilegeError as exc:
            raise RoleSetupError(
                f"role {role} does not exist and the DATABASE_URL user may not create it; "
                f"have a superuser run: {ddl}; then run the upgrade again"
            ) from exc
    if await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
        return
    for role in _ROLES:
        if await conn.fetchval("SELECT pg_has_role(current_user, $1, 'MEMBER')", role):
            continue
        try:
            await conn.execute(f"GRANT {role} TO CURRENT_USER")
        except asyncpg.InsufficientPrivilegeError as exc:
            raise RoleSetupError(
                f"the DATABASE_URL user is not a member of {role}; have a superuser run: "
                f"GRANT {role} TO <that user>; then run the upgrade again"
            ) from exc


async def _applied(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    exists = await conn.fetchval("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT name, checksum, applied_at FROM schema_migrations")
    return {row["name"]: row for row in rows}


def _compare(
    migrations: list[Migration], applied: dict[str, asyncpg.Record]
) -> list[MigrationState]:
    by_name = {m.name: m for m in migrations}
    states = []
    for m in migrations:
        record = applied.get(m.name)
        if record is None:
            states.append(MigrationState(m.name, "pending", m.checksum))
        else:
            state = "applied" if record["checksum"] == m.checksum else "changed"
            states.append(
                MigrationState(m.name, state, m.checksum, record["applied_at"], record["checksum"])
            )
    for name, record in sorted(applied.items()):
        if name not in by_name:
            states.append(
                MigrationState(
                    name, "missing", record["checksum"], record["applied_at"], record["checksum"]
                )
            )
    return states


def _check_no_transaction_control(migration: Migration) -> None:
    if _TRANSACTION_CONTROL.search(migration.sql):
        raise MigrationLayoutError(
            f"{migration.name} controls transactions itself (BEGIN/COMMIT/ROLLBACK); remove "
            "them: the runner wraps each migration in its own transaction"
        )


def _describe(exc: asyncpg.PostgresError, sql: str) -> str:
    where = ""
    position = getattr(exc, "position", None)
    if position and str(position).isdigit():
        where = f" at line {sql[: int(position)].count(chr(10)) + 1}"
    return f"{type(exc).__name__}{where}: {exc}"


async def _apply(conn: asyncpg.Connection, migration: Migration) -> int:
    started = time.monotonic()
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            elapsed = int((time.monotonic() - started) * 1000)
            await conn.execute(
                "INSERT INTO schema_migrations (name, checksum, duration_ms) VALUES ($1, $2, $3)",
                migration.name,
                migration.checksum,
                elapsed,
            )
    except asyncpg.PostgresError as exc:
        raise MigrationFailed(migration.name, _describe(exc, migration.sql)) from exc
    return elapsed


async def upgrade(
    database_url: str,
    *,
    progress: Progress = print,
    migrations_dir: Path = MIGRATIONS_DIR,
    months_ahead: int = 3,
) -> list[str]:
    """Apply every pending migration in order; return the names applied (empty if none)."""
    migrations = load_migrations(migrations_dir)
    for migration in migrations:
        _check_no_transaction_control(migration)
    async with database_errors(database_url):
        return await _upgrade(database_url, migrations, progress, months_ahead)


async def _upgrade(
    database_url: str, migrations: list[Migration], progress: Progress, months_ahead: int
) -> list[str]:
    conn = await connect_creating(database_url, progress)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _UPGRADE_LOCK_KEY):
            progress("another schema upgrade is running on this database; waiting for it")
            await conn.execute("SELECT pg_advisory_lock($1)", _UPGRADE_LOCK_KEY)
        await _ensure_roles(conn)
        await conn.execute(_HISTORY_DDL)
        states = _compare(migrations, await _applied(conn))
        for state in states:
            if state.state == "changed":
                raise MigrationChanged(state.name, state.recorded_checksum or "", state.checksum)
            if state.state == "missing":
                raise MigrationMissing(state.name)
        pending = {s.name for s in states if s.state == "pending"}
        applied: list[str] = []
        for migration in migrations:
            if migration.name not in pending:
                continue
            progress(f"applying {migration.name} ...")
            elapsed = await _apply(conn, migration)
            progress(f"applied {migration.name} in {elapsed} ms")
            applied.append(migration.name)
        created = await ensure_partitions(conn, months_ahead, progress=progress)
        if applied:
            progress(f"applied {len(applied)} migration(s); the schema is up to date")
        else:
            progress(
                f"nothing to apply: all {len(migrations)} migrations are already applied"
                + (f" ({len(created)} partitions created)" if created else "")
            )
        return applied
    finally:
        await conn.close()  # also releases the advisory lock


async def status(database_url: str, *, migrations_dir: Path = MIGRATIONS_DIR) -> SchemaStatus:
    """What is applied, pending, changed or missing, and how far the partitions reach."""
    migrations = load_migrations(migrations_dir)
    name = database_name(database_url)
    async with database_errors(database_url):
        try:
            conn = await connect(database_url)
        except asyncpg.InvalidCatalogNameError:
            pending = tuple(MigrationState(m.name, "pending", m.checksum) for m in migrations)
            return SchemaStatus(name, False, pending, ())
        try:
            states = _compare(migrations, await _applied(conn))
            coverage = await partition_coverage(conn)
        finally:
            await conn.close()
    return SchemaStatus(name, True, tuple(states), tuple(coverage))
