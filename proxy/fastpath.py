"""The fast engine's forwarding of one exchange to legacy, callback-driven, no task per request.

A :class:`FastExchange` writes the request head it built (proxy/headers.py) and the client's
body chunks straight into a pooled upstream connection (proxy/upstream_pool.py), and the
response straight back into the client's transport. Bytes are never copied into a Python
buffer except to frame chunks; flow control is the transports' own: a side whose write
buffer fills pauses reading on the other side until it drains.

Fidelity is the ASGI engine's (docs/proxy.md, "Forwarding"): a response with a known length
of at most ``SMALL_BODY`` is held until complete, so that a failure while reading it still
gets a clean 502/504 and the client gets one write; bigger or chunked bodies stream, and a
failure after the head went out breaks the client connection. A client that leaves stops
the upstream transfer (its connection is closed, never reused).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING

from proxy.errors import UpstreamFailure
from proxy.forward import SMALL_BODY
from proxy.headers import BODY_CHUNKED, BODY_NONE, downstream_head
from proxy.upstream_pool import UpstreamConnection
from strangler.contract import error_body

if TYPE_CHECKING:
    from proxy.engine import ClientConnection, FastServer, Request
    from proxy.fence import FenceBoard

__all__ = ["Capture", "FastExchange", "envelope_bytes", "status_line"]

# (status, legacy's response headers, its whole body, seconds since the request arrived)
Capture = Callable[[int, list[tuple[bytes, bytes]], bytes, float], None]

log = logging.getLogger("proxy.fastpath")

_FAILURE_STATUS = {"refused": 502, "broken": 502, "timeout": 504}
_FAILURE_MESSAGE = {
    "refused": "Bad gateway: the backend is unreachable",
    "broken": "Bad gateway: the backend closed the connection",
    "timeout": "Gateway timeout: the backend did not answer in time",
}
_NO_BODY_STATUS = frozenset({204, 304})
_LAST_CHUNK = b"0\r\n\r\n"
_status_lines: dict[tuple[int, bytes], bytes] = {}


def status_line(status: int, reason: bytes) -> bytes:
    key = (status, reason)
    line = _status_lines.get(key)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason)
        if len(_status_lines) < 1024:  # legacy's reason phrases are few; stay bounded anyway
            _status_lines[key] = line
    return line


def envelope_bytes(
    status: int, message: str, request_id: str, keep_alive: bool, extra: bytes = b""
) -> bytes:
    """A whole response of the proxy's own in the legacy envelope (as forward.envelope_response)."""
    body = json.dumps(error_body(message)).encode()
    return b"".join(
        (
            status_line(status, HTTPStatus(status).phrase.encode()),
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
            b"x-request-id: " + request_id.encode("ascii") + b"\r\n",
            extra,
            b"" if keep_alive else b"connection: close\r\n",
            b"\r\n",
            body,
        )
    )


class FastExchange:
    """One request forwarded to legacy; the listener of its upstream connection."""

    __slots__ = (
        "_body_kind",
        "_buffering",
        "_captured",
        "_captured_headers",
        "_chunked_out",
        "_done",
        "_head_sent",
        "_last_activity",
        "_out",
        "_request_id",
        "_retried",
        "_started",
        "_timer",
        "_until_close",
        "_up",
        "_upstream_head",
        "_upstream_keep_alive",
        "capture",
        "conn",
        "entity",
        "fences",
        "req",
        "server",
        "status",
    )

    def __init__(
        self,
        server: FastServer,
        conn: ClientConnection,
        req: Request,
        entity: str,
        head: bytes,
        request_id: str,
        body_kind: int,
    ) -> None:
        self.server = server
        self.conn = conn
        self.req = req
        self.entity = entity
        self.status = 0
        self._upstream_head = head
        self._request_id = request_id
        self._body_kind = body_kind
        self._started = time.perf_counter()
        self._up: UpstreamConnection | None = None
        self._out: list[bytes] = []
        self._buffering = False
        self._chunked_out = False
        self._until_close = False
        self._head_sent = False
        self._done = False
        self._retried = False
        self._upstream_keep_alive = False
        self._last_activity = 0.0
        self._timer: asyncio.TimerHandle | None = None
        # A sampled shadow read: called once with legacy's whole answer after the client
        # has it (status, headers, body, seconds), for the comparator (proxy.app).
        self.capture: Capture | None = None
        self._captured: list[bytes] = []
        self._captured_headers: list[tuple[bytes, bytes]] = []
        # A write: the fence board that counts it in flight until it is finished.
        self.fences: FenceBoard | None = None

    # --- start -------------------------------------------------------------------------------

    def start(self) -> None:
        up = self.server.pool.take()
        if up is None:
            self.server.spawn(self._open())
        else:
            self._attach(up)

    async def _open(self) -> None:
        try:
            up = await self.server.pool.open()
        except UpstreamFailure as exc:
            if not self._done:
                self._fail(exc.kind, str(exc))
            return
        if self._done:  # the client left while we connected
            up.release(True)
            return
        self._attach(up)

    def _attach(self, up: UpstreamConnection) -> None:
        self._up = up
        req = self.req
        parts = [self._upstream_head]
        if req.body:
            for chunk in req.body:
                parts += self._framed(chunk)
            req.body = []
        if req.complete and self._body_kind == BODY_CHUNKED:
            parts.append(_LAST_CHUNK)
        up.send(self, b"".join(parts), req.method == b"HEAD")
        self.conn.resume_reading()  # paused while the body had nowhere to go
        loop = self.server.loop
        self._last_activity = loop.time()
        self._timer = loop.call_at(self._last_activity + self.server.read_timeout, self._check_idle)

    def _framed(self, chunk: bytes) -> tuple[bytes, ...]:
        if self._body_kind == BODY_CHUNKED:
            return (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        return (chunk,)

    # --- the client's side -------------------------------------------------------------------

    def request_body(self, chunk: bytes) -> None:
        up = self._up
        if up is None or up.transport is None:
            self.req.body.append(chunk)  # bounded: the connection pauses reading meanwhile
            self.conn.pause_reading()
            return
        # An upload in progress is activity too: the read timeout is for a silent legacy.
        self._last_activity = self.server.loop.time()
        if self._body_kind == BODY_CHUNKED:
            up.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            up.transport.write(chunk)

    def request_complete(self) -> None:
        up = self._up
        if up is not None and up.transport is not None and self._body_kind == BODY_CHUNKED:
            up.transport.write(_LAST_CHUNK)

    def writing_paused(self, paused: bool) -> None:
        up = self._up
        if up is not None and up.transport is not None and not up.closed:
            if paused:
                up.transport.pause_reading()
            else:
                up.transport.resume_reading()

    def client_lost(self) -> None:
        if self._done:
            return
        self._finish(499, reusable=False)  # nginx's code for "client closed the request"

    # --- the upstream's side -----------------------------------------------------------------

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None:
        self.status = status
        self._upstream_keep_alive = keep_alive
        lines, length, chunked = downstream_head(headers, self._request_id)
        head = [status_line(status, reason), *lines]
        req = self.req
        no_body = req.method == b"HEAD" or status in _NO_BODY_STATUS or status < 200
        if not no_body and length is None:
            if chunked or req.http_11:
                self._chunked_out = True
                head.append(b"transfer-encoding: chunked\r\n")
            if not chunked:
                self._until_close = True  # legacy ends the body by closing its connection
                if not req.http_11:
                    req.keep_alive = False
        if not req.keep_alive:
            head.append(b"connection: close\r\n")
        elif not req.http_11:
            head.append(b"connection: keep-alive\r\n")
        head.append(b"\r\n")
        self._out.append(b"".join(head))
        self._buffering = length is not None and length <= SMALL_BODY and not no_body
        if self.capture is not None:
            if self._buffering or no_body:
                self._captured_headers = headers
            else:  # streamed (large or chunked): not held, so not compared either
                self.capture = None
                self.server.metrics.shadow.labels(self.entity, "too_large").inc()

    def upstream_body(self, chunk: bytes) -> None:
        if self.capture is not None:
            self._captured.append(chunk)
        if self._chunked_out:
            self._out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        else:
            self._out.append(chunk)

    def upstream_flush(self) -> None:
        self._last_activity = self.server.loop.time()
        if self._buffering or not self._out or self._done:
            return
        self._write_out()

    def _write_out(self) -> None:
        out, self._out = self._out, []
        self._head_sent = True
        transport = self.conn.transport
        if transport is not None:
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def upstream_complete(self) -> None:
        if self._done:
            return
        if self._chunked_out:
            self._out.append(_LAST_CHUNK)
        self._buffering = False
        self._write_out()
        self._finish(self.status, reusable=self._upstream_keep_alive and self.req.complete)
        capture, self.capture = self.capture, None
        if capture is not None:
            try:
                capture(self.status, self._captured_headers, b"".join(self._captured),
                        time.perf_counter() - self._started)  # fmt: skip
            except Exception:  # the comparator must never fail a client's request
                log.exception("request %s: shadow capture failed", self._request_id)

    def upstream_lost(self, exc: BaseException | None) -> None:
        if self._done:
            return
        if self._until_close and self.status:
            self.upstream_complete()  # the close was the end of the body
            return
        up = self._up
        if (
            not self.status
            and up is not None
            and up.reused
            and not self._retried
            and self._body_kind == BODY_NONE
        ):
            # A pooled connection legacy had already closed: nothing of this request can
            # have been processed, so it is sent once more on a fresh connection.
            self._retried = True
            self._up = None
            self._cancel_timer()
            self.server.spawn(self._open())
            return
        self._fail("broken", repr(exc) if exc else "connection closed")

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self.conn.pause_reading()
        else:
            self.conn.resume_reading()

    # --- endings -----------------------------------------------------------------------------

    def _check_idle(self) -> None:
        if self._done:
            return
        loop = self.server.loop
        idle_until = self._last_activity + self.server.read_timeout
        if loop.time() < idle_until:
            self._timer = loop.call_at(idle_until, self._check_idle)
            return
        self._timer = None
        self._fail("timeout", f"no data for {self.server.read_timeout:g} s")

    def _fail(self, kind: str, detail: str) -> None:
        self.server.metrics.upstream_error("legacy", kind)
        log.warning("request %s: legacy backend %s: %s", self._request_id, kind, detail)
        if self._head_sent:
            # The status line is gone: only a broken connection tells the client.
            self._finish(self.status, reusable=False)
            if self.conn.transport is not None:
                self.conn.transport.abort()
            return
        self._out = []
        status = _FAILURE_STATUS[kind]
        transport = self.conn.transport
        if transport is not None:
            transport.write(
                envelope_bytes(
                    status, _FAILURE_MESSAGE[kind], self._request_id, self.req.keep_alive
                )
            )
        self._finish(status, reusable=False)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _finish(self, status: int, reusable: bool) -> None:
        self._done = True
        self._cancel_timer()
        up, self._up = self._up, None
        if up is not None:
            up.release(reusable)
        if self.fences is not None:
            self.fences.write_ended(self.entity)
            self.fences = None
        # As the ASGI app counts it: a client that left is the proxy's own 499.
        origin = "proxy" if status == 499 else "legacy"
        self.server.metrics.observe(
            self.entity, "legacy", origin, status, time.perf_counter() - self._started
        )
        self.conn.exchange_done(self.req)
