"""Running a proxy instance: the proxy server and the admin server in one event loop.

:class:`ProxyInstance` owns everything one instance needs (upstream session, table holder,
fences, metrics, the two uvicorn servers) and is what both ``strangler proxy serve`` and
the tests start. uvicorn's own signal capture is turned off because two servers share the
loop; :func:`serve` handles SIGINT/SIGTERM (graceful stop) and SIGHUP (reload) itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import signal
import socket
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from migrators.consistency import ConsistencyStore
from proxy.admin import build_admin_app
from proxy.app import Limits, ProxyApp
from proxy.engine import FastServer
from proxy.fence import FenceBoard
from proxy.forward import LegacyForwarder
from proxy.metrics import ProxyMetrics
from proxy.realtime import LiveFanout
from proxy.registry import HandlerRegistry
from proxy.reload import TableHolder
from proxy.touched import TouchedRecorder
from proxy.upstream import UPSTREAM_CLIENTS, Timeouts
from proxy.upstream_pool import UpstreamPool
from proxy.websocket import WebSocketForwarder
from strangler.exchange import ShadowSink

__all__ = ["ENGINES", "ProxyConfig", "ProxyInstance", "fastest_loop", "serve"]

ENGINES = ("fast", "asgi")

log = logging.getLogger("proxy.server")


@dataclass(frozen=True)
class ProxyConfig:
    legacy_url: str
    rules_path: str = "routing_rules.yaml"
    host: str = "0.0.0.0"
    port: int = 8000
    admin_host: str = "127.0.0.1"
    admin_port: int = 9000
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    watch_interval: float = 1.0
    upstream_client: str = "aiohttp"
    # "fast": the proxy port is served by proxy/engine.py (legacy mode forwarded by callbacks,
    # the rest by the ASGI app in-process); "asgi": uvicorn serves the ASGI app for all.
    engine: str = "fast"
    # Shadow and canary comparisons ask the new side here (a proxy serving those entities
    # in new) instead of running its handlers in this process; None: in-process.
    shadow_new_url: str | None = None
    instance: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}")


def _http_impl() -> str:
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def fastest_loop() -> Any:
    """uvloop's loop factory when installed (an optional speed-up), else asyncio's default."""
    if importlib.util.find_spec("uvloop"):
        import uvloop

        return uvloop.new_event_loop
    return None


class _SharedLoopServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals are handled once for both servers, by serve()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every response pays Nagle's ~40 ms delayed-ACK stall.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class ProxyInstance:
    def __init__(
        self,
        config: ProxyConfig,
        jwt_secret: str,
        registry: HandlerRegistry,
        sink: ShadowSink,
        metrics: ProxyMetrics | None = None,
        consistency: ConsistencyStore | None = None,
        touched: TouchedRecorder | None = None,
        live: LiveFanout | None = None,
    ) -> None:
        self.config = config
        self.live = live
        self.metrics = metrics or ProxyMetrics()
        self.registry = registry
        self.fences = FenceBoard()
        self.tables = TableHolder(config.rules_path, registry, self.metrics)
        client = UPSTREAM_CLIENTS[config.upstream_client]
        self.upstream = client(config.legacy_url, config.timeouts)
        self.websockets = WebSocketForwarder(config.legacy_url, config.timeouts.connect)
        legacy = LegacyForwarder(
            self.upstream, on_failure=lambda kind: self.metrics.upstream_error("legacy", kind)
        )
        self.shadow_new_upstream = (
            None
            if config.shadow_new_url is None
            else client(config.shadow_new_url, config.timeouts)
        )
        shadow_new = (
            None
            if self.shadow_new_upstream is None
            else LegacyForwarder(
                self.shadow_new_upstream,
                on_failure=lambda kind: self.metrics.upstream_error("new", kind),
            )
        )
        self.app = ProxyApp(
            self.tables,
            self.fences,
            legacy,
            self.websockets,
            sink,
            self.metrics,
            jwt_secret,
            config.limits,
            consistency=consistency,
            write_deadline=config.timeouts.read,
            touched=touched,
            shadow_new=shadow_new,
            live=live,
        )
        self.admin_app = build_admin_app(self.tables, self.fences, self.metrics, config.instance)
        self._servers: list[_SharedLoopServer] = []
        self._fast: FastServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: asyncio.Task[None] | None = None
        self._sockets: list[socket.socket] = []

    @property
    def port(self) -> int:
        return int(self._sockets[0].getsockname()[1])

    @property
    def admin_port(self) -> int:
        return int(self._sockets[1].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.config.admin_host}:{self.admin_port}"

    async def start(self) -> None:
        """Load the table (RulesError stops the start), bind both ports (OSError), open the
        pool, start both servers."""
        self.tables.load_initial()
        self._sockets = [_bind(self.config.host, self.config.port)]
        try:
            self._sockets.append(_bind(self.config.admin_host, self.config.admin_port))
        except OSError:
            self._sockets[0].close()
            raise
        await self.upstream.start()
        if self.shadow_new_upstream is not None:
            await self.shadow_new_upstream.start()
        await self.websockets.start()
        served: list[tuple[Any, socket.socket]] = [(self.admin_app, self._sockets[1])]
        if self.live is not None:
            await self.live.start()
        if self.config.engine == "fast":
            self._fast = FastServer(self.app, self.config.legacy_url, self.config.timeouts)
            if self.live is not None:
                # The engine tunnels upgrades; those of entities in new come here, where
                # uvicorn speaks WebSocket to the app (proxy.realtime serves them).
                live_sock = _bind("127.0.0.1", 0)
                self._sockets.append(live_sock)
                served.append((self.app, live_sock))
                port = live_sock.getsockname()[1]
                self._fast.live_pool = UpstreamPool(
                    f"http://127.0.0.1:{port}", self.config.timeouts
                )
            await self._fast.start(self._sockets[0])
        else:
            served.insert(0, (self.app, self._sockets[0]))
        for app, sock in served:
            server = _SharedLoopServer(
                uvicorn.Config(
                    app,
                    http=_http_impl(),
                    ws="websockets-sansio",
                    lifespan="off",
                    access_log=False,
                    log_level="warning",
                    server_header=False,
                    date_header=False,
                    proxy_headers=False,  # X-Forwarded-* are the proxy's own business
                    timeout_keep_alive=75,
                    backlog=2048,
                )
            )
            self._servers.append(server)
            self._tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        self._watcher = asyncio.create_task(self.tables.watch(self.config.watch_interval))
        while not all(s.started for s in self._servers):
            if any(t.done() for t in self._tasks):
                await self.stop()
                raise OSError("a proxy server failed to start; see the log above")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish, then close the pool."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
            self._watcher = None
        for server in self._servers:
            server.should_exit = True
        if self._fast is not None:
            await self._fast.stop()
            self._fast = None
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._servers.clear()
        await self.websockets.close()
        if self.live is not None:
            await self.live.stop()
        await self.upstream.close()
        if self.shadow_new_upstream is not None:
            await self.shadow_new_upstream.close()
        for sock in self._sockets:
            sock.close()


async def serve(instance: ProxyInstance, on_stop: Any = None) -> None:
    """Run until SIGINT/SIGTERM; SIGHUP reloads the rules."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    await instance.start()
    loop.add_signal_handler(signal.SIGINT, stopping.set)
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(
        signal.SIGHUP, lambda: asyncio.ensure_future(instance.tables.reload("SIGHUP"))
    )
    log.info(
        "proxy %s on %s -> %s; admin on %s; table %s",
        instance.config.instance,
        instance.url,
        instance.config.legacy_url,
        instance.admin_url,
        instance.tables.current.table_hash,
    )
    try:
        await stopping.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        log.info("proxy stopping: finishing in-flight requests")
        await instance.stop()
        if on_stop is not None:
            await on_stop()
