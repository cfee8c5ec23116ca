"""Prometheus metrics of one proxy instance, in its own CollectorRegistry.

Label children are cached in plain dicts so that the request path pays one dict lookup per
observation, not prometheus_client's label resolution.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

__all__ = ["ProxyMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "strangler_proxy_requests",
            "Requests answered, by entity, mode, origin (legacy, new, proxy) and status.",
            ("entity", "mode", "origin", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "strangler_proxy_request_seconds",
            "Time to the end of the response, by entity and origin.",
            ("entity", "origin"),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "strangler_proxy_upstream_errors",
            "Upstream failures: origin (legacy, new) and kind (refused, timeout, broken, "
            "handler_error).",
            ("origin", "kind"),
            registry=r,
        )
        self.reloads = Counter(
            "strangler_proxy_reloads",
            "Rules reloads, by result (applied, unchanged, refused).",
            ("result",),
            registry=r,
        )
        self.fenced_writes = Counter(
            "strangler_proxy_fenced_writes",
            "Writes answered 503 because their entity is fenced.",
            ("entity",),
            registry=r,
        )
        self.shadow = Counter(
            "strangler_proxy_shadow_exchanges",
            "Sampled exchanges handed to the comparator, by outcome (submitted, dropped, "
            "too_large, no_handler).",
            ("entity", "outcome"),
            registry=r,
        )
        self.read_your_writes = Counter(
            "strangler_proxy_read_your_writes",
            "Canary reads kept on legacy after the tenant's write (read_pinned_to_legacy), "
            "and pins that could not be stored (pin_failed).",
            ("entity", "outcome"),
            registry=r,
        )
        self.websockets = Gauge(
            "strangler_proxy_websockets_open", "WebSocket sessions open.", registry=r
        )
        self.table_info = Gauge(
            "strangler_proxy_table_info",
            "1 for the routing table in force, labelled with its hash.",
            ("table_hash",),
            registry=r,
        )
        self.table_loaded_at = Gauge(
            "strangler_proxy_table_loaded_timestamp_seconds",
            "When the routing table in force was applied (Unix time).",
            registry=r,
        )
        self._children: dict[tuple[object, ...], MetricWrapperBase] = {}

    def observe(self, entity: str, mode: str, origin: str, status: int, seconds: float) -> None:
        key = ("r", entity, mode, origin, status)
        counter = self._children.get(key)
        if counter is None:
            counter = self._children[key] = self.requests.labels(entity, mode, origin, str(status))
        counter.inc()  # type: ignore[attr-defined]
        hkey = ("h", entity, origin)
        histogram = self._children.get(hkey)
        if histogram is None:
            histogram = self._children[hkey] = self.latency.labels(entity, origin)
        histogram.observe(seconds)  # type: ignore[attr-defined]

    def upstream_error(self, origin: str, kind: str) -> None:
        self.upstream_errors.labels(origin, kind).inc()

    def table_applied(self, old_hash: str | None, new_hash: str, at: float) -> None:
        if old_hash is not None and old_hash != new_hash:
            self.table_info.remove(old_hash)
        self.table_info.labels(new_hash).set(1)
        self.table_loaded_at.set(at)
