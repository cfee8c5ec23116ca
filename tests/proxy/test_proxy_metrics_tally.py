"""The request tally exposes what prometheus_client's Counter and Histogram would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import _LATENCY_BUCKETS, ProxyMetrics

OBSERVED = [
    ("connectors", "legacy", "legacy", 200, 0.0004),
    ("connectors", "legacy", "legacy", 200, 0.001),  # exactly on a bound: in that bucket
    ("connectors", "legacy", "legacy", 502, 0.0031),
    ("connectors", "new", "new", 200, 0.02),
    ("unrouted", "legacy", "legacy", 404, 45.0),  # above every bound: +Inf only
    ("connectors", "legacy", "proxy", 503, 0.0),
]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_tally_matches_prometheus_client_counter_and_histogram() -> None:
    metrics = ProxyMetrics()
    reference = CollectorRegistry()
    requests = Counter(
        "strangler_proxy_requests", "x", ("entity", "mode", "origin", "status"), registry=reference
    )
    latency = Histogram(
        "strangler_proxy_request_seconds",
        "x",
        ("entity", "origin"),
        buckets=_LATENCY_BUCKETS,
        registry=reference,
    )
    for entity, mode, origin, status, seconds in OBSERVED:
        metrics.observe(entity, mode, origin, status, seconds)
        requests.labels(entity, mode, origin, str(status)).inc()
        latency.labels(entity, origin).observe(seconds)
    ours = {k: v for k, v in _samples(metrics.registry).items() if "request" in k[0]}
    assert ours == _samples(reference)
    on_the_bound = (("entity", "connectors"), ("le", "0.001"), ("origin", "legacy"))
    assert ours[("strangler_proxy_request_seconds_bucket", on_the_bound)] == 2.0
