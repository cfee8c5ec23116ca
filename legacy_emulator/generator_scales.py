"""Volumes of the seed data: the growth table of the architecture review, tenants, ids, time.

Pure and deterministic: nothing here reads the clock or the global ``random``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bson import ObjectId

__all__ = [
    "ANCHOR",
    "SCALES",
    "IdMint",
    "Scale",
    "allocate",
    "moment_between",
    "stream",
    "zipf_weights",
]

# Every generated time lies before this fixed instant (naive = UTC, as PyMongo
# returns BSON dates), so the data looks recent and never depends on the clock.
ANCHOR = datetime(2026, 11, 1, 0, 0, 0)


@dataclass(frozen=True)
class Scale:
    """How much data one ``seed`` run writes.

    The first four volumes are the architecture review's growth table; job runs
    and activity are per day of history, ``default_days`` days of it unless
    ``seed_store(days=...)`` says otherwise.
    """

    name: str
    tenants: int
    workspaces: int
    workflows: int
    users: int
    connectors: int
    job_runs_per_day: int
    activity_per_day: int
    default_days: int
    # How far before ANCHOR the oldest account, workspace or workflow was created.
    history_days: int


# default_days is chosen so that each scale seeds the in-process mongomock store
# in minutes on a 2-core machine (figures in docs/seed_data.md): 1y keeps 30 days
# of runs and activity (300,000 runs, 600,000 activity entries, ~75 s, ~2 GB).
SCALES: dict[str, Scale] = {
    scale.name: scale
    for scale in (
        Scale("small", 3, 20, 200, 30, 24, 100, 300, 14, 90),
        Scale("6mo", 12, 1_000, 10_000, 500, 400, 1_000, 3_000, 60, 182),
        Scale("1y", 25, 5_000, 50_000, 2_000, 1_500, 10_000, 20_000, 30, 365),
        Scale("2y", 60, 20_000, 200_000, 10_000, 5_000, 50_000, 100_000, 7, 730),
    )
}


def stream(seed: int, *parts: object) -> random.Random:
    """An independent generator per purpose, so one part's draws never shift another's."""
    return random.Random(":".join(str(part) for part in (seed, *parts)))


def zipf_weights(count: int, exponent: float = 1.2) -> list[float]:
    """Very uneven tenant sizes: one huge, a few medium, a long tail."""
    raw = [1.0 / (rank + 1) ** exponent for rank in range(count)]
    total = sum(raw)
    return [weight / total for weight in raw]


def allocate(total: int, weights: Sequence[float], minimum: int = 1) -> list[int]:
    """Split ``total`` by ``weights`` exactly (largest remainder), each part >= ``minimum``."""
    parts = len(weights)
    if total < minimum * parts:
        raise ValueError(f"cannot give {parts} parts at least {minimum} of {total}")
    spare = total - minimum * parts
    weight_sum = sum(weights)
    exact = [spare * weight / weight_sum for weight in weights]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(parts), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: spare - sum(counts)]:
        counts[i] += 1
    return [minimum + count for count in counts]


def moment_between(rng: random.Random, start: datetime, end: datetime) -> datetime:
    """A uniformly drawn instant in [start, end), millisecond precision like a BSON date."""
    span_ms = max(1, int((end - start) / timedelta(milliseconds=1)))
    return start + timedelta(milliseconds=rng.randrange(span_ms))


_MASK48 = (1 << 48) - 1


class IdMint:
    """Legacy ids (prefix + 12 lowercase hex) that are unique per prefix and reproducible.

    A counter goes through a bijection of 48-bit numbers keyed by the seed, so
    ids look random yet never collide; dangling references use the same mint,
    which guarantees that they match no document.
    """

    def __init__(self, seed: int) -> None:
        keyed = random.Random(f"{seed}:ids")
        self._multiplier = keyed.getrandbits(48) | 1
        self._offsets: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self._keyed = keyed
        self._object_ids = 0

    def __call__(self, prefix: str) -> str:
        count = self._counters.get(prefix, 0)
        self._counters[prefix] = count + 1
        offset = self._offsets.get(prefix)
        if offset is None:
            offset = self._offsets[prefix] = self._keyed.getrandbits(48)
        value = (count * self._multiplier + offset) & _MASK48
        # xorshifts and odd multipliers are bijections; together they hide the sequence
        value ^= value >> 21
        value = (value * 0x9E3779B97F4B) & _MASK48
        value ^= value >> 17
        return f"{prefix}{value:012x}"

    def object_id(self, created_at: datetime) -> ObjectId:
        """A reproducible ``_id`` whose embedded time is the document's creation time."""
        self._object_ids += 1
        seconds = int((created_at - datetime(1970, 1, 1)).total_seconds()) & 0xFFFFFFFF
        tail = (self._object_ids * self._multiplier) & ((1 << 64) - 1)
        return ObjectId(seconds.to_bytes(4, "big") + tail.to_bytes(8, "big"))
