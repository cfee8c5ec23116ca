"""What every endpoint of the emulator shares: auth, body and query parsing, envelopes.

A handler is ``async def handler(call: Call) -> Response``; :func:`endpoint`
wraps it into a Starlette endpoint that checks the bearer token first (401),
parses the JSON body of a POST (400 unless it is a JSON object), turns an
:class:`ApiError` or a field reader's :class:`~strangler.api_fields.FieldError`
into the legacy error envelope and anything unexpected into a 500 envelope,
the way the legacy backend's catch-all did.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from legacy_emulator.env import Emulator
from strangler.api_fields import FieldError, FieldReaders
from strangler.contract import error_body, list_body, success_body
from strangler.tokens import Caller, InvalidToken, caller_from_authorization

__all__ = [
    "ApiError",
    "Call",
    "Handler",
    "created",
    "endpoint",
    "listed",
    "not_found",
    "ok",
]

logger = logging.getLogger(__name__)

INVALID_TOKEN = "Invalid token"
BAD_BODY = "Request body must be a JSON object"


class ApiError(Exception):
    """An answer other than success: the HTTP status and the envelope's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def not_found(entity: str) -> ApiError:
    return ApiError(404, f"{entity} not found")


def ok(message: str, data: Any) -> Response:
    return JSONResponse(success_body(message, data))


def created(message: str, data: Any) -> Response:
    return JSONResponse(success_body(message, data), status_code=201)


def listed(message: str, items: list[Any], total: int) -> Response:
    return JSONResponse(list_body(message, items, total))


def error_response(status: int, message: str) -> Response:
    return JSONResponse(error_body(message), status_code=status)


@dataclass
class Call(FieldReaders):
    """One authenticated request: who calls, with what, against which emulator."""

    request: Request
    caller: Caller
    emulator: Emulator
    body: dict[str, Any]

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query_params

    # --- request facts recorded in userActivity -----------------------------------------

    @property
    def ip_address(self) -> str | None:
        """The client's address: legacy ran behind a load balancer, so the last
        ``X-Forwarded-For`` hop (the one the balancer added) when there is one."""
        forwarded = self.request.headers.get("x-forwarded-for")
        if forwarded:
            last_hop = forwarded.rsplit(",", 1)[-1].strip()
            if last_hop:
                return last_hop
        client = self.request.client
        return client.host if client else None

    @property
    def user_agent(self) -> str | None:
        return self.request.headers.get("user-agent")


Handler = Callable[[Call], Awaitable[Response]]


async def _read_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, BAD_BODY) from exc
    if not isinstance(body, dict):
        raise ApiError(400, BAD_BODY)
    return body


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint serving ``handler`` with the legacy conventions."""

    async def serve(request: Request) -> Response:
        emulator: Emulator = request.app.state.emulator
        try:
            caller = caller_from_authorization(
                emulator.jwt_secret, request.headers.get("authorization")
            )
        except InvalidToken:
            return error_response(401, INVALID_TOKEN)
        try:
            body = await _read_body(request) if request.method == "POST" else {}
            return await handler(Call(request, caller, emulator, body))
        except (ApiError, FieldError) as exc:
            return error_response(exc.status, exc.message)
        except Exception:  # the legacy backend's catch-all: log it, answer 500
            logger.exception("%s %s failed", request.method, request.url.path)
            return error_response(500, "Internal server error")

    serve.__name__ = handler.__name__
    serve.__doc__ = handler.__doc__
    return serve
