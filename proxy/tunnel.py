"""Upgraded connections (WebSockets) in the fast engine: the handshake and then raw bytes.

A WebSocket goes to legacy, or, for an entity in ``new``, to the proxy's own in-process
listener that serves it over Redis (proxy.realtime; ``FastServer.live_pool``). The
client's upgrade request is forwarded with
the usual header rules (hop-by-hop headers dropped, X-Forwarded-*, request id) but with its
``Upgrade`` and the WebSocket handshake headers kept, so legacy answers the client's own
handshake: its ``101`` (subprotocol included) or its refusal (401...) reaches the client as
legacy sent it, plus the request id. From then on bytes are copied both ways unchanged, so
text, binary, ping and close frames (codes and reasons) pass through exactly; whichever side
closes its connection closes the other. Unreachable legacy gets a 502 in the legacy envelope.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from proxy.fastpath import envelope_bytes
from proxy.headers import upstream_head

if TYPE_CHECKING:
    from proxy.engine import ClientConnection, FastServer, Request
    from proxy.upstream_pool import UpstreamPool

__all__ = ["Tunnel"]

log = logging.getLogger("proxy.tunnel")

_MAX_RESPONSE_HEAD = 64 * 1024


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.tunnel.from_upstream(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel.upstream_lost()

    def pause_writing(self) -> None:
        self.tunnel.conn.pause_reading()

    def resume_writing(self) -> None:
        self.tunnel.conn.resume_reading()


class Tunnel:
    def __init__(
        self,
        server: FastServer,
        conn: ClientConnection,
        req: Request,
        rest: bytes,
        pool: UpstreamPool | None = None,
    ):
        self.server = server
        self.conn = conn
        # legacy's, or the in-process listener serving the WebSockets of entities in new
        self.pool = pool = pool or server.pool
        head, self.request_id, _ = upstream_head(
            req.method,
            pool.prefix + req.target,
            req.headers,
            conn.client_ip,
            b"http",
            pool.host_header,
            upgrade=True,
        )
        self._pending = [head, rest] if rest else [head]
        self._up: _UpstreamSide | None = None
        self._head = b""
        self._head_done = False
        self._ended = False

    def start(self) -> None:
        self.server.metrics.websockets.inc()
        self.server.spawn(self._open())

    async def _open(self) -> None:
        pool = self.pool
        loop = self.server.loop
        try:
            async with asyncio.timeout(pool.connect_timeout):
                _, up = await loop.create_connection(
                    lambda: _UpstreamSide(self), pool.host, pool.port, ssl=pool.ssl_context
                )
        except (TimeoutError, OSError) as exc:
            log.warning("websocket %s: legacy unreachable: %r", self.request_id, exc)
            self.server.metrics.upstream_error("legacy", "refused")
            transport = self.conn.transport
            if transport is not None and not self.conn.closed:
                transport.write(
                    envelope_bytes(
                        502, "Bad gateway: the backend is unreachable", self.request_id, False
                    )
                )
                transport.close()
            self._end()
            return
        if self._ended:  # the client left meanwhile
            assert up.transport is not None
            up.transport.close()
            return
        self._up = up
        assert up.transport is not None
        up.transport.write(b"".join(self._pending))
        self._pending = []

    def from_client(self, data: bytes) -> None:
        up = self._up
        if up is None or up.transport is None:
            self._pending.append(data)
            self.conn.pause_reading()
            return
        up.transport.write(data)

    def from_upstream(self, data: bytes) -> None:
        transport = self.conn.transport
        if transport is None or self.conn.closed:
            return
        if not self._head_done:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > _MAX_RESPONSE_HEAD:
                    self.upstream_lost()
                return
            head, data = self._head[: end + 2], self._head[end + 2 :]
            self._head, self._head_done = b"", True
            if b"\nx-request-id:" not in head.lower():
                head += b"x-request-id: " + self.request_id.encode("ascii") + b"\r\n"
            data = head + data
        transport.write(data)

    def writing_paused(self, paused: bool) -> None:
        up = self._up
        if up is not None and up.transport is not None:
            if paused:
                up.transport.pause_reading()
            else:
                up.transport.resume_reading()

    def client_lost(self) -> None:
        up = self._up
        if up is not None and up.transport is not None:
            up.transport.close()
        self._end()

    def upstream_lost(self) -> None:
        transport = self.conn.transport
        if transport is not None and not self.conn.closed:
            transport.close()  # after what is buffered for the client has been written
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self.server.metrics.websockets.dec()
