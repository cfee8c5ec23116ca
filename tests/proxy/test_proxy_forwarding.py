"""Faithful forwarding: what the client sends reaches legacy, what legacy answers reaches
the client, and an unreachable or slow legacy gets a quick 502/504 in its envelope."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from proxy_support import DOWNLOADS, free_port

from proxy.server import ENGINES
from proxy.upstream import Timeouts

# Both engines serve the proxy port: each behaviour is checked on each.
pytestmark = pytest.mark.parametrize("engine", ENGINES)


async def test_method_path_query_and_body_arrive_unchanged(start_proxy, http) -> None:
    proxy = await start_proxy()
    resp = await http.request(
        "PUT",
        proxy.url + "/echo/a%2Fb/caf%C3%A9?x=1&x=2&empty=&sp=a+b",
        content=b'{"k": "v"}',
        headers={"Content-Type": "application/json"},
    )
    seen = resp.json()
    assert resp.status_code == 200
    assert seen["method"] == "PUT"
    assert seen["path"] == "/echo/a%2Fb/caf%C3%A9?x=1&x=2&empty=&sp=a+b"
    assert seen["body"] == '{"k": "v"}'
    names = [k.lower() for k, _ in seen["headers"]]
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == "10"
    # Each header once: the upstream client adds none of its defaults twice.
    assert len(names) == len(set(names))
    assert "transfer-encoding" not in names


async def test_hop_by_hop_headers_are_dropped_and_forwarded_headers_added(
    start_proxy, http
) -> None:
    proxy = await start_proxy()
    resp = await http.get(
        proxy.url + "/echo",
        headers={
            "Authorization": "Bearer abc",
            "Keep-Alive": "timeout=5",
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "must not pass",
            "Proxy-Authorization": "Basic xyz",
            "TE": "trailers",
            "X-Custom": "kept",
            "X-Forwarded-For": "203.0.113.9",
        },
    )
    headers = {k.lower(): v for k, v in resp.json()["headers"]}
    for hop in ("keep-alive", "x-secret-hop", "proxy-authorization", "te"):
        assert hop not in headers, hop
    assert headers["authorization"] == "Bearer abc"
    assert headers["x-custom"] == "kept"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == f"127.0.0.1:{proxy.port}"
    # Legacy is addressed as itself; the client's Host travels as X-Forwarded-Host.
    assert resp.json()["host"] == httpx.URL(proxy.config.legacy_url).netloc.decode()
    # The proxy adds no headers of its own beyond those.
    assert "user-agent" in headers  # the client's, passed through
    assert headers["user-agent"].startswith("python-httpx")


async def test_request_id_is_passed_through_or_created(start_proxy, http) -> None:
    proxy = await start_proxy()
    given = await http.get(proxy.url + "/echo", headers={"X-Request-Id": "req-42"})
    assert given.headers["x-request-id"] == "req-42"
    assert dict((k.lower(), v) for k, v in given.json()["headers"])["x-request-id"] == "req-42"

    created = await http.get(proxy.url + "/echo")
    upstream_saw = dict((k.lower(), v) for k, v in created.json()["headers"])["x-request-id"]
    assert len(upstream_saw) == 32
    assert created.headers["x-request-id"] == upstream_saw


async def test_status_headers_and_every_cookie_reach_the_client(start_proxy, http) -> None:
    proxy = await start_proxy()
    resp = await http.get(proxy.url + "/echo", headers={"Cookie": "a=1; b=2"})
    assert resp.status_code == 200
    assert resp.headers["x-upstream"] == "yes"
    set_cookies = resp.headers.get_list("set-cookie")
    assert len(set_cookies) == 2
    assert any(c.startswith("session=abc123") and "HttpOnly" in c for c in set_cookies)
    assert any(c.startswith("theme=dark") for c in set_cookies)
    seen = dict((k.lower(), v) for k, v in resp.json()["headers"])
    assert seen["cookie"] == "a=1; b=2"
    # Cookies are never shared between clients through the proxy's upstream session.
    other = await httpx.AsyncClient().__aenter__()
    try:
        second = await other.get(proxy.url + "/echo")
    finally:
        await other.aclose()
    assert "cookie" not in dict((k.lower(), v) for k, v in second.json()["headers"])


async def test_error_statuses_and_legacy_envelope_pass_through(start_proxy, http) -> None:
    proxy = await start_proxy()
    resp = await http.get(proxy.url + "/no/such/path")
    assert resp.status_code == 404  # legacy's own answer, unchanged


async def test_refused_upstream_gets_502_envelope_quickly(start_proxy, http) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = await start_proxy(legacy_url=dead)
    started = time.monotonic()
    resp = await http.get(proxy.url + "/connectors/getConnectors")
    assert time.monotonic() - started < 1.5
    assert resp.status_code == 502
    assert resp.json() == {
        "status": False,
        "message": "Bad gateway: the backend is unreachable",
    }
    assert resp.headers["x-request-id"]
    metrics = (await http.get(proxy.admin_url + "/metrics")).text
    assert 'strangler_proxy_upstream_errors_total{kind="refused",origin="legacy"} 1.0' in metrics
    assert (
        'strangler_proxy_requests_total{entity="connectors",mode="legacy",origin="legacy",'
        'status="502"} 1.0' in metrics
    )


async def test_slow_upstream_gets_504_within_the_read_timeout(start_proxy, http) -> None:
    proxy = await start_proxy(timeouts=Timeouts(connect=1.0, read=0.5))
    started = time.monotonic()
    resp = await http.get(proxy.url + "/slow?seconds=5")
    elapsed = time.monotonic() - started
    assert resp.status_code == 504
    assert resp.json()["status"] is False
    assert 0.4 < elapsed < 3.0  # the read timeout, not the upstream's 5 s
    # The proxy is not stuck: the next request is served normally.
    assert (await http.get(proxy.url + "/echo")).status_code == 200


async def test_admin_paths_on_the_proxy_port_go_to_legacy(start_proxy, http) -> None:
    proxy = await start_proxy()
    for path in ("/metrics", "/admin/status", "/healthz"):
        resp = await http.get(proxy.url + path)
        assert resp.status_code == 404, path  # the upstream's 404: admin is not served here
        assert "strangler_proxy" not in resp.text
    for method, path in (("POST", "/admin/fence/connectors?seconds=30"), ("POST", "/admin/reload")):
        resp = await http.request(method, proxy.url + path)
        assert resp.status_code in (404, 405)
    status = (await http.get(proxy.admin_url + "/admin/status")).json()
    assert status["admin_fences"] == {}
    assert (await http.get(proxy.admin_url + "/metrics")).status_code == 200


async def test_client_leaving_mid_download_stops_the_upstream_transfer(
    start_proxy, upstream
) -> None:
    proxy = await start_proxy()
    size = 2 * 1024**3  # far more than could be copied in the time this test takes
    before = len(upstream.app[DOWNLOADS])
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("GET", proxy.url + f"/download?size={size}") as resp:
            received = 0
            async for chunk in resp.aiter_raw():
                received += len(chunk)
                if received > 1024 * 1024:
                    break  # leave: closing the stream drops the connection
    for _ in range(200):
        if len(upstream.app[DOWNLOADS]) > before:
            break
        await asyncio.sleep(0.025)
    outcome, sent = upstream.app[DOWNLOADS][-1]
    assert outcome == "aborted"
    assert sent < size // 4
    gone = (
        'strangler_proxy_requests_total{entity="unrouted",mode="legacy",origin="proxy",'
        'status="499"} 1.0'
    )
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            if gone in (await client.get(proxy.admin_url + "/metrics")).text:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the client that left is not counted as 499")


async def test_head_and_empty_responses_pass_through(start_proxy, http) -> None:
    proxy = await start_proxy()
    get = await http.get(proxy.url + "/echo")
    head = await http.head(proxy.url + "/echo")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["set-cookie"] == get.headers["set-cookie"]
    # The connection is reused cleanly afterwards.
    assert (await http.get(proxy.url + "/echo")).json()["method"] == "GET"
