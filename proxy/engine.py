"""The fast engine: the proxy port's HTTP/1.1 server on uvloop and httptools.

Each client connection is an asyncio protocol fed by httptools' parser. Per request, one
table lookup decides who answers it:

- ``legacy`` mode (and every unknown path), except a write that is fenced or whose touched
  ids are recorded: forwarded here (proxy/fastpath.py), by callbacks, with no task per
  request and the upstream connections of proxy/upstream_pool.py;
- an upgrade (WebSocket): tunnelled to legacy (proxy/tunnel.py);
- everything else (shadow, canary and new modes, fenced writes, recorded writes): handed to
  the ASGI application in this process (proxy/asgi_bridge.py), exactly as under uvicorn.

Pipelined requests are answered in order: the next one waits, reading paused, until the
response before it is complete. A reload swaps the table between two requests; a request
keeps the route it was dispatched with.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import urllib.parse
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol

import httptools

from proxy.app import ProxyApp
from proxy.asgi_bridge import AsgiCycle
from proxy.fastpath import FastExchange, envelope_bytes
from proxy.headers import upstream_head
from proxy.table import UNROUTED
from proxy.tunnel import Tunnel
from proxy.upstream import Timeouts
from proxy.upstream_pool import UpstreamPool

__all__ = ["ClientConnection", "FastServer", "Request"]

log = logging.getLogger("proxy.engine")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
KEEP_ALIVE_TIMEOUT = 75.0  # seconds an idle client connection is kept (uvicorn's setting here)
_SWEEP_SECONDS = 5.0
# A request line and headers bigger than this get 431 (nginx's default buffers hold 32 KiB).
MAX_HEAD_BYTES = 64 * 1024


class _HeadTooLarge(Exception):
    pass


_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}


class Handler(Protocol):
    def request_body(self, chunk: bytes) -> None: ...

    def request_complete(self) -> None: ...

    def client_lost(self) -> None: ...

    def writing_paused(self, paused: bool) -> None: ...


class Request:
    __slots__ = (
        "body",
        "complete",
        "expect_continue",
        "headers",
        "http_11",
        "keep_alive",
        "listener",
        "method",
        "target",
    )

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        http_11: bool,
        expect_continue: bool,
    ) -> None:
        self.method = method
        self.target = target  # the raw path and query, as the client sent them
        self.headers = headers  # names as the client spelled them
        self.keep_alive = keep_alive
        self.http_11 = http_11
        self.expect_continue = expect_continue
        self.body: list[bytes] = []  # chunks that arrived before a handler took the request
        self.complete = False
        self.listener: Handler | None = None


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.client_ip: str | None = None
        self.server_address: tuple[str, int] | None = None
        self.closed = False
        self.queue: deque[Request] = deque()  # the first is being answered
        self.tunnel: Tunnel | None = None
        self._parsing: Request | None = None
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._expect = False
        self._reading_paused = False
        self._head_size = 0
        self.idle_since = 0.0

    # --- asyncio -----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client = (str(peer[0]), int(peer[1]))
            self.client_ip = self.client[0]
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.server_address = (str(local[0]), int(local[1]))
        self.server.connections.add(self)
        self.idle_since = self.server.loop.time()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.from_client(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._upgrade(data[exc.args[0] :])
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._bad_request(431, "Request header fields too large")
            else:
                self._bad_request(400, "Bad request")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.server.connection_quiet()
        if self.tunnel is not None:
            self.tunnel.client_lost()
        queue, self.queue = self.queue, deque()
        for req in queue:
            if req.listener is not None:
                req.listener.client_lost()

    def pause_writing(self) -> None:
        handler = self._active()
        if handler is not None:
            handler.writing_paused(True)

    def resume_writing(self) -> None:
        handler = self._active()
        if handler is not None:
            handler.writing_paused(False)

    def _active(self) -> Handler | Tunnel | None:
        if self.tunnel is not None:
            return self.tunnel
        return self.queue[0].listener if self.queue else None

    def pause_reading(self) -> None:
        if not self._reading_paused and not self.closed and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and not self.closed and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()

    # --- httptools ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._head_size = 0
        self._url = b""
        self._headers = []
        self._expect = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        self._head_size += len(name) + len(value)
        if self._head_size > MAX_HEAD_BYTES:
            raise _HeadTooLarge()
        if len(name) == 6 and name.lower() == b"expect":
            self._expect = value.strip().lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        parser = self.parser
        url = self._url
        if url[:1] != b"/" and url != b"*":
            url = _origin_form(url)
        req = Request(
            parser.get_method(),
            url,
            self._headers,
            parser.should_keep_alive(),
            parser.get_http_version() == "1.1",
            self._expect,
        )
        self._parsing = req
        if parser.should_upgrade():
            return  # feed_data raises HttpParserUpgrade once the head is parsed
        self.queue.append(req)
        if len(self.queue) == 1:
            self.server.dispatch(self, req)
        else:
            self.pause_reading()  # pipelined: it waits for the answer before it

    def on_body(self, body: bytes) -> None:
        req = self._parsing
        assert req is not None
        if req.listener is not None:
            req.listener.request_body(body)
        else:
            req.body.append(body)
            self.pause_reading()

    def on_message_complete(self) -> None:
        req = self._parsing
        assert req is not None
        req.complete = True
        if req.listener is not None:
            req.listener.request_complete()

    # --- endings -----------------------------------------------------------------------------

    def exchange_done(self, req: Request) -> None:
        """The response to ``req`` is complete (or abandoned)."""
        if self.queue and self.queue[0] is req:
            self.queue.popleft()
        self.server.connection_quiet()
        if self.closed or self.transport is None:
            return
        if not req.keep_alive or not req.complete or self.server.stopping:
            self.transport.close()
            return
        if self.queue:
            self.server.dispatch(self, self.queue[0])
        else:
            self.idle_since = self.server.loop.time()
        self.resume_reading()

    def _upgrade(self, rest: bytes) -> None:
        req = self._parsing
        if req is None or self.queue:  # an upgrade pipelined behind requests: not supported
            self._bad_request(400, "Bad request")
            return
        self.tunnel = Tunnel(self.server, self, req, rest, self.server.websocket_pool(req))
        self.tunnel.start()

    def _bad_request(self, status: int, message: str) -> None:
        if self.transport is None or self.closed:
            return
        if not self.queue or self.queue[0].listener is None:
            self.transport.write(envelope_bytes(status, message, "-", keep_alive=False))
        self.transport.close()

    @property
    def idle(self) -> bool:
        return not self.queue and self.tunnel is None


class FastServer:
    """The proxy port's server; the admin port keeps its uvicorn server."""

    def __init__(
        self,
        app: ProxyApp,
        legacy_url: str,
        timeouts: Timeouts,
        keep_alive_timeout: float = KEEP_ALIVE_TIMEOUT,
    ) -> None:
        self.app = app
        self.metrics = app.metrics
        self.pool = UpstreamPool(legacy_url, timeouts)
        # The in-process listener of the WebSockets of entities in new (ProxyInstance sets it).
        self.live_pool: UpstreamPool | None = None
        self.read_timeout = timeouts.read
        self.connections: set[ClientConnection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self.keep_alive_timeout = keep_alive_timeout
        self._quiet = asyncio.Event()  # set when a connection finished a request while stopping
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop  # set by start()

    def websocket_pool(self, req: Request) -> UpstreamPool | None:
        """Where an upgrade goes: the live listener when the proxy serves it (ProxyApp.
        serves_live), else legacy (None)."""
        if self.live_pool is None:
            return None
        path = req.target.split(b"?", 1)[0].decode("latin-1")
        route = self.app.tables.current.lookup_websocket(path)
        if route is not None and self.app.serves_live(route):
            return self.live_pool
        return None

    async def start(self, sock: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: ClientConnection(self), sock=sock, backlog=2048
        )
        self._sweeper = self.loop.call_later(_SWEEP_SECONDS, self._close_idle)

    def _close_idle(self) -> None:
        """Close connections idle longer than the keep-alive timeout (as uvicorn's 75 s),
        including ones that never completed a request head."""
        now = self.loop.time()
        for conn in list(self.connections):
            if conn.idle and now - conn.idle_since > self.keep_alive_timeout:
                if conn.transport is not None:
                    conn.transport.close()
        self._sweeper = self.loop.call_later(_SWEEP_SECONDS, self._close_idle)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``grace`` s), then close.

        WebSocket tunnels are closed at once: they may last for hours, and their clients
        reconnect (to another instance)."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.stopping = True
        deadline = self.loop.time() + grace
        for conn in list(self.connections):
            if not conn.queue and conn.transport is not None:
                conn.transport.close()
        while any(c.queue for c in self.connections) and self.loop.time() < deadline:
            self._quiet.clear()
            try:
                async with asyncio.timeout(deadline - self.loop.time()):
                    await self._quiet.wait()
            except TimeoutError:
                break
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - self.loop.time()))
        self.pool.close()

    def connection_quiet(self) -> None:
        if self.stopping:
            self._quiet.set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def dispatch(self, conn: ClientConnection, req: Request) -> None:
        target = req.target
        raw_path = target.partition(b"?")[0]
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = urllib.parse.unquote(path)
        method = _METHODS.get(req.method) or req.method.decode("latin-1")
        app = self.app
        table = app.tables.current
        route = table.lookup(method, path)
        capture = None
        if route is None:
            entity = UNROUTED
        else:
            plan = route.entity
            # a shadow read is legacy's to answer: forwarded here too, a sampled one with
            # its answer captured for the comparator (ProxyApp.shadow_capture)
            if plan.mode == "shadow" and not route.is_write and not app.split():
                capture = app.shadow_capture(route, method, path, target, req.headers,
                                             conn.client_ip)  # fmt: skip
            elif (
                plan.mode != "legacy"
                or app.split()
                or (
                    route.is_write
                    and (
                        _records_touched(app, plan.name)
                        or app.fences.retry_after(plan, table.fence_retry_after) is not None
                    )
                )
            ):
                cycle = AsgiCycle(self, conn, req)
                req.listener = cycle
                cycle.start()
                return
            entity = plan.name
        pool = self.pool
        head, request_id, body_kind = upstream_head(
            req.method, pool.prefix + target, req.headers, conn.client_ip, b"http", pool.host_header
        )
        exchange = FastExchange(self, conn, req, entity, head, request_id, body_kind)
        if route is not None and route.is_write:
            exchange.fences = app.fences  # counted from here, as the fence check just passed
            app.fences.write_started(entity)
        if capture is not None:
            exchange.capture = functools.partial(capture, request_id)
        req.listener = exchange
        if req.expect_continue and not req.complete and conn.transport is not None:
            conn.transport.write(_CONTINUE)
        exchange.start()


def _origin_form(url: bytes) -> bytes:
    """``/path?query`` of an absolute-form target (``http://host/path?query``), so that it
    is routed, fenced and forwarded like any other; raises HttpParserInvalidURLError."""
    parsed = httptools.parse_url(url)
    path = parsed.path or b"/"
    return path + b"?" + parsed.query if parsed.query else path


def _records_touched(app: ProxyApp, entity: str) -> bool:
    touched = getattr(app, "touched", None)
    return touched is not None and bool(touched.wants(entity))
