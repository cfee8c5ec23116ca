"""The comparator apart (shadow_compare.queue): a proxy appends sampled exchanges to a Redis
Stream, ``strangler shadow work`` asks both sides over HTTP and compares, as in-process."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from replay_backends import JWT_SECRET, TENANT, Backends, cid

from shadow_compare.model import Kind
from shadow_compare.queue import (
    ExchangeWorker,
    QueuedSink,
    decode_exchange,
    encode_exchange,
    stream_key,
)
from shadow_compare.recorder import MemoryRecorder
from shadow_compare.replay import HttpSide
from shadow_compare.rules import RuleSet
from shadow_compare.runner import ShadowRunner
from strangler.exchange import RecordedRequest, RecordedResponse
from strangler.tokens import mint_token

TOKEN = mint_token(JWT_SECRET, "usr_00000000000a", TENANT)


@pytest.fixture
async def redis() -> AsyncIterator[tuple[aioredis.Redis, str]]:
    client = aioredis.from_url("redis://127.0.0.1:6379/0")
    prefix = f"test:{secrets.token_hex(4)}:"
    try:
        yield client, prefix
    finally:
        await client.delete(stream_key(prefix))
        await client.aclose()


def _read(connector: str) -> RecordedRequest:
    return RecordedRequest(
        "GET", "/connectors/getConnector", f"connector_id={connector}",
        (("authorization", f"Bearer {TOKEN}"), ("cookie", "session=kept-in-the-proxy")),
        request_id=f"req-{connector}",
    )  # fmt: skip


async def _served_by_legacy(
    client: httpx.AsyncClient, request: RecordedRequest
) -> RecordedResponse:
    target = f"{request.path}?{request.query_string}"
    answer = await client.get(target, headers=dict(request.headers))
    return RecordedResponse(answer.status_code, tuple(answer.headers.items()), answer.content,
                            side="legacy")  # fmt: skip


def test_an_exchange_survives_the_stream_but_the_headers_no_side_needs() -> None:
    request = _read(cid(3))
    primary = RecordedResponse(200, (("content-type", "application/json"),), b'{"x": 1}', "new")
    fields = encode_exchange("connectors", "GET /connectors/getConnector", request, primary, 12.5)
    back = decode_exchange({k.encode(): v if isinstance(v, bytes) else v.encode()
                            for k, v in fields.items()})  # fmt: skip
    assert back.request == RecordedRequest(
        request.method, request.path, request.query_string, (request.headers[0],), b"",
        request.request_id,
    )  # fmt: skip
    assert (back.primary.status, back.primary.body, back.primary.side) == (200, b'{"x": 1}', "new")
    assert (back.entity, back.endpoint, back.at) == ("connectors", fields["endpoint"], 12.5)


async def test_queued_exchanges_are_compared_by_a_worker_apart_and_stale_ones_are_not(
    two_backends: Backends, redis: tuple[aioredis.Redis, str]
) -> None:
    client, prefix = redis
    registry = CollectorRegistry()
    recorder = MemoryRecorder()
    runner = ShadowRunner(rules=RuleSet.empty(), registry=registry, recorder=recorder,
                          reread_delay_seconds=0.01)  # fmt: skip
    async with (
        httpx.AsyncClient(base_url=two_backends.legacy_url) as legacy,
        httpx.AsyncClient(base_url=two_backends.new_url) as new,
    ):
        worker = ExchangeWorker(client, runner, HttpSide("legacy", "--legacy", legacy),
                                HttpSide("new", "--new", new), registry, prefix=prefix,
                                block_ms=50)  # fmt: skip
        await worker.ensure_group()
        await runner.start()
        stop = asyncio.Event()
        reading = asyncio.create_task(worker.run(stop))
        sink = QueuedSink(client, prefix=prefix)
        await sink.start()
        try:
            # the new side lost a field of connector 2 (a regression); connector 7 agrees
            for connector in (cid(2), cid(7)):
                request = _read(connector)
                primary = await _served_by_legacy(legacy, request)
                assert sink.submit("connectors", "GET /connectors/getConnector", request, primary)
            # an exchange that reaches the worker 5 s after its client's answer: stale
            late = encode_exchange("connectors", "GET /connectors/getConnector", _read(cid(8)),
                                   primary, time.time() - 5.0)  # fmt: skip
            await client.xadd(stream_key(prefix), late)  # type: ignore[arg-type]
            for _ in range(200):  # 10 s at most
                if len(recorder.outcomes) >= 2:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # the stale one is read by now too
        finally:
            stop.set()
            await reading
            await sink.stop()
            await runner.stop()
    kinds = {o.request.query["connector_id"]: o.kind for o in recorder.outcomes}
    assert kinds == {cid(2): Kind.REGRESSION, cid(7): Kind.EQUAL}
    [regression] = [o for o in recorder.outcomes if o.kind == Kind.REGRESSION]
    assert regression.result is not None
    assert [d.path for d in regression.result.differences] == ["$.data.description"]
    assert registry.get_sample_value("strangler_shadow_stale_total", {"entity": "connectors"}) == 1
    assert sink.sent == 2 and sink.lost == 0
    # what went through Redis held the token the sides need, not the client's cookie
    entries = await client.xrange(stream_key(prefix))
    assert entries and all(b"cookie" not in fields[b"headers"] for _id, fields in entries)


async def test_with_redis_down_the_sink_never_fails_a_request_and_bounds_what_it_holds() -> None:
    down = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    sink = QueuedSink(down, buffer=3, flush_seconds=60.0)
    request = _read(cid(1))
    primary = RecordedResponse(200, (), b"{}", "legacy")
    endpoint = "GET /connectors/getConnector"
    assert not sink.submit("connectors", endpoint, request, primary)  # not started
    await sink.start()
    try:
        accepted = [sink.submit("connectors", endpoint, request, primary) for _ in range(5)]
        assert accepted == [True, True, True, False, False]  # the buffer holds 3, then sheds
    finally:
        await sink.stop()  # the flush fails: counted, not raised
        await down.aclose()
    assert (sink.sent, sink.lost) == (0, 3)
