"""The admin port: health, readiness, status with the table hash, Prometheus metrics."""

from __future__ import annotations

from proxy_support import RULES

from proxy.rules import load_rules


async def test_health_readiness_and_status(start_proxy, http) -> None:
    proxy = await start_proxy()
    assert (await http.get(proxy.admin_url + "/healthz")).json() == {"status": "ok"}
    ready = (await http.get(proxy.admin_url + "/readyz")).json()
    assert ready["status"] == "ready"
    status = (await http.get(proxy.admin_url + "/admin/status")).json()
    assert status["table_hash"] == ready["table_hash"] == proxy.tables.current.table_hash
    assert status["rules_path"] == proxy.config.rules_path
    assert status["loaded_at"].endswith("+00:00")
    assert status["last_refusal"] is None and status["file_refused"] is False
    assert set(status["entities"]) == {
        "connectors",
        "workspaces",
        "job_runs",
        "users",
        "groups",
        "roles",
        "activity",
    }
    assert status["entities"]["workspaces"] == {
        "mode": "legacy",
        "sample_rate": 0.0,
        "percent": 0.0,
        "fenced": False,
    }


async def test_instances_reading_the_same_table_report_the_same_hash(start_proxy, http) -> None:
    first, second = await start_proxy(), await start_proxy()
    hashes = {
        (await http.get(p.admin_url + "/admin/status")).json()["table_hash"]
        for p in (first, second)
    }
    # Layout and comments do not change the hash: the shipped file (with its comments) and
    # the tests' re-dumped copy hash alike.
    assert hashes == {load_rules(str(RULES)).rules.canonical_hash()}


async def test_metrics_count_requests_latency_by_entity_mode_origin_status(
    start_proxy, http
) -> None:
    proxy = await start_proxy()
    for _ in range(3):
        await http.get(proxy.url + "/connectors/getConnectors")
    await http.get(proxy.url + "/echo")
    text = (await http.get(proxy.admin_url + "/metrics")).text
    assert (
        'strangler_proxy_requests_total{entity="connectors",mode="legacy",origin="legacy",'
        'status="200"} 3.0' in text
    )
    assert (
        'strangler_proxy_requests_total{entity="unrouted",mode="legacy",origin="legacy",'
        'status="200"} 1.0' in text
    )
    assert 'strangler_proxy_request_seconds_count{entity="connectors",origin="legacy"} 3.0' in text
    assert (
        'strangler_proxy_request_seconds_bucket{entity="connectors",le="+Inf",origin="legacy"} 3.0'
        in text
    )
    assert "strangler_proxy_table_loaded_timestamp_seconds" in text
