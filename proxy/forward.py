"""Forwarding one HTTP exchange to legacy, streamed both ways, in ASGI terms.

The request body flows from the ASGI ``receive`` channel straight into the upstream request;
the response flows from the upstream socket straight into ``send``. Only a small response
(a known length up to ``SMALL_BODY``) is read whole first, which saves a send per request
and lets a failure while reading it still be answered with a clean 502/504. A larger body
is streamed; a failure after the status line has gone out can only be signalled by
breaking the connection, which is what the server does when this raises.

A :class:`Capture` records the exchange of a sampled request for the comparator, up to a
size cap (bigger samples are skipped and counted, never buffered).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import UpstreamFailure
from proxy.headers import UpstreamHeaders, downstream_headers
from proxy.upstream import Upstream
from strangler.contract import error_body
from strangler.exchange import RecordedRequest, RecordedResponse

__all__ = [
    "SMALL_BODY",
    "Capture",
    "ClientGone",
    "LegacyForwarder",
    "envelope_response",
    "read_body",
    "request_target",
]

log = logging.getLogger("proxy.forward")

SMALL_BODY = 256 * 1024
_FAILURE_STATUS = {"refused": 502, "broken": 502, "timeout": 504}
_FAILURE_MESSAGE = {
    "refused": "Bad gateway: the backend is unreachable",
    "broken": "Bad gateway: the backend closed the connection",
    "timeout": "Gateway timeout: the backend did not answer in time",
}

Scope = dict[str, Any]


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


@dataclass
class Capture:
    """Bytes of a sampled exchange, kept only while they stay under ``limit``."""

    limit: int
    request_body: list[bytes] = field(default_factory=list)
    response_body: list[bytes] = field(default_factory=list)
    size: int = 0
    too_large: bool = False
    status: int = 0
    response_headers: tuple[tuple[str, str], ...] = ()

    def add(self, into: list[bytes], chunk: bytes) -> None:
        if self.too_large:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            self.too_large = True
            self.request_body.clear()
            self.response_body.clear()
            return
        into.append(chunk)


def request_target(scope: Scope) -> str:
    """The raw path and query, as the client sent them (no re-encoding)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else scope["path"]
    query = scope.get("query_string", b"")
    return f"{path}?{query.decode('latin-1')}" if query else path


class _RequestBody:
    """The client's request body as an async iterator for the upstream client."""

    def __init__(self, receive: Any, capture: Capture | None) -> None:
        self._receive = receive
        self._capture = capture
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                if self._capture is not None:
                    self._capture.add(self._capture.request_body, chunk)
                yield chunk
            if not message.get("more_body", False):
                self.finished = True
                return


async def _until_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _read_parts(receive: Any, limit: int) -> tuple[list[bytes], bool, bool]:
    """(the body's chunks read, whether it is larger than ``limit``, whether more follows):
    read until the body ends or grows past ``limit``."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        more = bool(message.get("more_body", False))
        if size > limit or not more:
            return parts, size > limit, more


async def read_body(receive: Any, limit: int) -> bytes | None:
    """The whole request body, or None when it is larger than ``limit``."""
    parts, too_large, _more = await _read_parts(receive, limit)
    return None if too_large else b"".join(parts)


async def peek_body(receive: Any, limit: int) -> tuple[bytes, Any]:
    """The request body when it is at most ``limit`` bytes (else b""), and a ``receive``
    that gives what was read again, then the rest."""
    parts, too_large, more = await _read_parts(receive, limit)
    return (b"" if too_large else b"".join(parts)), replayed(parts, more, receive)


def replayed(parts: list[bytes], more: bool, receive: Any) -> Any:
    """An ASGI ``receive`` that gives the body ``parts`` already read (``more``: the body
    goes on after them), then defers to ``receive`` (the rest, or a disconnect)."""
    pending = list(parts) or [b""]

    async def again() -> dict[str, Any]:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or more}
        message: dict[str, Any] = await receive()
        return message

    return again


async def envelope_response(
    send: Any,
    status: int,
    message: str,
    request_id: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> int:
    """An error answered by the proxy itself, in the legacy envelope."""
    body = json.dumps(error_body(message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode("ascii")),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return status


class LegacyForwarder:
    def __init__(self, upstream: Upstream, on_failure: Callable[[str], None] | None = None) -> None:
        self._upstream = upstream
        self._on_failure = on_failure or (lambda kind: None)

    async def stream(
        self,
        scope: Scope,
        receive: Any,
        send: Any,
        headers: UpstreamHeaders,
        capture: Capture | None = None,
    ) -> int:
        """Forward the exchange; returns the status the client got."""
        body = _RequestBody(receive, capture) if headers.has_body else None
        try:
            resp = await self._upstream.send(
                scope["method"],
                request_target(scope),
                headers.headers,
                None if body is None else body.__aiter__(),
            )
        except UpstreamFailure as exc:
            return await self._failed(send, exc, headers.request_id)
        try:
            out_headers = downstream_headers(resp.raw_headers, headers.request_id)
            if capture is not None:
                capture.status = resp.status
                capture.response_headers = tuple(
                    (k.decode("latin-1"), v.decode("latin-1")) for k, v in out_headers
                )
            length = resp.content_length
            if length is not None and length <= SMALL_BODY:
                try:
                    data = await resp.read()
                except UpstreamFailure as exc:
                    return await self._failed(send, exc, headers.request_id)
                if capture is not None:
                    capture.add(capture.response_body, data)
                await send(
                    {"type": "http.response.start", "status": resp.status, "headers": out_headers}
                )
                await send({"type": "http.response.body", "body": data})
                return resp.status
            await send(
                {"type": "http.response.start", "status": resp.status, "headers": out_headers}
            )
            # A client that goes away mid-download must stop the upstream read too (the
            # server's send() just drops data once the client is gone).
            gone = (
                asyncio.ensure_future(_until_disconnect(receive))
                if body is None or body.finished
                else None
            )
            try:
                async for chunk in resp.iter_chunks():
                    if gone is not None and gone.done():
                        raise ClientGone()
                    if capture is not None:
                        capture.add(capture.response_body, chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finally:
                if gone is not None:
                    gone.cancel()
            await send({"type": "http.response.body", "body": b""})
            return resp.status
        finally:
            await resp.release()

    async def _failed(self, send: Any, exc: UpstreamFailure, request_id: str) -> int:
        self._on_failure(exc.kind)
        log.warning("request %s: %s", request_id, exc)
        return await envelope_response(
            send, _FAILURE_STATUS[exc.kind], _FAILURE_MESSAGE[exc.kind], request_id
        )

    async def record(self, request: RecordedRequest) -> RecordedResponse:
        """Call legacy with a recorded request and record its whole answer (for comparison).

        Raises UpstreamFailure; the comparator decides what an unreachable side means.
        """
        started = time.perf_counter()
        target = f"{request.path}?{request.query_string}" if request.query_string else request.path
        resp = await self._upstream.send(
            request.method, target, list(request.headers), request.body or None
        )
        try:
            body = await resp.read()
        finally:
            await resp.release()
        return RecordedResponse(
            status=resp.status,
            headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers),
            body=body,
            side="legacy",
            elapsed=time.perf_counter() - started,
        )
