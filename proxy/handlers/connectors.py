"""Connectors from PostgreSQL, answering every connectors endpoint exactly as legacy does.

Legacy's answers (messages, statuses, field order, rendering, the 400/401/404/409 cases)
are those of ``legacy_emulator/routes/connectors.py``; the differences are the flaws the
new side fixes:

- each write is one transaction with its audit row (``user_activity``, legacy's
  ``userActivity`` entry) and its outbox row (``migration_outbox``, origin ``new``), run
  as ``strangler_app`` with the caller's subscription set, so row-level security, not
  this code alone, keeps tenants apart (another tenant's connector is a 404);
- the password of ``connection_detail`` is sealed (AES-GCM, with its key id) before it
  reaches PostgreSQL and is never opened to answer a request: a connector that has one is
  rendered ``"********"``, as legacy masks it;
- a duplicate name is decided by the database (a partial unique index), so two racing
  adds cannot both win.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from migrators.crypto import SecretBox, associated_data, split_secrets
from proxy.handlers._pg import (
    ApiError,
    Call,
    created,
    endpoint,
    ensure_subscription,
    listed,
    ok,
    record_activity,
    record_outbox,
    tenant_transaction,
)
from proxy.registry import HandlerDeps, HandlerRegistry
from schema.keys import row_key
from strangler.contract import new_id, render_datetime
from strangler.exchange import RecordedResponse

__all__ = ["ENTITY", "MASKED_PASSWORD", "REQUIRES", "connection_outcome", "register"]

REQUIRES = frozenset({"postgres"})
ENTITY = "connectors"
MASKED_PASSWORD = "********"
DUPLICATE = "Connector name already exists"
NOT_FOUND = "Connector not found"

# The rendered fields, in legacy's order (legacy_emulator.render.CONNECTOR).
_COLUMNS = (
    "connector_id, subscription_id, connector_name, connector_type, description, "
    "connection_detail, secret_ciphertext, secret_key_id, is_active, "
    "test_status, last_tested_at, created_by, created_at, updated_at"
)


@dataclass(frozen=True)
class Sealed:
    ciphertext: bytes
    key_id: str


class ConnectorSecrets:
    """The credential keys of ``connection_detail`` (``migrators.crypto.SECRET_KEYS``),
    sealed together as one JSON object bound to the connector's id, exactly as the
    connectors mapping seals them, so backfilled, synced and new-side rows open alike."""

    def __init__(self, box: SecretBox) -> None:
        self._box = box

    def seal(self, connector_id: str, secret: Mapping[str, Any]) -> Sealed | None:
        if not secret:
            return None
        ciphertext, key_id = self._box.seal_json(dict(secret), associated_data(connector_id))
        return Sealed(ciphertext, key_id)

    def open(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The row's secret keys and values, in memory only (never rendered as such)."""
        if row["secret_ciphertext"] is None:
            return {}
        opened = self._box.open_json(
            bytes(row["secret_ciphertext"]),
            row["secret_key_id"],
            associated_data(row["connector_id"]),
        )
        return dict(opened) if isinstance(opened, dict) else {}

    @staticmethod
    def replacing(
        detail: Mapping[str, Any], stored: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(public, secret) of an update's ``connection_detail``, with legacy's round-trip
        rule: a password omitted, ``null`` or sent back masked keeps the stored one (and is
        dropped when none is stored); any other secret sent back masked keeps its stored
        value. Everything else is replaced by what the update sends, as legacy does."""
        public, secret = split_secrets(detail)
        for key, value in list(secret.items()):
            if value == MASKED_PASSWORD:
                if key in stored:
                    secret[key] = stored[key]
                else:
                    del secret[key]
        password = detail.get("password")
        if password is None or password == MASKED_PASSWORD:
            secret.pop("password", None)
            if "password" in stored:
                secret["password"] = stored["password"]
        return public, secret


def connection_outcome(connector_type: Any, detail: Any) -> str:
    """What ``testConnector`` reports: it "connects" when the detail names where to go."""
    if not isinstance(detail, dict):
        return "failed"
    where = detail.get("bucket") if connector_type == "s3" else detail.get("host")
    return "success" if isinstance(where, str) and where.strip() else "failed"


def _detail_of(row: Mapping[str, Any]) -> dict[str, Any]:
    raw = row["connection_detail"]
    detail: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    return detail


def render_connector(row: Mapping[str, Any], secret: Mapping[str, Any]) -> dict[str, Any]:
    """A row as legacy renders the connector: fixed field order, secrets masked.

    Legacy masks the password only; here every sealed key is masked (a secret never
    leaves in a response): for keys other than the password that is an expected
    divergence, the one way the new side answers differently on purpose.
    """
    detail = _detail_of(row)
    for key, value in secret.items():
        detail[key] = None if value is None else MASKED_PASSWORD
    return {
        "connector_id": row["connector_id"],
        "subscription_id": row["subscription_id"],
        "connector_name": row["connector_name"],
        "connector_type": row["connector_type"],
        "description": row["description"],
        "connection_detail": detail,
        "is_active": row["is_active"],
        "test_status": row["test_status"],
        "last_tested_at": render_datetime(row["last_tested_at"]),
        "created_by": row["created_by"],
        "created_at": render_datetime(row["created_at"]),
        "updated_at": render_datetime(row["updated_at"]),
    }


class ConnectorHandlers:
    def __init__(self, pool: asyncpg.Pool, secrets: ConnectorSecrets) -> None:
        self._pool = pool
        self._secrets = secrets

    # --- shared steps -----------------------------------------------------------------------

    @staticmethod
    async def _load(conn: asyncpg.Connection, connector_id: str, *, lock: bool) -> asyncpg.Record:
        # RLS hides other tenants' rows: their ids are simply not found, as in legacy.
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM connectors "
            f"WHERE connector_id = $1 AND NOT is_deleted{' FOR UPDATE' if lock else ''}",
            connector_id,
        )
        if row is None:
            raise ApiError(404, NOT_FOUND)
        return row

    @staticmethod
    async def _check_name(conn: asyncpg.Connection, name: str, except_id: str | None) -> None:
        taken = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM connectors WHERE connector_name = $1 "
            "AND NOT is_deleted AND connector_id IS DISTINCT FROM $2)",
            name,
            except_id,
        )
        if taken:
            raise ApiError(409, DUPLICATE)

    def _render(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return render_connector(row, self._secrets.open(row))

    @staticmethod
    async def _reread(conn: asyncpg.Connection, connector_id: str) -> asyncpg.Record:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM connectors WHERE connector_id = $1", connector_id
        )
        assert row is not None  # written by this transaction
        return row

    # --- reads ------------------------------------------------------------------------------

    async def get_connectors(self, call: Call) -> RecordedResponse:
        connector_type = call.query_text("connector_type")
        page = call.page()
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            where = "NOT is_deleted AND ($1::text IS NULL OR connector_type = $1)"
            total = await conn.fetchval(
                f"SELECT count(*) FROM connectors WHERE {where}", connector_type
            )
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM connectors WHERE {where} "
                "ORDER BY created_at DESC NULLS LAST, connector_id LIMIT $2 OFFSET $3",
                connector_type,
                page.per_page,
                page.skip,
            )
        items = [self._render(row) for row in rows]
        return listed("Connectors fetched successfully", items, total)

    async def get_connector(self, call: Call) -> RecordedResponse:
        connector_id = call.query_id("connector_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            row = await self._load(conn, connector_id, lock=False)
        return ok("Connector fetched successfully", self._render(row))

    # --- writes -----------------------------------------------------------------------------

    async def add_connector(self, call: Call) -> RecordedResponse:
        name = call.text("connector_name")
        connector_type = call.text("connector_type")
        detail = call.optional_object("connection_detail")
        if detail is None:
            raise ApiError(400, "connection_detail is required")
        description = call.optional_text("description")
        public, secret = split_secrets(detail)
        connector_id = new_id("connector")
        sealed = self._secrets.seal(connector_id, secret)
        caller = call.caller
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            await self._check_name(conn, name, None)
            await ensure_subscription(conn, caller.subscription_id)
            try:
                await conn.execute(
                    "INSERT INTO connectors (id, connector_id, subscription_id, connector_name, "
                    "connector_type, description, connection_detail, secret_ciphertext, "
                    "secret_key_id, is_active, test_status, last_tested_at, created_by, "
                    "created_at, updated_at, is_deleted, synced_at) VALUES ($1, $2, $3, $4, $5, "
                    "$6, $7::jsonb, $8, $9, true, 'untested', NULL, $10, $11, $11, false, $11)",
                    row_key("connector", connector_id),
                    connector_id,
                    caller.subscription_id,
                    name,
                    connector_type,
                    description,
                    json.dumps(public, ensure_ascii=False),
                    sealed.ciphertext if sealed else None,
                    sealed.key_id if sealed else None,
                    caller.user_id,
                    call.now,
                )
            except asyncpg.UniqueViolationError as exc:  # lost a race with another add
                raise ApiError(409, DUPLICATE) from exc
            rendered = self._render(await self._reread(conn, connector_id))
            activity = await record_activity(
                conn, call, "created", "connector", connector_id, name, current=rendered
            )
            await record_outbox(
                conn, caller.subscription_id, ENTITY, connector_id, "insert", {"activity": activity}
            )
        return created("Connector added successfully", rendered)

    async def update_connector(self, call: Call) -> RecordedResponse:
        connector_id = call.text("connector_id")
        caller = call.caller
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            stored = await self._load(conn, connector_id, lock=True)
            stored_secret = self._secrets.open(stored)
            previous = render_connector(stored, stored_secret)
            # The same checks, in the same order, as legacy: the first failing one answers.
            changes: dict[str, Any] = {}
            if call.given("connector_name"):
                name = call.text("connector_name")
                await self._check_name(conn, name, connector_id)
                changes["connector_name"] = name
            if call.given("connector_type"):
                changes["connector_type"] = call.text("connector_type")
            if call.given("description"):
                changes["description"] = call.optional_text("description")
            if call.given("is_active"):
                changes["is_active"] = call.optional_flag("is_active")
            detail = call.optional_object("connection_detail")
            if detail is not None:
                public, secret = self._secrets.replacing(detail, stored_secret)
                sealed = self._secrets.seal(connector_id, secret)
                changes["connection_detail"] = json.dumps(public, ensure_ascii=False)
                changes["secret_ciphertext"] = sealed.ciphertext if sealed else None
                changes["secret_key_id"] = sealed.key_id if sealed else None
            changes["updated_at"] = call.now
            changes["updated_by"] = caller.user_id
            changes["synced_at"] = call.now
            assignments = ", ".join(
                f"{column} = ${index}{'::jsonb' if column == 'connection_detail' else ''}"
                for index, column in enumerate(changes, start=2)
            )
            try:
                await conn.execute(
                    f"UPDATE connectors SET {assignments} WHERE connector_id = $1",
                    connector_id,
                    *changes.values(),
                )
            except asyncpg.UniqueViolationError as exc:
                raise ApiError(409, DUPLICATE) from exc
            row = await self._reread(conn, connector_id)
            rendered = self._render(row)
            activity = await record_activity(
                conn,
                call,
                "updated",
                "connector",
                connector_id,
                row["connector_name"],
                previous=previous,
                current=rendered,
            )
            await record_outbox(
                conn, caller.subscription_id, ENTITY, connector_id, "update", {"activity": activity}
            )
        return ok("Connector updated successfully", rendered)

    async def delete_connector(self, call: Call) -> RecordedResponse:
        connector_id = call.text("connector_id")
        caller = call.caller
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            stored = await self._load(conn, connector_id, lock=True)
            previous = self._render(stored)
            await conn.execute(
                "UPDATE connectors SET is_deleted = true, deleted_at = $2, updated_at = $2, "
                "updated_by = $3, synced_at = $2 WHERE connector_id = $1",
                connector_id,
                call.now,
                caller.user_id,
            )
            activity = await record_activity(
                conn,
                call,
                "deleted",
                "connector",
                connector_id,
                stored["connector_name"],
                previous=previous,
            )
            await record_outbox(
                conn, caller.subscription_id, ENTITY, connector_id, "delete", {"activity": activity}
            )
        return ok("Connector deleted successfully", {"connector_id": connector_id})

    async def test_connector(self, call: Call) -> RecordedResponse:
        connector_id = call.text("connector_id")
        caller = call.caller
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            stored = await self._load(conn, connector_id, lock=True)
            # Only host/bucket are looked at: the sealed password is never opened here.
            status = connection_outcome(stored["connector_type"], _detail_of(stored))
            await conn.execute(
                "UPDATE connectors SET test_status = $2, last_tested_at = $3, synced_at = $3 "
                "WHERE connector_id = $1",
                connector_id,
                status,
                call.now,
            )
            result = {"test_status": status, "last_tested_at": render_datetime(call.now)}
            activity = await record_activity(
                conn,
                call,
                "executed",
                "connector",
                connector_id,
                stored["connector_name"],
                current=result,
            )
            await record_outbox(
                conn, caller.subscription_id, ENTITY, connector_id, "update", {"activity": activity}
            )
        return ok("Connector tested", result)


def register(registry: HandlerRegistry, deps: HandlerDeps) -> None:
    """Register every connectors endpoint of LEGACY.md section 3."""
    handlers = ConnectorHandlers(
        deps.pg_pool, ConnectorSecrets(SecretBox(deps.settings.connector_keys))
    )
    secret, clock = deps.settings.jwt_secret, deps.clock
    for route, handler in (
        ("GET /connectors/getConnectors", handlers.get_connectors),
        ("GET /connectors/getConnector", handlers.get_connector),
        ("POST /connectors/addConnector", handlers.add_connector),
        ("POST /connectors/updateConnector", handlers.update_connector),
        ("POST /connectors/deleteConnector", handlers.delete_connector),
        ("POST /connectors/testConnector", handlers.test_connector),
    ):
        registry.add(ENTITY, route, endpoint(secret, clock, handler))
