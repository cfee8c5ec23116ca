"""WebSocket passthrough to legacy: frames both ways, close codes both ways.

The upstream handshake happens first, so a refusal by legacy (401, 403, 404...) reaches the
client as that status when the server supports the ASGI denial-response extension (uvicorn
does), and as a closed handshake otherwise. Once both sides are open, two pumps copy
frames; whichever side closes first has its close code (and reason) passed to the other.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
from yarl import URL

from proxy.forward import request_target
from proxy.headers import upstream_headers
from strangler.contract import error_body

__all__ = ["WebSocketForwarder"]

log = logging.getLogger("proxy.websocket")

# Codes that describe a close but may not be sent in a close frame (RFC 6455 section 7.4.1).
_NOT_SENDABLE = {1005: 1000, 1006: 1001, 1015: 1011}


def _sendable(code: int | None, default: int = 1000) -> int:
    if code is None:
        return default
    return _NOT_SENDABLE.get(code, code)


class WebSocketForwarder:
    def __init__(self, legacy_url: str, connect_timeout: float) -> None:
        base = legacy_url.rstrip("/")
        self._base = "ws" + base[4:] if base.startswith("http") else base
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert self._session is not None, "WebSocketForwarder.start() was not awaited"
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        client = scope.get("client")
        hdrs = upstream_headers(
            scope["headers"], client[0] if client else None, scope["scheme"], websocket=True
        )
        url = URL(self._base + request_target(scope), encoded=True)
        try:
            async with asyncio.timeout(self._connect_timeout):
                upstream = await self._session.ws_connect(
                    url,
                    headers=hdrs.headers,
                    protocols=tuple(scope.get("subprotocols") or ()),
                    autoclose=False,
                    autoping=True,
                    max_msg_size=0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
                    compress=0,
                )
        except aiohttp.WSServerHandshakeError as exc:
            await _deny(
                scope, send, exc.status, exc.message or "WebSocket refused", hdrs.request_id
            )
            return
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("websocket %s: legacy unreachable: %s", hdrs.request_id, exc)
            await _deny(
                scope, send, 502, "Bad gateway: the backend is unreachable", hdrs.request_id
            )
            return
        async with upstream:
            await send(
                {
                    "type": "websocket.accept",
                    "subprotocol": upstream.protocol,
                    "headers": [(b"x-request-id", hdrs.request_id.encode())],
                }
            )
            await _pump_both(receive, send, upstream)


async def _deny(
    scope: dict[str, Any], send: Any, status: int, message: str, request_id: str
) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        body = json.dumps(error_body(message)).encode()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


async def _client_to_upstream(receive: Any, upstream: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.receive":
            if message.get("text") is not None:
                await upstream.send_str(message["text"])
            elif message.get("bytes") is not None:
                await upstream.send_bytes(message["bytes"])
        elif message["type"] == "websocket.disconnect":
            reason = message.get("reason") or ""
            await upstream.close(code=_sendable(message.get("code")), message=reason.encode())
            return


async def _upstream_to_client(send: Any, upstream: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        # Not ``async for``: it stops silently at a close frame, whose code must be passed on.
        msg = await upstream.receive()
        if msg.type == aiohttp.WSMsgType.TEXT:
            await send({"type": "websocket.send", "text": msg.data})
        elif msg.type == aiohttp.WSMsgType.BINARY:
            await send({"type": "websocket.send", "bytes": msg.data})
        elif msg.type == aiohttp.WSMsgType.CLOSE:
            code = _sendable(msg.data)
            await upstream.close(code=code)  # answers legacy's close frame
            await send({"type": "websocket.close", "code": code, "reason": msg.extra or ""})
            return
        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            break
        elif msg.type == aiohttp.WSMsgType.ERROR:
            log.warning("websocket: legacy side failed: %s", upstream.exception())
            break
    # The connection to legacy ended without a close frame: tell the client it was abnormal.
    await send({"type": "websocket.close", "code": 1011})


async def _pump_both(receive: Any, send: Any, upstream: aiohttp.ClientWebSocketResponse) -> None:
    downstream = asyncio.ensure_future(_client_to_upstream(receive, upstream))
    upward = asyncio.ensure_future(_upstream_to_client(send, upstream))
    try:
        done, _pending = await asyncio.wait(
            {downstream, upward}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (downstream, upward):
            if not task.done():
                task.cancel()
        await asyncio.gather(downstream, upward, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning("websocket pump ended with %r", task.exception())
