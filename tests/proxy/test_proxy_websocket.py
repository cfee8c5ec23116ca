"""WebSocket passthrough: frames both ways, subprotocol, close codes both ways, refusals."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from proxy_support import WS_CLOSES, free_port, token

from proxy.server import ENGINES

# Both engines serve the proxy port: each behaviour is checked on each.
pytestmark = pytest.mark.parametrize("engine", ENGINES)


async def test_frames_flow_both_ways_and_legacy_close_code_reaches_client(
    start_proxy, upstream
) -> None:
    proxy = await start_proxy()
    bearer = token()  # minted once: a second mint in another second carries another exp
    ws_url = proxy.url.replace("http", "ws") + f"/ws/runNow/wf_0123456789ab?token={bearer}"
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, protocols=("legacy.v1",)) as ws:
            assert ws.protocol == "legacy.v1"
            hello = await ws.receive_json(timeout=5)
            assert hello == {"hello": "/ws/runNow/wf_0123456789ab", "token": bearer}
            await ws.send_str("ping-1")
            assert (await ws.receive_str(timeout=5)) == "echo:ping-1"
            await ws.send_bytes(b"\x00\x01\x02")
            assert (await ws.receive_bytes(timeout=5)) == b"\x02\x01\x00"
            await ws.send_str("close:4001:run finished")
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert msg.data == 4001
            assert msg.extra == "run finished"


async def test_client_close_code_reaches_legacy(start_proxy, upstream) -> None:
    proxy = await start_proxy()
    closes_before = len(upstream.app[WS_CLOSES])
    ws_url = proxy.url.replace("http", "ws") + f"/ws/activity?token={token()}"
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(ws_url)
        await ws.receive_json(timeout=5)
        await ws.close(code=4002, message=b"bye")
    for _ in range(100):
        if len(upstream.app[WS_CLOSES]) > closes_before:
            break
        await asyncio.sleep(0.02)
    assert upstream.app[WS_CLOSES][-1] == 4002


async def test_handshake_refused_by_legacy_reaches_client_with_its_status(start_proxy) -> None:
    proxy = await start_proxy()
    ws_url = proxy.url.replace("http", "ws") + "/ws/activity"  # no token: legacy says 401
    async with aiohttp.ClientSession() as session:
        try:
            await session.ws_connect(ws_url)
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 401
        else:
            raise AssertionError("the handshake should have been refused")


async def test_websocket_to_unreachable_legacy_is_refused_with_502(start_proxy) -> None:
    proxy = await start_proxy(legacy_url=f"http://127.0.0.1:{free_port()}")
    ws_url = proxy.url.replace("http", "ws") + f"/ws/activity?token={token()}"
    async with aiohttp.ClientSession() as session:
        try:
            await session.ws_connect(ws_url)
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 502
        else:
            raise AssertionError("the handshake should have been refused")
