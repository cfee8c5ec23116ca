"""The proxy's ASGI application: route lookup, write fence, mode dispatch.

Per request: one table lookup, one fence check for writes, then one of

- legacy (every write outside ``new``, every unknown path, every WebSocket): streamed; a
  write legacy took names the documents it touched to the forward sync (proxy/touched.py);
- shadow read: legacy streams to the client; a sampled one is recorded and handed to the
  comparator with the new-side handler as the other side;
- canary read: the tenant's stable bucket picks the side, unless the tenant's own write is
  still on its way to the new side (read-your-writes); the other side is sampled;
- new: the new-side handler answers; a sampled read is compared with legacy (writes are
  never replayed on the other side).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from migrators.consistency import ConsistencyStore, Side
from proxy.canary import in_canary
from proxy.causal import CausalGate, is_split, named_ids, serving_side
from proxy.fence import FenceBoard
from proxy.forward import (
    Capture,
    ClientGone,
    LegacyForwarder,
    envelope_response,
    peek_body,
    read_body,
)
from proxy.headers import UpstreamHeaders, upstream_headers
from proxy.metrics import ProxyMetrics
from proxy.realtime import LiveFanout
from proxy.reload import TableHolder
from proxy.table import UNROUTED, EntityPlan, Route
from proxy.touched import TouchedRecorder
from proxy.websocket import WebSocketForwarder
from strangler.errors import ServiceUnavailable
from strangler.exchange import NewSideHandler, RecordedRequest, RecordedResponse, ShadowSink
from strangler.tokens import InvalidToken, caller_from_authorization

__all__ = ["Limits", "ProxyApp"]

log = logging.getLogger("proxy.app")


@dataclass(frozen=True)
class Limits:
    # A sampled exchange bigger than this is not recorded (and is counted as too_large).
    max_sample_bytes: int = 1024 * 1024
    # A request a new-side handler serves is read whole; bigger ones get 413.
    max_new_side_body: int = 10 * 1024 * 1024


class ProxyApp:
    def __init__(
        self,
        tables: TableHolder,
        fences: FenceBoard,
        legacy: LegacyForwarder,
        websockets: WebSocketForwarder,
        sink: ShadowSink,
        metrics: ProxyMetrics,
        jwt_secret: str,
        limits: Limits = Limits(),
        sample: Callable[[], float] = random.random,
        consistency: ConsistencyStore | None = None,
        write_deadline: float = 30.0,
        touched: TouchedRecorder | None = None,
        shadow_new: LegacyForwarder | None = None,
        live: LiveFanout | None = None,
    ) -> None:
        self.tables = tables
        # Where a comparison asks the new side (None: its handler, in this process).
        self._shadow_new = shadow_new
        self.fences = fences
        self.legacy = legacy
        self.websockets = websockets
        self.sink = sink
        self.metrics = metrics
        self._secret = jwt_secret
        self._limits = limits
        self._sample = sample
        # Read-your-writes across sides in canary (None: not tracked).
        self.consistency = consistency
        # Causal consistency across entities while the table is split (proxy.causal).
        self.causal = CausalGate(consistency) if consistency is not None else None
        self._split: tuple[object, bool] = (None, False)
        # How long a write may take at most (the upstream read timeout): a write's pin is
        # dated this far ahead until the write is done.
        self._write_deadline = write_deadline
        # Names the documents of legacy writes to the forward sync (None: the sweep alone).
        self.touched = touched
        # Serves the WebSockets of entities in new over Redis (None: all go to legacy).
        self.live = live

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":  # resources are managed by the server (proxy.server)
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # --- HTTP --------------------------------------------------------------------------------

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        started = time.perf_counter()
        table = self.tables.current  # this request keeps this table even if a reload happens
        client = scope.get("client")
        headers = upstream_headers(scope["headers"], client[0] if client else None, scope["scheme"])
        route = table.lookup(scope["method"], scope["path"])
        entity, mode, origin = UNROUTED, "legacy", "legacy"
        try:
            if route is None:
                status = await self.legacy.stream(scope, receive, send, headers)
            else:
                plan = route.entity
                entity, mode = plan.name, plan.mode
                retry_after = (
                    self.fences.retry_after(plan, table.fence_retry_after)
                    if route.is_write
                    else None
                )
                if retry_after is not None:
                    origin = "proxy"
                    self.metrics.fenced_writes.labels(entity).inc()
                    status = await envelope_response(
                        send,
                        503,
                        f"{entity} is being switched over; retry in {retry_after} s",
                        headers.request_id,
                        [(b"retry-after", str(retry_after).encode())],
                    )
                elif route.is_write:
                    self.fences.write_started(entity)  # no await since the fence check
                    try:
                        status, origin = await self._served(route, scope, receive, send, headers)
                    finally:
                        self.fences.write_ended(entity)
                else:
                    status, origin = await self._served(route, scope, receive, send, headers)
        except ClientGone:
            status, origin = 499, "proxy"  # nginx's code for "client closed the request"
        self.metrics.observe(entity, mode, origin, status, time.perf_counter() - started)

    async def _served(
        self, route: Route, scope: dict[str, Any], receive: Any, send: Any, hdrs: UpstreamHeaders
    ) -> tuple[int, str]:
        held, receive = await self._hold_causally(route, scope, receive, send, hdrs)
        if held is not None:
            return held, "proxy"
        return await self._dispatch(route, scope, receive, send, hdrs)

    def split(self) -> bool:
        """Whether the current table serves some entities from each side (proxy.causal);
        the fast engine then hands every routed request to this app."""
        table = self.tables.current
        if self._split[0] is not table:
            self._split = (table, is_split(table.entities.values()))
        return self._split[1]

    async def _hold_causally(
        self, route: Route, scope: dict[str, Any], receive: Any, send: Any, hdrs: UpstreamHeaders
    ) -> tuple[int | None, Any]:
        """(the 503's status when a named id is still on its way past the bound, else None;
        the ``receive`` to go on with: a body read here is given again)."""
        gate = self.causal
        if gate is None or not self.split():
            return None, receive
        tenant = self._subscription(scope)
        if tenant is None:
            return None, receive
        body = b""
        if scope["method"] != "GET":
            body, receive = await peek_body(receive, self._limits.max_new_side_body)
        ids = named_ids(scope.get("query_string", b"").decode("latin-1"), body)
        if not ids:
            return None, receive
        plan = route.entity
        mark, waited = await gate.hold(tenant, ids, serving_side(plan, route.is_write, tenant))
        if mark is None:
            if waited > 0.0:
                self.metrics.causal.labels(plan.name, "waited").inc()
            return None, receive
        self.metrics.causal.labels(plan.name, "refused").inc()
        seconds = gate.retry_after
        status = await envelope_response(
            send,
            503,
            f"a {mark.entity} write this request depends on was made on the {mark.side} side "
            f"and has not reached the other yet; retry in {seconds} s",
            hdrs.request_id,
            [(b"retry-after", str(seconds).encode())],
        )
        return status, receive

    async def _note_causally(
        self, entity: str, scope: dict[str, Any], request_body: bytes, response_body: bytes,
        side: Side,
    ) -> None:  # fmt: skip
        gate = self.causal
        if gate is None or not self.split():
            return
        tenant = self._subscription(scope)
        if tenant is not None and not await gate.note(
            entity, tenant, request_body, response_body, side
        ):
            self.metrics.causal.labels(entity, "mark_failed").inc()

    async def _dispatch(
        self, route: Route, scope: dict[str, Any], receive: Any, send: Any, hdrs: UpstreamHeaders
    ) -> tuple[int, str]:
        plan = route.entity
        mode = plan.mode
        if mode == "canary" and route.is_write and self.consistency is not None:
            return await self._canary_write(route, scope, receive, send, hdrs), "legacy"
        if route.is_write and mode != "new":
            return await self._legacy_write(route, scope, receive, send, hdrs), "legacy"
        if mode == "legacy":
            return await self.legacy.stream(scope, receive, send, hdrs), "legacy"
        handler = route.handler
        if handler is None:  # the validator prevents this; stay safe if it ever happens
            return await self.legacy.stream(scope, receive, send, hdrs), "legacy"
        sampled = not route.is_write and plan.sample_rate > 0 and self._sample() < plan.sample_rate
        if mode == "shadow" or (mode == "canary" and not await self._canary_reads_new(scope, plan)):
            if not sampled:
                return await self.legacy.stream(scope, receive, send, hdrs), "legacy"
            return await self._legacy_compared(route, handler, scope, receive, send, hdrs), "legacy"
        return await self._serve_new(route, handler, scope, receive, send, hdrs, sampled), "new"

    def _subscription(self, scope: dict[str, Any]) -> str | None:
        """The caller's tenant from a valid bearer token; None otherwise (legacy then
        answers the 401, as it always did)."""
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value.decode("latin-1")
                break
        try:
            return caller_from_authorization(self._secret, authorization).subscription_id
        except InvalidToken:
            return None

    async def _canary_reads_new(self, scope: dict[str, Any], plan: EntityPlan) -> bool:
        """Whether a canary read goes to the new side: the tenant is in the canary, and
        no write of its own is still on its way there (read-your-writes)."""
        if plan.canary_threshold <= 0:
            return False
        tenant = self._subscription(scope)
        if tenant is None or not in_canary(tenant, plan.canary_threshold):
            return False
        if self.consistency is None:
            return True
        side = await self.consistency.read_side(plan.name, tenant, "new", time.time())
        if side != "new":
            self.metrics.read_your_writes.labels(plan.name, "read_pinned_to_legacy").inc()
        return side == "new"

    async def _canary_write(
        self, route: Route, scope: dict[str, Any], receive: Any, send: Any, hdrs: UpstreamHeaders
    ) -> int:
        """A canary write goes to legacy; its tenant's reads are pinned there until the
        forward sync has carried it to PostgreSQL (migrators/consistency.py)."""
        entity = route.entity.name
        tenant = self._subscription(scope)
        if tenant is not None:
            # Pinned ahead, with a moment no earlier than the write's completion, so that no
            # watermark can release the pin before legacy has the write.
            await self._note_write(entity, tenant, time.time() + self._write_deadline)
        status = await self._legacy_write(route, scope, receive, send, hdrs)
        if tenant is not None and status < 400:
            await self._note_write(entity, tenant, time.time())
        return status

    async def _legacy_write(
        self, route: Route, scope: dict[str, Any], receive: Any, send: Any, hdrs: UpstreamHeaders
    ) -> int:
        """A write legacy takes; once it answered 2xx (the client has the answer), the ids
        it touched go to the forward sync's touched streams."""
        entity = route.entity.name
        if self.touched is None or not self.touched.wants(entity):
            return await self.legacy.stream(scope, receive, send, hdrs)
        capture = Capture(self._limits.max_sample_bytes)
        status = await self.legacy.stream(scope, receive, send, hdrs, capture)
        if 200 <= status < 300 and not capture.too_large:
            request_body, response_body = (
                b"".join(capture.request_body),
                b"".join(capture.response_body),
            )
            await self.touched.record(
                entity, self._subscription(scope), request_body, response_body
            )
            await self._note_causally(entity, scope, request_body, response_body, "legacy")
        return status

    async def _note_write(self, entity: str, tenant: str, at: float) -> None:
        assert self.consistency is not None
        try:
            await self.consistency.note_write(entity, tenant, "legacy", at)
        except ServiceUnavailable as exc:
            # Never fails the client's write; while Redis is down, reads go to legacy anyway.
            log.warning("read-your-writes pin for %s not stored: %s", entity, exc)
            self.metrics.read_your_writes.labels(entity, "pin_failed").inc()

    async def _legacy_compared(
        self,
        route: Route,
        handler: NewSideHandler,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        hdrs: UpstreamHeaders,
    ) -> int:
        capture = Capture(self._limits.max_sample_bytes)
        started = time.perf_counter()
        status = await self.legacy.stream(scope, receive, send, hdrs, capture)
        if capture.too_large:
            self.metrics.shadow.labels(route.entity.name, "too_large").inc()
            return status
        if capture.status == 0:
            return status  # legacy did not answer: nothing to compare
        request = _recorded_request(scope, hdrs, b"".join(capture.request_body))
        primary = RecordedResponse(
            status=capture.status,
            headers=capture.response_headers,
            body=b"".join(capture.response_body),
            side="legacy",
            elapsed=time.perf_counter() - started,
        )
        self._compare_legacy_answer(route, handler, request, primary)
        return status

    def _compare_legacy_answer(
        self,
        route: Route,
        handler: NewSideHandler,
        request: RecordedRequest,
        primary: RecordedResponse,
    ) -> None:
        # Legacy is asked again too: a write that lands between the two answers then shows
        # as legacy moving, not as a regression of the new side.
        self._submit(
            route,
            request,
            primary,
            self._new_side_call(handler, request),
            lambda: self.legacy.record(request),
        )

    def shadow_capture(
        self,
        route: Route,
        method: str,
        path: str,
        target: bytes,
        client_headers: list[tuple[bytes, bytes]],
        client_ip: str | None,
    ) -> Callable[[str, int, list[tuple[bytes, bytes]], bytes, float], None] | None:
        """For the fast engine's shadow reads: None when this one is not sampled, else the
        callback that hands legacy's captured answer to the comparator (as
        :meth:`_legacy_compared` does for the ASGI path)."""
        plan = route.entity
        handler = route.handler
        if handler is None or plan.sample_rate <= 0 or self._sample() >= plan.sample_rate:
            return None
        query = target.partition(b"?")[2].decode("latin-1")

        def compare(
            request_id: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes,
            elapsed: float,
        ) -> None:  # fmt: skip
            if len(body) > self._limits.max_sample_bytes:
                self.metrics.shadow.labels(plan.name, "too_large").inc()
                return
            hdrs = upstream_headers(client_headers, client_ip, "http")
            sent = tuple((k, request_id if k == "x-request-id" else v) for k, v in hdrs.headers)
            request = RecordedRequest(method, path, query, sent, b"", request_id)
            primary = RecordedResponse(
                status,
                tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers),
                body,
                side="legacy",
                elapsed=elapsed,
            )
            self._compare_legacy_answer(route, handler, request, primary)

        return compare

    def _new_side_call(
        self, handler: NewSideHandler, request: RecordedRequest
    ) -> Callable[[], Awaitable[RecordedResponse]]:
        if self._shadow_new is None:
            return _timed_new_side(handler, request)
        remote = self._shadow_new

        async def call() -> RecordedResponse:
            return dataclasses.replace(await remote.record(request), side="new")

        return call

    async def _serve_new(
        self,
        route: Route,
        handler: NewSideHandler,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        hdrs: UpstreamHeaders,
        sampled: bool,
    ) -> int:
        body = await read_body(receive, self._limits.max_new_side_body)
        if body is None:
            return await envelope_response(send, 413, "Request body too large", hdrs.request_id)
        request = _recorded_request(scope, hdrs, body)
        started = time.perf_counter()
        try:
            response = await handler(request)
        except Exception:
            # A handler bug must not take the connection down; it is logged and counted.
            log.exception(
                "request %s: new-side handler for %s failed", hdrs.request_id, route.endpoint
            )
            self.metrics.upstream_error("new", "handler_error")
            return await envelope_response(send, 500, "Internal server error", hdrs.request_id)
        response = dataclasses.replace(response, side="new", elapsed=time.perf_counter() - started)
        if route.is_write and 200 <= response.status < 300:  # noted before the client knows
            await self._note_causally(route.entity.name, scope, body, response.body, "new")
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        if not any(k.lower() == b"x-request-id" for k, _ in out):
            out.append((b"x-request-id", hdrs.request_id.encode("ascii")))
        if not any(k.lower() == b"content-length" for k, _ in out):
            out.append((b"content-length", str(len(response.body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": out})
        await send({"type": "http.response.body", "body": response.body})
        if sampled:
            self._submit(
                route,
                request,
                response,
                lambda: self.legacy.record(request),
                _timed_new_side(handler, request),
            )
        return response.status

    def _submit(
        self,
        route: Route,
        request: RecordedRequest,
        primary: RecordedResponse,
        other: Callable[[], Awaitable[RecordedResponse]],
        primary_again: Callable[[], Awaitable[RecordedResponse]],
    ) -> None:
        entity = route.entity.name
        try:
            accepted = self.sink.submit(
                entity, route.endpoint, request, primary, other, primary_again=primary_again
            )
        except Exception:  # the comparator must never fail a client's request
            log.exception("shadow sink failed on %s", route.endpoint)
            accepted = False
        self.metrics.shadow.labels(entity, "submitted" if accepted else "dropped").inc()

    # --- WebSocket ---------------------------------------------------------------------------

    def serves_live(self, route: Route) -> bool:
        """Whether this proxy serves the WebSocket itself (proxy.realtime), not legacy's hub.

        ``/ws/runNow``: job_runs in new (runs started on the new side; legacy's hub hears
        its own). ``/ws/activity``: activity in any mode but legacy, or ANY entity in new:
        legacy's hub never hears the writes the new side serves, while every entry, from
        either side, reaches PostgreSQL (the forward sync of activity never rests) and the
        relay publishes it."""
        if self.live is None:
            return False
        plan = route.entity
        if plan.name == "activity":
            return plan.mode != "legacy" or any(
                p.mode == "new" for p in self.tables.current.entities.values()
            )
        return plan.mode == "new"  # job_runs: in canary runNow, a write, still goes to legacy

    async def _websocket(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # An entity in new: served here over Redis (proxy.realtime); otherwise legacy's hub.
        route = self.tables.current.lookup_websocket(scope["path"])
        self.metrics.websockets.inc()
        try:
            if route is not None and self.serves_live(route):
                assert self.live is not None
                await self.live.serve(scope, receive, send, route.entity.name)
            else:
                await self.websockets.forward(scope, receive, send)
        finally:
            self.metrics.websockets.dec()


def _recorded_request(scope: dict[str, Any], hdrs: UpstreamHeaders, body: bytes) -> RecordedRequest:
    return RecordedRequest(
        method=scope["method"],
        path=scope["path"],
        query_string=scope.get("query_string", b"").decode("latin-1"),
        headers=tuple(hdrs.headers),
        body=body,
        request_id=hdrs.request_id,
    )


def _timed_new_side(
    handler: NewSideHandler, request: RecordedRequest
) -> Callable[[], Awaitable[RecordedResponse]]:
    async def call() -> RecordedResponse:
        started = time.perf_counter()
        response = await handler(request)
        return dataclasses.replace(response, side="new", elapsed=time.perf_counter() - started)

    return call
