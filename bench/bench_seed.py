"""Seeding speed and memory: the 6mo and 1y scales into a fresh in-process store.

Baseline (the target docs/seed_data.md sets): 1y with its default days seeds in
under 3 minutes and well inside this machine's 24 GB. Each scale runs in its
own process, so that its peak RSS is its own.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from typing import Any

SCALES_TO_RUN = ("6mo", "1y")
TARGET_SECONDS = {"6mo": 60.0, "1y": 180.0}


def _seed_in_this_process(scale: str) -> dict[str, Any]:
    from legacy_emulator.generator import seed_store
    from strangler.mongo import open_database

    # Time between two progress reports goes to the collection whose batch was
    # just written: building and writing that batch is what the time was spent on.
    spent: dict[str, float] = {}
    last = time.perf_counter()

    def progress(collection: str, done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        spent[collection] = spent.get(collection, 0.0) + now - last
        last = now

    async def run() -> Any:
        return await seed_store(
            open_database(f"memory://bench-{scale}"), scale=scale, progress=progress
        )

    summary = asyncio.run(run())
    return {
        "counts": summary.counts,
        "spent": spent,
        "days": summary.days,
        "elapsed": summary.elapsed_seconds,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    context = multiprocessing.get_context("spawn")
    for scale in SCALES_TO_RUN:
        with context.Pool(1) as pool:
            figures = pool.apply(_seed_in_this_process, (scale,))
        total = sum(figures["counts"].values())
        print(f"scale {scale} ({figures['days']} days of runs and activity):")
        print(f"  {'collection':<18} {'documents':>10} {'seconds':>8} {'docs/s':>9}")
        for name, count in figures["counts"].items():
            seconds = figures["spent"].get(name, 0.0)
            rate = count / seconds if seconds else 0.0
            print(f"  {name:<18} {count:>10,} {seconds:>8.1f} {rate:>9,.0f}")
        target = TARGET_SECONDS[scale]
        verdict = "within" if figures["elapsed"] <= target else "OVER"
        print(
            f"  total {total:,} documents in {figures['elapsed']:.1f} s "
            f"({total / figures['elapsed']:,.0f}/s), peak RSS {figures['peak_mb']:,.0f} MB; "
            f"baseline: under {target:.0f} s -> {verdict}"
        )


if __name__ == "__main__":
    main()
