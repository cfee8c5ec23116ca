"""Running the ASGI application for one request of the fast engine's connections.

The fast engine forwards legacy-mode requests itself (proxy/fastpath.py); every request that
needs more (a mode other than ``legacy``, a fenced write, a write whose touched ids are
recorded) is handed, in the same process, to :class:`~proxy.app.ProxyApp` through the
scope, ``receive`` and ``send`` built here, with the semantics uvicorn gives it: the body
arrives as ``http.request`` messages (``100 Continue`` is sent on the first ``receive``),
``http.disconnect`` once the client is gone or the response is complete, and a response
without a length is sent chunked.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import deque
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from proxy.fastpath import envelope_bytes, status_line

if TYPE_CHECKING:
    from proxy.engine import ClientConnection, FastServer, Request

__all__ = ["AsgiCycle", "build_scope"]

log = logging.getLogger("proxy.asgi_bridge")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_DISCONNECT = {"type": "http.disconnect"}
_LAST_CHUNK = b"0\r\n\r\n"
# Request body held for the application before the client's socket is paused.
_HIGH_WATER = 256 * 1024


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def build_scope(
    req: Request, client: tuple[str, int] | None, server: tuple[str, int] | None
) -> dict[str, Any]:
    raw_path, _, query = req.target.partition(b"?")
    path = raw_path.decode("latin-1")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1" if req.http_11 else "1.0",
        "server": server,
        "client": client,
        "scheme": "http",
        "method": req.method.decode("latin-1"),
        "root_path": "",
        "path": urllib.parse.unquote(path) if "%" in path else path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": [(name.lower(), value) for name, value in req.headers],
    }


class AsgiCycle:
    """One request served by the ASGI application over a fast-engine connection."""

    def __init__(self, server: FastServer, conn: ClientConnection, req: Request) -> None:
        self.server = server
        self.conn = conn
        self.req = req
        self._chunks: deque[bytes] = deque(req.body)
        self._queued = sum(len(c) for c in req.body)
        req.body = []
        self._final_sent = False
        self._continue_due = req.expect_continue and not req.complete
        self._disconnected = False
        self._started = False
        self._complete = False
        self._chunked = False
        self._head_only = req.method == b"HEAD"
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    def start(self) -> None:
        scope = build_scope(self.req, self.conn.client, self.conn.server_address)
        self.server.spawn(self._run(scope))

    async def _run(self, scope: dict[str, Any]) -> None:
        try:
            await self.server.app(scope, self._receive, self._send)
        except Exception:
            log.exception("request %s %s: the application failed", scope["method"], scope["path"])
            if not self._started and not self._disconnected:
                self._write(envelope_bytes(500, "Internal server error", "-", keep_alive=False))
            self._abort_if_unfinished()
        else:
            if not self._complete:
                self._abort_if_unfinished()
        finally:
            self._complete = True
            self._wake()
            self.conn.exchange_done(self.req)

    def _abort_if_unfinished(self) -> None:
        self.req.keep_alive = False
        if self._started and not self._complete and self.conn.transport is not None:
            self.conn.transport.abort()

    # --- the connection's side ---------------------------------------------------------------

    def request_body(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._queued += len(chunk)
        if self._queued > _HIGH_WATER:
            self.conn.pause_reading()
        self._wake()

    def request_complete(self) -> None:
        self._wake()

    def client_lost(self) -> None:
        self._disconnected = True
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def writing_paused(self, paused: bool) -> None:
        if paused:
            if self._drained is None or self._drained.done():
                self._drained = self.server.loop.create_future()
        elif self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # --- ASGI --------------------------------------------------------------------------------

    async def _receive(self) -> dict[str, Any]:
        if self._continue_due and not self._started:
            self._continue_due = False
            self._write(_CONTINUE)
        while True:
            if self._disconnected or self._complete:
                return _DISCONNECT
            if self._chunks:
                chunk = self._chunks.popleft()
                self._queued -= len(chunk)
                if self._queued <= _HIGH_WATER:
                    self.conn.resume_reading()
                more = bool(self._chunks) or not self.req.complete
                self._final_sent = not more
                return {"type": "http.request", "body": chunk, "more_body": more}
            if self.req.complete and not self._final_sent:
                self._final_sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            self.conn.resume_reading()
            self._wakeup = self.server.loop.create_future()
            await self._wakeup
            self._wakeup = None

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._status = message["status"]
            self._headers = list(message.get("headers", ()))
            return
        if kind != "http.response.body" or self._complete:
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if not self._started:
            self._started = True
            self._write(self._head(len(body) if not more else None))
        if body and not self._head_only:
            self._write(b"%x\r\n%b\r\n" % (len(body), body) if self._chunked else body)
        if not more:
            if self._chunked and not self._head_only:
                self._write(_LAST_CHUNK)
            self._complete = True
            self._wake()
        elif self._drained is not None and not self._drained.done():
            await self._drained

    def _head(self, whole_length: int | None) -> bytes:
        req = self.req
        lines = [status_line(self._status, _reason(self._status))]
        has_length = False
        for name, value in self._headers:
            if name.lower() == b"content-length":
                has_length = True
            lines.append(b"%b: %b\r\n" % (name, value))
        if not has_length and self._status not in (204, 304) and not self._head_only:
            if whole_length is not None:
                lines.append(b"content-length: %d\r\n" % whole_length)
            elif req.http_11:
                self._chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                req.keep_alive = False  # the end of the body is the end of the connection
        if not req.complete:
            req.keep_alive = False  # the rest of an unread body cannot be skipped reliably
        if not req.keep_alive:
            lines.append(b"connection: close\r\n")
        elif not req.http_11:
            lines.append(b"connection: keep-alive\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def _write(self, data: bytes) -> None:
        transport = self.conn.transport
        if transport is not None and not self._disconnected:
            transport.write(data)
