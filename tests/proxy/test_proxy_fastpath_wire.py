"""The fast engine on the wire: pipelining, Expect, HTTP/1.0, pooled upstream connections,
requests handed to the ASGI app on the same connection, bad requests, graceful stop."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import pytest
from proxy_support import CHUNK, rules_data

from proxy.server import ENGINES
from strangler.exchange import RecordedRequest, RecordedResponse


async def _read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head[:-4].split(b"\r\n")
    headers = {k.lower(): v for k, v in (line.split(b": ", 1) for line in lines)}
    if b"content-length" in headers:
        body = await reader.readexactly(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.read()
    return status_line, headers, body


async def _connect(proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def test_pipelined_requests_are_answered_in_order(start_proxy) -> None:
    proxy = await start_proxy()
    reader, writer = await _connect(proxy)
    writer.write(
        b"GET /echo?n=1 HTTP/1.1\r\nHost: p\r\n\r\n"
        b"POST /echo?n=2 HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /echo?n=3 HTTP/1.1\r\nHost: p\r\n\r\n"
    )
    seen = [json.loads((await _read_response(reader))[2]) for _ in range(3)]
    writer.close()
    await writer.wait_closed()
    assert [(s["query"], s["method"], s["body"]) for s in seen] == [
        ("n=1", "GET", ""),
        ("n=2", "POST", "abc"),
        ("n=3", "GET", ""),
    ]


async def test_expect_100_continue_is_answered_by_the_proxy(start_proxy) -> None:
    proxy = await start_proxy()
    reader, writer = await _connect(proxy)
    writer.write(
        b"POST /echo HTTP/1.1\r\nHost: p\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"hello")
    status, _, body = await _read_response(reader)
    writer.close()
    await writer.wait_closed()
    seen = json.loads(body)
    assert status.startswith(b"HTTP/1.1 200")
    assert seen["body"] == "hello"
    assert "expect" not in {k.lower() for k, _ in seen["headers"]}


async def test_http_10_client_gets_its_answer_then_the_connection_closes(start_proxy) -> None:
    proxy = await start_proxy()
    reader, writer = await _connect(proxy)
    writer.write(b"GET /echo HTTP/1.0\r\nHost: p\r\n\r\n")
    status, headers, body = await _read_response(reader)
    assert status.startswith(b"HTTP/1.1 200") and json.loads(body)["method"] == "GET"
    assert headers[b"connection"] == b"close"
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy
    writer.close()
    await writer.wait_closed()


async def test_upstream_connections_are_kept_alive_and_reused(start_proxy, http) -> None:
    proxy = await start_proxy()
    ports = {(await http.get(proxy.url + "/echo")).json()["peer_port"] for _ in range(20)}
    assert len(ports) == 1  # one after the other: the same pooled connection each time


async def test_bad_request_gets_400_and_the_connection_closes(start_proxy) -> None:
    proxy = await start_proxy()
    reader, writer = await _connect(proxy)
    writer.write(b"GET /echo HTTP/1.1\r\nHost p\r\n\r\n")
    status, _, _ = await _read_response(reader)
    assert status.startswith(b"HTTP/1.1 400")
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()


class _NewSide:
    def __init__(self) -> None:
        self.calls: list[RecordedRequest] = []

    async def __call__(self, request: RecordedRequest) -> RecordedResponse:
        self.calls.append(request)
        return RecordedResponse(
            status=200,
            headers=(("content-type", "application/json"),),
            body=b'{"status": true, "message": "ok", "data": {"origin": "new"}}',
        )


async def test_forwarded_and_asgi_served_requests_share_one_connection(start_proxy, http) -> None:
    new_side = _NewSide()
    proxy = await start_proxy(
        rules=rules_data(connectors={"mode": "new"}),
        handlers={
            ("connectors", endpoint): new_side
            for endpoint in (
                "GET /connectors/getConnectors",
                "GET /connectors/getConnector",
                "POST /connectors/addConnector",
                "POST /connectors/updateConnector",
                "POST /connectors/deleteConnector",
                "POST /connectors/testConnector",
            )
        },
    )
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=5) as client:
        for n in range(5):
            new = await client.get(proxy.url + f"/connectors/getConnectors?n={n}")
            legacy = await client.get(proxy.url + "/users/getUsers")
            posted = await client.post(proxy.url + "/connectors/addConnector", content=b'{"a":1}')
            assert new.json()["data"] == {"origin": "new"}
            assert legacy.json()["data"]["origin"] == "legacy"
            assert posted.status_code == 200 and posted.json()["data"] == {"origin": "new"}
    assert [c.query_string for c in new_side.calls[::2]] == [f"n={n}" for n in range(5)]
    assert {c.body for c in new_side.calls[1::2]} == {b'{"a":1}'}
    metrics = (await http.get(proxy.admin_url + "/metrics")).text
    assert (
        'strangler_proxy_requests_total{entity="users",mode="legacy",origin="legacy",'
        'status="200"} 5.0' in metrics
    )
    assert (
        'strangler_proxy_requests_total{entity="connectors",mode="new",origin="new",'
        'status="200"} 10.0' in metrics
    )


@pytest.mark.parametrize("engine", ENGINES)
async def test_stopping_lets_requests_in_flight_finish(start_proxy) -> None:
    proxy = await start_proxy()
    url = proxy.url
    async with httpx.AsyncClient(timeout=10) as client:
        in_flight = asyncio.create_task(client.get(proxy.url + "/slow?seconds=0.5"))
        await asyncio.sleep(0.2)
        await proxy.stop()
        resp = await in_flight
        assert resp.status_code == 200 and resp.json()["data"] == "late"
        with pytest.raises(httpx.ConnectError):
            await client.get(url + "/echo")


async def test_an_upload_arriving_before_any_upstream_connection_is_open(start_proxy) -> None:
    proxy = await start_proxy()  # a fresh proxy: its pool is empty
    size = 5 * 1024 * 1024
    digest = hashlib.sha256()

    async def body():
        sent = 0
        while sent < size:
            part = CHUNK[: min(len(CHUNK), size - sent)]
            digest.update(part)
            sent += len(part)
            yield part

    async with httpx.AsyncClient(timeout=10) as client:
        resp = await client.post(proxy.url + "/upload", content=body())
    assert resp.json() == {"size": size, "sha256": digest.hexdigest(), "length": None}


async def test_an_oversized_request_head_gets_431(start_proxy) -> None:
    proxy = await start_proxy()
    reader, writer = await _connect(proxy)
    writer.write(b"GET /echo HTTP/1.1\r\nHost: p\r\nX-Big: " + b"a" * (80 * 1024) + b"\r\n\r\n")
    status, _, body = await _read_response(reader)
    writer.close()
    await writer.wait_closed()
    assert status.startswith(b"HTTP/1.1 431")
    assert json.loads(body) == {"status": False, "message": "Request header fields too large"}


class _OneAnswerPerConnection(asyncio.Protocol):
    """Answers the first request of a connection; closes at the second without answering,
    as a backend does when its keep-alive timeout races the proxy's next request."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.answered = False

    def data_received(self, data: bytes) -> None:
        if self.answered:
            self.transport.close()
            return
        self.answered = True
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


async def test_a_pooled_connection_closed_by_legacy_is_retried_only_without_a_body(
    start_proxy, http
) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_OneAnswerPerConnection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        proxy = await start_proxy(legacy_url=f"http://127.0.0.1:{port}")
        first = await http.get(proxy.url + "/any")
        second = await http.get(proxy.url + "/any")  # the pooled connection is dead: retried
        assert (first.status_code, first.text) == (200, "ok")
        assert (second.status_code, second.text) == (200, "ok")
        # A request with a body may have been taken: it is not sent twice.
        posted = await http.post(proxy.url + "/any", content=b"once")
        assert posted.status_code == 502
        assert posted.json()["message"] == "Bad gateway: the backend closed the connection"
    finally:
        server.close()
        await server.wait_closed()


class _BodyUntilClose(asyncio.Protocol):
    """An HTTP/1.0-style answer: no length, no chunks, the end of the body is the close."""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello ")
        self.transport.write(b"world")
        self.transport.close()


async def test_a_body_ended_by_legacy_closing_reaches_the_client_chunked(start_proxy) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_BodyUntilClose, "127.0.0.1", 0)
    try:
        proxy = await start_proxy(
            legacy_url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        )
        reader, writer = await _connect(proxy)
        for _ in range(2):  # the client connection stays usable
            writer.write(b"GET /any HTTP/1.1\r\nHost: p\r\n\r\n")
            status, headers, body = await _read_response(reader)
            assert status.startswith(b"HTTP/1.1 200")
            assert headers[b"transfer-encoding"] == b"chunked"
            assert body == b"hello world"
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_fenced_write_expecting_continue_gets_503_without_100(start_proxy, http) -> None:
    proxy = await start_proxy(rules=rules_data(connectors={"mode": "legacy", "fenced": True}))
    reader, writer = await _connect(proxy)
    writer.write(
        b"POST /connectors/addConnector HTTP/1.1\r\nHost: p\r\nExpect: 100-continue\r\n"
        b"Content-Length: 5\r\n\r\n"
    )
    status, headers, body = await _read_response(reader)
    writer.close()
    await writer.wait_closed()
    assert status.startswith(b"HTTP/1.1 503")  # answered at once: no "100 Continue" first
    assert headers[b"retry-after"] == b"2"
    assert json.loads(body)["message"] == "connectors is being switched over; retry in 2 s"


async def test_an_absolute_form_target_is_routed_and_fenced_like_any_other(start_proxy) -> None:
    proxy = await start_proxy(rules=rules_data(connectors={"mode": "legacy", "fenced": True}))
    reader, writer = await _connect(proxy)
    writer.write(b"GET http://elsewhere.example/echo/x?y=1 HTTP/1.1\r\nHost: p\r\n\r\n")
    _, _, body = await _read_response(reader)
    assert json.loads(body)["path"] == "/echo/x?y=1"
    writer.write(
        b"POST http://p/connectors/addConnector HTTP/1.1\r\nHost: p\r\nContent-Length: 2\r\n\r\n{}"
    )
    status, _, _ = await _read_response(reader)
    writer.close()
    await writer.wait_closed()
    assert status.startswith(b"HTTP/1.1 503")  # the fence holds whatever form the target has
