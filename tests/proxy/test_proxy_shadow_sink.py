"""Shadow mode wired to the real comparator (shadow_compare.runner), as ``proxy serve`` does."""

from __future__ import annotations

import json

from proxy_support import rules_data, token

from proxy.metrics import ProxyMetrics
from proxy.shadow import CountingDropSink, load_shadow_sink
from strangler.exchange import RecordedRequest, RecordedResponse


async def _same_as_legacy(request: RecordedRequest) -> RecordedResponse:
    # The test upstream answers these reads with this envelope; the new side agrees.
    body = {
        "status": True,
        "message": "ok",
        "data": {"origin": "legacy", "path": request.path, "body": ""},
    }
    return RecordedResponse(
        status=200, headers=(("content-type", "application/json"),), body=json.dumps(body).encode()
    )


async def test_sampled_reads_reach_the_comparator_and_are_compared(start_proxy, http) -> None:
    metrics = ProxyMetrics()
    sink, runner = load_shadow_sink(
        {"database_url": None, "rules_path": None, "registry": metrics.registry}
    )
    assert runner is not None and not isinstance(sink, CountingDropSink)
    await runner.start()
    try:
        handlers = {
            ("connectors", e): _same_as_legacy
            for e in ("GET /connectors/getConnectors", "GET /connectors/getConnector")
        }
        proxy = await start_proxy(
            rules=rules_data(connectors={"mode": "shadow", "sample_rate": 1.0}),
            handlers=handlers,
            sink=sink,
        )
        for _ in range(3):
            resp = await http.get(
                proxy.url + "/connectors/getConnectors",
                headers={"Authorization": f"Bearer {token()}"},
            )
            assert resp.status_code == 200
        await runner.drain()
    finally:
        await runner.stop()
    compared = metrics.registry.get_sample_value(
        "strangler_shadow_compared_total", {"entity": "connectors"}
    )
    assert compared == 3
    outcomes = {
        sample.labels["kind"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "strangler_shadow_results"
        for sample in family.samples
        if sample.name.endswith("_total")
    }
    assert outcomes == {"equal": 3.0}  # the new side answered what legacy answered
