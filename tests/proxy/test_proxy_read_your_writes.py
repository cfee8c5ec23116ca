"""Read-your-writes in canary: after a tenant's write (served by legacy), its reads stay on
legacy until the forward sync reports the write applied, with the pins in real Redis."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from proxy_support import free_port, rules_data, token

from migrators.consistency import ConsistencyStore
from strangler.exchange import RecordedRequest, RecordedResponse

READS = ("GET /connectors/getConnectors", "GET /connectors/getConnector")


async def _new_side(request: RecordedRequest) -> RecordedResponse:
    return RecordedResponse(
        status=200,
        headers=(("content-type", "application/json"),),
        body=b'{"status": true, "message": "ok", "data": {"origin": "new"}}',
    )


def _canary_everyone() -> dict:
    return rules_data(connectors={"mode": "canary", "percent": 100})


async def test_a_write_pins_the_tenants_reads_to_legacy_until_synced(
    start_proxy, http, redis_client, redis_prefix
) -> None:
    store = ConsistencyStore(redis_client, prefix=redis_prefix)
    try:
        await _pinned_until_synced(store, start_proxy, http)
    finally:
        keys = [key async for key in redis_client.scan_iter(match=redis_prefix + "*")]
        if keys:
            await redis_client.delete(*keys)


async def _pinned_until_synced(store: ConsistencyStore, start_proxy, http) -> None:
    proxy = await start_proxy(
        rules=_canary_everyone(),
        handlers={("connectors", e): _new_side for e in READS},
        consistency=store,
    )
    writer = {"Authorization": f"Bearer {token('sub_000000000001')}"}
    other = {"Authorization": f"Bearer {token('sub_000000000002')}"}

    async def origin(headers) -> str:
        resp = await http.get(proxy.url + "/connectors/getConnectors", headers=headers)
        return resp.json()["data"]["origin"]

    assert await origin(writer) == "new"
    write = await http.post(proxy.url + "/connectors/addConnector", headers=writer, json={})
    assert write.status_code == 200 and write.json()["data"]["origin"] == "legacy"
    mark = await store.mark_of("connectors", "sub_000000000001")
    assert mark is not None and mark.side == "legacy"

    assert await origin(writer) == "legacy"  # its own write may not be in PostgreSQL yet
    assert await origin(other) == "new"  # another tenant is not affected

    # The forward sync reports every change up to now applied: the pin is released.
    await store.publish_watermark("connectors", "forward", time.time() + 1)
    assert await origin(writer) == "new"

    metrics = (await http.get(proxy.admin_url + "/metrics")).text
    assert (
        'strangler_proxy_read_your_writes_total{entity="connectors",'
        'outcome="read_pinned_to_legacy"} 1.0' in metrics
    )


async def test_redis_down_keeps_writes_working_and_reads_on_legacy(start_proxy, http) -> None:
    dead = aioredis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2, socket_timeout=0.2
    )
    try:
        proxy = await start_proxy(
            rules=_canary_everyone(),
            handlers={("connectors", e): _new_side for e in READS},
            consistency=ConsistencyStore(dead),
        )
        auth = {"Authorization": f"Bearer {token()}"}
        write = await http.post(proxy.url + "/connectors/addConnector", headers=auth, json={})
        assert write.status_code == 200
        read = await http.get(proxy.url + "/connectors/getConnectors", headers=auth)
        assert read.json()["data"]["origin"] == "legacy"  # cannot tell: the safe side
        metrics = (await http.get(proxy.admin_url + "/metrics")).text
        assert (
            'strangler_proxy_read_your_writes_total{entity="connectors",outcome="pin_failed"} 2.0'
            in metrics
        )
    finally:
        await dead.aclose()
