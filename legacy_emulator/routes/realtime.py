"""The two WebSockets: ``/ws/runNow/{workflow_id}`` and ``/ws/activity``.

The token comes as ``?token=``. A bad one is answered by accepting and at
once closing with 1008 (policy violation), so that a browser client sees the
code; closing before the accept would only show it an HTTP 403.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket

from legacy_emulator.env import Emulator
from legacy_emulator.realtime import Queue
from strangler.tokens import Caller, InvalidToken, verify_token

__all__ = ["POLICY_VIOLATION", "activity_updates", "run_updates"]

POLICY_VIOLATION = 1008


async def _caller(websocket: WebSocket, emulator: Emulator) -> Caller | None:
    try:
        return verify_token(emulator.jwt_secret, websocket.query_params.get("token", ""))
    except InvalidToken:
        await websocket.accept()
        await websocket.close(code=POLICY_VIOLATION, reason="Invalid token")
        return None


async def _forward(websocket: WebSocket, queue: Queue) -> None:
    """Send what the queue receives until the client goes away."""

    async def send_all() -> None:
        while True:
            await websocket.send_json(await queue.get())

    sender = asyncio.create_task(send_all())
    try:
        while True:  # anything the client sends is ignored; a disconnect ends the loop
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender


async def run_updates(websocket: WebSocket) -> None:
    emulator: Emulator = websocket.app.state.emulator
    caller = await _caller(websocket, emulator)
    if caller is None:
        return
    workflow_id = websocket.path_params["workflow_id"]
    with emulator.hub.run_updates(caller.subscription_id, workflow_id) as queue:
        await websocket.accept()
        await _forward(websocket, queue)


async def activity_updates(websocket: WebSocket) -> None:
    emulator: Emulator = websocket.app.state.emulator
    caller = await _caller(websocket, emulator)
    if caller is None:
        return
    with emulator.hub.activity(caller.subscription_id) as queue:
        await websocket.accept()
        await _forward(websocket, queue)
