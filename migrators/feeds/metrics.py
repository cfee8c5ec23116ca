"""Prometheus metrics of the forward sync, served by ``strangler sync --metrics-port``."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["SyncMetrics", "serve_metrics"]


class SyncMetrics:
    """One set per process; pass a fresh registry in tests."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.lag = Gauge(
            "strangler_sync_lag_seconds",
            "Seconds between a change in MongoDB and the commit that applied it "
            "(last batch; 0 when the feed is caught up)",
            ["entity", "feed"],
            registry=self.registry,
        )
        self.applied = Counter(
            "strangler_sync_events_applied",
            "Feed events applied (rows written, deleted or quarantined, or already current)",
            ["entity", "feed"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "strangler_sync_dead_letters",
            "Feed events moved to the dead-letter table",
            ["entity", "feed"],
            registry=self.registry,
        )
        self.echoes = Counter(
            "strangler_sync_echoes_skipped",
            "Changes made by the reverse sync that the forward sync did not apply back",
            ["entity", "feed"],
            registry=self.registry,
        )
        self.leader = Gauge(
            "strangler_sync_leader",
            "1 while this process leads the entity's sync, 0 while it stands by",
            ["entity", "feed"],
            registry=self.registry,
        )


def serve_metrics(metrics: SyncMetrics, port: int, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` from a daemon thread; returns the server (``.shutdown()`` stops it)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return server
