"""Through the proxy, the legacy emulator answers exactly as it does directly."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
import uvicorn

from legacy_emulator.app import create_app
from strangler.mongo import open_database
from strangler.tokens import mint_token

SECRET = "proxy-test-secret-0123456789abcdef"  # the proxy fixtures' JWT secret too
TENANT = ("usr_aaaaaaaaaaa1", "sub_aaaaaaaaaaa1")


@pytest.fixture
async def emulator_url() -> AsyncIterator[str]:
    db = open_database(f"memory://proxy-test-{uuid.uuid4().hex}")
    app = create_app(db, jwt_secret=SECRET, run_step_seconds=0.01, password_rounds=4)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, ws="websockets-sansio", log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    for _ in range(1000):
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task
    sock.close()
    for name in await db.list_collection_names():
        await db[name].drop()


def _same(direct: httpx.Response, proxied: httpx.Response) -> None:
    assert proxied.status_code == direct.status_code
    assert proxied.content == direct.content
    assert proxied.headers["content-type"] == direct.headers["content-type"]


async def test_rest_calls_are_answered_identically(start_proxy, emulator_url, http) -> None:
    proxy = await start_proxy(legacy_url=emulator_url)
    auth = {"Authorization": f"Bearer {mint_token(SECRET, *TENANT)}"}

    for base in (emulator_url, proxy.url):  # no token: legacy's 401 envelope, either way
        assert (await http.get(base + "/connectors/getConnectors")).json() == {
            "status": False,
            "message": "Invalid token",
        }
    created = await http.post(
        proxy.url + "/connectors/addConnector",
        headers=auth,
        json={
            "connector_name": "warehouse",
            "connector_type": "postgres",
            "connection_detail": {"host": "db", "port": 5432, "password": "s3cret"},
        },
    )
    assert created.status_code == 201, created.text
    connector_id = created.json()["data"]["connector_id"]
    for path in (
        f"/connectors/getConnector?connector_id={connector_id}",
        "/connectors/getConnectors?page=1&per_page=5",
        "/connectors/getConnectors?per_page=0",  # legacy's 400
        "/connectors/getConnector?connector_id=cn_000000000000",  # legacy's 404
    ):
        direct = await http.get(emulator_url + path, headers=auth)
        proxied = await http.get(proxy.url + path, headers=auth)
        _same(direct, proxied)
    bad_json = await http.post(
        proxy.url + "/connectors/addConnector", headers=auth, content=b"not json"
    )
    assert bad_json.status_code == 400 and bad_json.json()["status"] is False


async def test_activity_websocket_through_the_proxy(start_proxy, emulator_url, http) -> None:
    proxy = await start_proxy(legacy_url=emulator_url)
    token = mint_token(SECRET, *TENANT)
    ws_base = proxy.url.replace("http", "ws")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{ws_base}/ws/activity?token={token}") as ws:
            await asyncio.sleep(0.1)  # subscribed before the write
            resp = await http.post(
                proxy.url + "/groups/addGroup",
                headers={"Authorization": f"Bearer {token}"},
                json={"group_name": "analysts"},
            )
            assert resp.status_code == 201
            event = await ws.receive_json(timeout=5)
            assert (event["action"], event["object_type"], event["object_name"]) == (
                "created",
                "group",
                "analysts",
            )
            assert event["object_id"] == resp.json()["data"]["group_id"]
        # A bad token: legacy accepts and closes with 1008; the client sees exactly that.
        async with session.ws_connect(f"{ws_base}/ws/activity?token=bad") as ws:
            msg = await ws.receive(timeout=5)
            assert msg.type == aiohttp.WSMsgType.CLOSE
            assert (msg.data, msg.extra) == (1008, "Invalid token")
