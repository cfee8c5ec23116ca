"""The sync's metrics as Prometheus scrapes them."""

from __future__ import annotations

import socket

import httpx

from migrators.feeds.metrics import SyncMetrics, serve_metrics


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_lag_and_applied_events_are_served_on_the_metrics_port() -> None:
    metrics = SyncMetrics()
    metrics.lag.labels("connectors", "polling").set(0.25)
    metrics.applied.labels("connectors", "polling").inc(7)
    port = _free_port()
    server = serve_metrics(metrics, port)
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    finally:
        server.shutdown()
        server.server_close()
    assert 'strangler_sync_lag_seconds{entity="connectors",feed="polling"} 0.25' in text
    assert 'strangler_sync_events_applied_total{entity="connectors",feed="polling"} 7.0' in text
