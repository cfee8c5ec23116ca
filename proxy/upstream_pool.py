"""Raw keep-alive HTTP/1.1 connections to legacy for the fast engine (proxy/fastpath.py).

One :class:`UpstreamConnection` carries one exchange at a time: the fast engine writes the
request bytes itself and the connection's httptools parser hands the response back through
callbacks, with no task, future or buffer copy per request. A connection goes back to the
pool only when its response was read to the end and the request body fully sent; anything
else closes it. Foreign errors are mapped here, at the boundary, to
:class:`~proxy.errors.UpstreamFailure`.
"""

from __future__ import annotations

import asyncio
import ssl
import urllib.parse
from typing import Any, Protocol

import httptools

from proxy.errors import UpstreamFailure
from proxy.upstream import Timeouts

__all__ = ["UpstreamConnection", "UpstreamListener", "UpstreamPool"]


class UpstreamListener(Protocol):
    """What the connection tells the exchange it carries."""

    def upstream_head(
        self, status: int, reason: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool
    ) -> None: ...

    def upstream_body(self, chunk: bytes) -> None: ...

    def upstream_complete(self) -> None: ...

    def upstream_flush(self) -> None:
        """End of one read from the socket: what was gathered may be written out."""

    def upstream_lost(self, exc: BaseException | None) -> None: ...

    def upstream_paused(self, paused: bool) -> None:
        """The request body is written faster than legacy reads it (or it caught up)."""


class UpstreamConnection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.listener: UpstreamListener | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.head_request = False  # the response to HEAD has headers only
        self.reused = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._interim = False

    # --- asyncio -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        listener = self.listener
        if listener is None:  # bytes nobody asked for: this connection cannot be trusted
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.listener = None
            self.abort()
            listener.upstream_lost(exc)
            return
        listener.upstream_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.upstream_lost(exc)

    def pause_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.listener is not None:
            self.listener.upstream_paused(False)

    # --- httptools ---------------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers, self._headers = self._headers, []
        if 100 <= status < 200 and status != 101:
            self._interim = True  # "100 Continue" and friends: the real answer follows
            return
        listener = self.listener
        if listener is None:
            return
        listener.upstream_head(status, self._reason, headers, self.parser.should_keep_alive())
        if self.head_request:
            # llhttp cannot be told the request was HEAD: the headers are the whole answer,
            # and a fresh parser reads the next response on this connection.
            self.parser = httptools.HttpResponseParser(self)
            listener.upstream_complete()

    def on_body(self, body: bytes) -> None:
        if self.listener is not None:
            self.listener.upstream_body(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.listener is not None:
            self.listener.upstream_complete()

    # --- use by the engine -------------------------------------------------------------------

    def send(self, listener: UpstreamListener, data: bytes, head_request: bool) -> None:
        self.listener = listener
        self.head_request = head_request
        assert self.transport is not None
        self.transport.write(data)

    def release(self, reusable: bool) -> None:
        """The exchange is over: back to the pool when it ended cleanly, else closed."""
        self.listener = None
        if reusable and not self.closed:
            self.reused = True
            self.pool.put(self)
        else:
            self.abort()

    def abort(self) -> None:
        self.listener = None
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Idle keep-alive connections to one legacy base URL (last in, first out)."""

    def __init__(self, base_url: str, timeouts: Timeouts) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"LEGACY_URL must be http(s)://host[:port][/prefix], not {base_url!r}")
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.host_header = url.netloc.rsplit("@", 1)[-1].encode("latin-1")
        self.prefix = url.path.rstrip("/").encode("latin-1")
        self.ssl_context: ssl.SSLContext | None = (
            ssl.create_default_context() if url.scheme == "https" else None
        )
        self.connect_timeout = timeouts.connect
        self._timeouts = timeouts
        self._idle: list[UpstreamConnection] = []

    def take(self) -> UpstreamConnection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
        return None

    async def open(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeouts.connect):
                _, conn = await loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port, ssl=self.ssl_context
                )
        except TimeoutError as exc:
            raise UpstreamFailure("timeout", f"connect to {self.host}:{self.port}") from exc
        except OSError as exc:
            raise UpstreamFailure("refused", str(exc) or type(exc).__name__) from exc
        return conn

    def put(self, conn: UpstreamConnection) -> None:
        if len(self._idle) < self._timeouts.pool_size:
            self._idle.append(conn)
        else:
            conn.abort()

    def forget(self, conn: UpstreamConnection) -> None:
        if conn in self._idle:
            self._idle.remove(conn)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            if conn.transport is not None:
                conn.transport.close()

    def stats(self) -> dict[str, Any]:
        return {"idle": len(self._idle)}
