"""Which tenants a canary sends to the new side: a stable hash of ``subscription_id``.

A tenant's bucket is the first 8 bytes of ``SHA-256("uzo-canary:" + subscription_id)`` read
as a big-endian unsigned integer, modulo 10,000. A tenant is in the canary at ``percent`` P
when ``bucket < round(P * 100)``. The bucket never depends on the percent, the entity or the
instance, so:

- every proxy instance places a tenant identically;
- raising the percent only adds tenants (the set for P is a subset of the set for any
  larger P), and lowering it only removes them;
- a tenant in the canary of one entity is in the canary of every entity at the same or a
  higher percent, so a tenant is not split across backends more than the percents demand.

Test vectors (also asserted by tests/proxy/test_proxy_canary.py):

    subscription_id      bucket   in the canary from
    sub_000000000000     1679     16.80 %
    sub_0123456789ab     4318     43.19 %
    sub_ffffffffffff     4420     44.21 %
    sub_a1b2c3d4e5f6     8878     88.79 %
    sub_5f3c9a7e2b10     9739     97.40 %
"""

from __future__ import annotations

import hashlib

__all__ = [
    "BUCKETS",
    "CANARY_TEST_VECTORS",
    "in_canary",
    "percent_threshold",
    "tenant_bucket",
]

BUCKETS = 10_000
_SALT = b"uzo-canary:"


def tenant_bucket(subscription_id: str) -> int:
    digest = hashlib.sha256(_SALT + subscription_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def percent_threshold(percent: float) -> int:
    """Buckets below this number are in the canary (percent has 0.01 resolution)."""
    return round(percent * 100)


def in_canary(subscription_id: str, threshold: int) -> bool:
    return tenant_bucket(subscription_id) < threshold


# Documented vectors: anyone re-implementing the hash (another proxy, a report) must agree.
CANARY_TEST_VECTORS: tuple[tuple[str, int], ...] = (
    ("sub_000000000000", 1679),
    ("sub_0123456789ab", 4318),
    ("sub_ffffffffffff", 4420),
    ("sub_a1b2c3d4e5f6", 8878),
    ("sub_5f3c9a7e2b10", 9739),
)
