"""Connectors from PostgreSQL, answering every connectors endpoint exactly as legacy does.

Legacy's answers (messages, statuses, field order, rendering, the 400/401/404/409 cases)
are those of ``legacy_emulator/routes/connectors.py``. Rows and legacy documents convert
through the connectors spec of :mod:`migrators.entities.connectors`, the same mapping
backfill, sync, verify and the reverse sync use: a handler reads the row, sees the legacy
document it stands for, applies legacy's change to it, and stores what the mapping makes of
it. So a row written here is the row a backfill of legacy's document would have written
(secrets sealed the same way, renamed duplicates and unreadable values kept as found).

What the new side fixes, by design:

- each write is one transaction with its audit row (``user_activity``, legacy's
  ``userActivity`` entry) and its outbox row (``migration_outbox``, origin ``new``), run as
  ``strangler_app`` with the caller's subscription set, so row-level security, not this
  code alone, keeps tenants apart (another tenant's connector is a 404);
- the credentials of ``connection_detail`` are sealed (AES-GCM, with their key id) before
  they reach PostgreSQL; they are opened in memory only to rebuild the document, and every
  credential key is rendered ``"********"`` (legacy masks only the password: the other keys
  are an expected divergence);
- a duplicate name is decided by the database (a partial unique index), so two racing adds
  cannot both win.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg

from migrators.crypto import SECRET_KEYS, SecretBox
from migrators.entities.common import RENAMED
from migrators.entities.connectors import SPECS
from migrators.spec import Document, MappingContext, Quarantined, Row
from proxy.handlers._pg import (
    LISTED_TOTAL,
    ApiError,
    Call,
    created,
    decoded_row,
    endpoint,
    listed,
    listed_total,
    ok,
    record_activity,
    record_outbox,
    tenant_transaction,
)
from proxy.registry import HandlerDeps, HandlerRegistry
from schema.tenancy import ensure_subscription
from strangler.contract import is_deleted, json_safe, new_id, render_datetime
from strangler.exchange import RecordedResponse

__all__ = ["ENTITY", "MASKED", "REQUIRES", "connection_outcome", "register", "render_connector"]

REQUIRES = frozenset({"postgres"})
ENTITY = "connectors"
MASKED = "********"
DUPLICATE = "Connector name already exists"
NOT_FOUND = "Connector not found"
SPEC = next(spec for spec in SPECS if spec.name == ENTITY)

# What the spec's to_document reads, plus the row key.
_ROW = (
    "id, connector_id, subscription_id, connector_name, connector_type, description, "
    "connection_detail, secret_ciphertext, secret_key_id, is_active, test_status, "
    "last_tested_at, created_by, created_at, updated_at, is_deleted, extra"
)
# What a write may change (never the keys: id, connector_id, subscription_id).
_WRITABLE = (
    "connector_name", "connector_type", "description", "connection_detail",
    "secret_ciphertext", "secret_key_id", "is_active", "test_status", "last_tested_at",
    "created_by", "created_at", "updated_at", "is_deleted", "extra",
)  # fmt: skip
_JSONB = frozenset({"connection_detail", "extra"})
# Rendered fields in legacy's order, with how each renders (legacy_emulator.render.CONNECTOR).
_RENDERED = (
    ("connector_id", "raw"), ("subscription_id", "raw"), ("connector_name", "raw"),
    ("connector_type", "raw"), ("description", "raw"), ("connection_detail", "detail"),
    ("is_active", "bool"), ("test_status", "raw"), ("last_tested_at", "datetime"),
    ("created_by", "raw"), ("created_at", "datetime"), ("updated_at", "datetime"),
)  # fmt: skip


def connection_outcome(connector_type: Any, detail: Any) -> str:
    """What ``testConnector`` reports: it "connects" when the detail names where to go."""
    if not isinstance(detail, dict):
        return "failed"
    where = detail.get("bucket") if connector_type == "s3" else detail.get("host")
    return "success" if isinstance(where, str) and where.strip() else "failed"


def _masked(detail: Any) -> Any:
    detail = json_safe(detail)
    if not isinstance(detail, dict):
        return detail
    return {
        key: MASKED if key.lower() in SECRET_KEYS and value is not None else value
        for key, value in detail.items()
    }


def render_connector(document: Mapping[str, Any]) -> dict[str, Any]:
    """A legacy connector document as the API renders it: fixed order, secrets masked."""
    rendered: dict[str, Any] = {}
    for name, kind in _RENDERED:
        value = document.get(name)
        if kind == "datetime":
            rendered[name] = render_datetime(value)
        elif kind == "bool":
            rendered[name] = None if value is None else is_deleted(value)
        elif kind == "detail":
            rendered[name] = _masked(value)
        else:
            rendered[name] = json_safe(value)
    return rendered


def _with_round_trip(detail: Mapping[str, Any], stored: Any) -> dict[str, Any]:
    """An update's ``connection_detail`` with legacy's round-trip rule: a password omitted,
    ``null`` or sent back masked keeps the stored one (none stored: none kept). Any other
    credential sent back masked keeps its stored value too (the new side masks them all)."""
    merged = dict(detail)
    previous = stored if isinstance(stored, dict) else {}
    if merged.get("password") in (None, MASKED) and isinstance(stored, dict):
        if "password" in stored:
            merged["password"] = stored["password"]
        else:
            merged.pop("password", None)
    for key, value in list(merged.items()):
        if key.lower() in SECRET_KEYS and key != "password" and value == MASKED and key in previous:
            merged[key] = previous[key]
    return merged


class ConnectorHandlers:
    def __init__(self, pool: asyncpg.Pool, box: SecretBox) -> None:
        self._pool = pool
        self._context = MappingContext(seal=box.seal, open=box.open)

    # --- rows <-> legacy documents (through the connectors spec) ----------------------------

    def document_of(self, row: Mapping[str, Any]) -> Document:
        assert SPEC.to_document is not None
        return SPEC.to_document({"connectors": [decoded_row(row, _JSONB)]}, self._context)

    def row_of(self, document: Document, stored: Mapping[str, Any] | None) -> Row:
        mapped = SPEC.map_document(document, self._context)
        if isinstance(mapped, Quarantined):  # the handler built it: a bug, answered 500
            raise RuntimeError(f"connector document not mappable: {mapped.reason}")
        row = dict(mapped.rows["connectors"][0])
        extra = dict(row.get("extra") or {})
        if stored is not None:
            kept = decoded_row(stored, _JSONB)["extra"].get(RENAMED) or {}
            if (
                "connector_name" in kept
                and document.get("connector_name") == kept["connector_name"]
            ):
                # A legacy duplicate renamed in PostgreSQL keeps its stored name until renamed.
                row["connector_name"] = stored["connector_name"]
                extra[RENAMED] = {
                    **extra.get(RENAMED, {}),
                    "connector_name": kept["connector_name"],
                }
        row["extra"] = extra
        return row

    @staticmethod
    async def _save(conn: asyncpg.Connection, row: Row, *, insert: bool) -> None:
        values = [json.dumps(row[c]) if c in _JSONB else row[c] for c in _WRITABLE]
        casts = [f"${i}::jsonb" if c in _JSONB else f"${i}" for i, c in enumerate(_WRITABLE, 4)]
        try:
            if insert:
                await conn.execute(
                    f"INSERT INTO connectors (id, connector_id, subscription_id, "
                    f"{', '.join(_WRITABLE)}, synced_at) "
                    f"VALUES ($1, $2, $3, {', '.join(casts)}, now())",
                    row["id"],
                    row["connector_id"],
                    row["subscription_id"],
                    *values,
                )
            else:
                sets = ", ".join(f"{c} = {cast}" for c, cast in zip(_WRITABLE, casts, strict=True))
                await conn.execute(
                    f"UPDATE connectors SET {sets}, synced_at = now() "
                    "WHERE id = $1 AND connector_id = $2 AND subscription_id = $3",
                    row["id"],
                    row["connector_id"],
                    row["subscription_id"],
                    *values,
                )
        except asyncpg.UniqueViolationError as exc:  # lost a race for the name
            raise ApiError(409, DUPLICATE) from exc

    # --- shared steps -----------------------------------------------------------------------

    @staticmethod
    async def _load(conn: asyncpg.Connection, connector_id: str, *, lock: bool) -> asyncpg.Record:
        # RLS hides other tenants' rows: their ids are simply not found, as in legacy.
        row = await conn.fetchrow(
            f"SELECT {_ROW} FROM connectors WHERE connector_id = $1 AND NOT is_deleted"
            + (" FOR UPDATE" if lock else ""),
            connector_id,
        )
        if row is None:
            raise ApiError(404, NOT_FOUND)
        return row

    @staticmethod
    async def _check_name(conn: asyncpg.Connection, name: str, except_id: str | None) -> None:
        taken = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM connectors WHERE NOT is_deleted "
            "AND coalesce(extra -> $3 ->> 'connector_name', connector_name) = $1 "
            "AND connector_id IS DISTINCT FROM $2)",
            name,
            except_id,
            RENAMED,
        )
        if taken:
            raise ApiError(409, DUPLICATE)

    # --- reads ------------------------------------------------------------------------------

    async def get_connectors(self, call: Call) -> RecordedResponse:
        connector_type = call.query_text("connector_type")
        page = call.page()
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            where = "NOT is_deleted AND ($1::text IS NULL OR connector_type = $1)"
            rows = await conn.fetch(
                f"SELECT {_ROW}, {LISTED_TOTAL} FROM connectors WHERE {where} "
                "ORDER BY created_at DESC NULLS LAST, connector_id LIMIT $2 OFFSET $3",
                connector_type,
                page.per_page,
                page.skip,
            )
            total = await listed_total(
                conn, rows, page.skip, f"SELECT count(*) FROM connectors WHERE {where}",
                connector_type,
            )  # fmt: skip
        items = [render_connector(self.document_of(row)) for row in rows]
        return listed("Connectors fetched successfully", items, total)

    async def get_connector(self, call: Call) -> RecordedResponse:
        connector_id = call.query_id("connector_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            row = await self._load(conn, connector_id, lock=False)
        return ok("Connector fetched successfully", render_connector(self.document_of(row)))

    # --- writes -----------------------------------------------------------------------------

    async def add_connector(self, call: Call) -> RecordedResponse:
        name = call.text("connector_name")
        connector_type = call.text("connector_type")
        detail = call.optional_object("connection_detail")
        if detail is None:
            raise ApiError(400, "connection_detail is required")
        description = call.optional_text("description")
        caller = call.caller
        document: Document = {
            "connector_id": new_id("connector"),
            "subscription_id": caller.subscription_id,
            "connector_name": name,
            "connector_type": connector_type,
            "description": description,
            "connection_detail": detail,
            "is_active": True,
            "test_status": "untested",
            "last_tested_at": None,
            "created_by": caller.user_id,
            "created_at": call.now,
            "updated_at": call.now,
            "d_flag": False,
        }
        row = self.row_of(document, None)
        rendered = render_connector(document)
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            await self._check_name(conn, name, None)
            await ensure_subscription(conn, caller.subscription_id)
            await self._save(conn, row, insert=True)
            await self._audit(conn, call, "insert", "created", document, current=rendered)
        return created("Connector added successfully", rendered)

    async def update_connector(self, call: Call) -> RecordedResponse:
        connector_id = call.text("connector_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            stored = await self._load(conn, connector_id, lock=True)
            document = self.document_of(stored)
            previous = render_connector(document)
            # The same checks, in the same order, as legacy: the first failing one answers.
            if call.given("connector_name"):
                name = call.text("connector_name")
                await self._check_name(conn, name, connector_id)
                document["connector_name"] = name
            if call.given("connector_type"):
                document["connector_type"] = call.text("connector_type")
            if call.given("description"):
                document["description"] = call.optional_text("description")
            if call.given("is_active"):
                document["is_active"] = call.optional_flag("is_active")
            detail = call.optional_object("connection_detail")
            if detail is not None:
                document["connection_detail"] = _with_round_trip(
                    detail, document.get("connection_detail")
                )
            document["updated_at"] = call.now
            await self._save(conn, self.row_of(document, stored), insert=False)
            rendered = render_connector(document)
            await self._audit(
                conn, call, "update", "updated", document, previous=previous, current=rendered
            )
        return ok("Connector updated successfully", rendered)

    async def delete_connector(self, call: Call) -> RecordedResponse:
        connector_id = call.text("connector_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            stored = await self._load(conn, connector_id, lock=True)
            document = self.document_of(stored)
            previous = render_connector(document)
            document["d_flag"] = True
            document["updated_at"] = call.now
            await self._save(conn, self.row_of(document, stored), insert=False)
            await self._audit(conn, call, "delete", "deleted", document, previous=previous)
        return ok("Connector deleted successfully", {"connector_id": connector_id})

    async def test_connector(self, call: Call) -> RecordedResponse:
        connector_id = call.text("connector_id")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            stored = await self._load(conn, connector_id, lock=True)
            document = self.document_of(stored)
            status = connection_outcome(
                document.get("connector_type"), document.get("connection_detail")
            )
            document["test_status"] = status
            document["last_tested_at"] = call.now
            await self._save(conn, self.row_of(document, stored), insert=False)
            result = {"test_status": status, "last_tested_at": render_datetime(call.now)}
            await self._audit(conn, call, "update", "executed", document, current=result)
        return ok("Connector tested", result)

    @staticmethod
    async def _audit(
        conn: asyncpg.Connection,
        call: Call,
        operation: str,
        action: str,
        document: Document,
        *,
        previous: Any = None,
        current: Any = None,
    ) -> None:
        """The write's audit row and outbox row, in the write's transaction."""
        connector_id = document["connector_id"]
        activity = await record_activity(
            conn,
            call,
            action,
            "connector",
            connector_id,
            document.get("connector_name"),
            previous=previous,
            current=current,
        )
        await record_outbox(
            conn,
            call.caller.subscription_id,
            ENTITY,
            connector_id,
            operation,
            {"activity": activity},
        )


def register(registry: HandlerRegistry, deps: HandlerDeps) -> None:
    """Register every connectors endpoint of LEGACY.md section 3."""
    handlers = ConnectorHandlers(deps.pg_pool, SecretBox(deps.settings.connector_keys))
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
