"""What every PostgreSQL-backed new-side handler shares.

- :func:`endpoint` turns ``async def handler(call: Call) -> RecordedResponse`` into a
  :data:`~strangler.exchange.NewSideHandler` that answers exactly as the legacy backend's
  wrapper does: 401 ``Invalid token`` first, then 400 for a POST body that is not a JSON
  object, then the handler; an :class:`ApiError` or a field reader's
  :class:`~strangler.api_fields.FieldError` becomes the error envelope, anything
  unexpected a logged 500 ``Internal server error``.
- :class:`Call` reads query and body fields through :mod:`strangler.api_fields`, the one
  place the legacy backend's rules and messages are written, shared with the emulator.
- :func:`tenant_transaction` opens the one transaction a request runs in, as
  ``strangler_app`` with ``app.subscription_id`` set, so row-level security scopes every
  statement to the caller's tenant.
- :func:`record_activity` and :func:`record_outbox` write the audit row and the outbox row
  inside that transaction: a write, its audit entry and its reverse-sync entry commit
  together or not at all.

Bodies are rendered as Starlette's ``JSONResponse`` renders them (compact separators, UTF-8,
no ASCII escaping), so an unchanged answer is the same bytes on both sides.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from bson import ObjectId

from schema.keys import row_key
from schema.tenancy import enter_tenant
from strangler.api_fields import FieldError, FieldReaders
from strangler.contract import error_body, list_body, success_body
from strangler.exchange import NewSideHandler, RecordedRequest, RecordedResponse
from strangler.tokens import Caller, InvalidToken, caller_from_authorization

__all__ = [
    "LISTED_TOTAL",
    "ApiError",
    "Call",
    "CallHandler",
    "created",
    "decoded_row",
    "endpoint",
    "error_response",
    "json_response",
    "listed",
    "listed_total",
    "moment_of",
    "ok",
    "record_activity",
    "record_outbox",
    "tenant_transaction",
]

log = logging.getLogger("proxy.handlers")

INVALID_TOKEN = "Invalid token"
BAD_BODY = "Request body must be a JSON object"
INTERNAL_ERROR = "Internal server error"
_JSON_HEADERS = (("content-type", "application/json"),)


class ApiError(Exception):
    """An answer other than success: the HTTP status and the envelope's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- responses ------------------------------------------------------------------------------


def json_response(status: int, content: Any) -> RecordedResponse:
    body = json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")
    return RecordedResponse(
        status=status, headers=(("content-length", str(len(body))), *_JSON_HEADERS), body=body
    )


def ok(message: str, data: Any) -> RecordedResponse:
    return json_response(200, success_body(message, data))


def created(message: str, data: Any) -> RecordedResponse:
    return json_response(201, success_body(message, data))


def listed(message: str, items: list[Any], total: int) -> RecordedResponse:
    return json_response(200, list_body(message, items, total))


def error_response(status: int, message: str) -> RecordedResponse:
    return json_response(status, error_body(message))


# --- the request as the handler sees it ---------------------------------------------------------


def moment_of(clock: Callable[[], float]) -> datetime:
    """The clock's now as an aware UTC datetime at a BSON date's millisecond precision."""
    moment = datetime.fromtimestamp(clock(), UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Call(FieldReaders):
    """One authenticated request: who calls, with what, and when it arrived."""

    request: RecordedRequest
    caller: Caller
    body: dict[str, Any]
    now: datetime

    @property
    def query(self) -> dict[str, str]:
        return self.request.query

    # facts recorded in the audit row

    @property
    def ip_address(self) -> str | None:
        """The client as the proxy saw it: the last X-Forwarded-For hop (the proxy adds it)."""
        forwarded = self.request.header("x-forwarded-for")
        if not forwarded:
            return None
        return forwarded.rsplit(",", 1)[-1].strip() or None

    @property
    def user_agent(self) -> str | None:
        return self.request.header("user-agent")


CallHandler = Callable[[Call], Awaitable[RecordedResponse]]


def _parse_body(request: RecordedRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, BAD_BODY) from exc
    if not isinstance(body, dict):
        raise ApiError(400, BAD_BODY)
    return body


def endpoint(jwt_secret: str, clock: Callable[[], float], handler: CallHandler) -> NewSideHandler:
    """The new-side handler serving ``handler`` with the legacy conventions."""

    async def serve(request: RecordedRequest) -> RecordedResponse:
        try:
            caller = caller_from_authorization(jwt_secret, request.header("authorization"))
        except InvalidToken:
            return error_response(401, INVALID_TOKEN)
        try:
            body = _parse_body(request) if request.method == "POST" else {}
            return await handler(Call(request, caller, body, moment_of(clock)))
        except (ApiError, FieldError) as exc:
            return error_response(exc.status, exc.message)
        except Exception:  # as legacy's catch-all: logged with the request id, answered 500
            log.exception(
                "request %s: %s %s failed", request.request_id, request.method, request.path
            )
            return error_response(500, INTERNAL_ERROR)

    serve.__name__ = handler.__name__
    serve.__doc__ = handler.__doc__
    return serve


def decoded_row(record: Mapping[str, Any], jsonb: Iterable[str]) -> dict[str, Any]:
    """A fetched row as a dict: its jsonb columns decoded (asyncpg gives JSON text), and the
    page's total (``listed_total``) that rides on a list's rows left out."""
    row = dict(record)
    row.pop("listed_total", None)
    for name in jsonb:
        if isinstance(row.get(name), str):
            row[name] = json.loads(row[name])
    return row


# Added to a page's select list: the count of every matching row rides on the page's rows,
# so a list costs one query; only a page past the end needs the count on its own.
LISTED_TOTAL = "count(*) OVER () AS listed_total"


async def listed_total(
    conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], skip: int, count_sql: str,
    *args: Any,
) -> int:  # fmt: skip
    if rows:
        total: int = rows[0]["listed_total"]
        return total
    if skip == 0:
        return 0
    counted: int = await conn.fetchval(count_sql, *args)
    return counted


# --- the tenant transaction -----------------------------------------------------------------------


@asynccontextmanager
async def tenant_transaction(
    pool: asyncpg.Pool, subscription_id: str
) -> AsyncIterator[asyncpg.Connection]:
    """One transaction as ``strangler_app`` scoped to ``subscription_id`` (RLS).

    The role and the setting are transaction-local, so the pooled connection goes back
    to the pool carrying neither.
    """
    async with pool.acquire() as conn, conn.transaction():
        await enter_tenant(conn, subscription_id)
        yield conn


def _jsonb(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


async def record_activity(
    conn: asyncpg.Connection,
    call: Call,
    action: str,
    object_type: str,
    object_id: str,
    object_name: Any,
    *,
    previous: Any = None,
    current: Any = None,
) -> dict[str, Any]:
    """Insert the audit row of a write (legacy's ``userActivity`` entry) and return the entry.

    The entry is returned in legacy's shape (``activity_id`` is the ObjectId the reverse
    sync gives the document, so applying it twice writes one document).
    """
    activity_id = str(ObjectId())
    name = object_name if object_name is None or isinstance(object_name, str) else str(object_name)
    await conn.execute(
        "INSERT INTO user_activity (id, activity_id, subscription_id, user_id, action, "
        "object_type, object_id, object_name, ip_address, user_agent, previous_data, "
        "current_data, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12::jsonb, $13)",
        row_key("user_activity", activity_id),
        activity_id,
        call.caller.subscription_id,
        call.caller.user_id,
        action,
        object_type,
        object_id,
        name,
        call.ip_address,
        call.user_agent,
        _jsonb(previous),
        _jsonb(current),
        call.now,
    )
    return {
        "activity_id": activity_id,
        "subscription_id": call.caller.subscription_id,
        "UserId": call.caller.user_id,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "object_name": name,
        "ip_address": call.ip_address,
        "user_agent": call.user_agent,
        "previous_data": previous,
        "current_data": current,
        "created_at": call.now.isoformat(timespec="milliseconds"),
    }


async def record_outbox(
    conn: asyncpg.Connection,
    subscription_id: str,
    entity: str,
    legacy_id: str,
    operation: str,
    payload: dict[str, Any],
) -> int:
    """Queue the write for the reverse sync (origin ``new``); returns the outbox id.

    The payload never holds a secret: the reverse sync reads the row itself and opens its
    sealed fields only in memory, at the moment it writes the legacy document.
    """
    outbox_id: int = await conn.fetchval(
        "INSERT INTO migration_outbox (subscription_id, entity, legacy_id, operation, payload, "
        "origin) VALUES ($1, $2, $3, $4, $5::jsonb, 'new') RETURNING id",
        subscription_id,
        entity,
        legacy_id,
        operation,
        json.dumps(payload, ensure_ascii=False),
    )
    return outbox_id
