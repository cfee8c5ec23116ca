"""Backfill rows/s for Accounts, users and connectors at the 1y seed scale, beside
PostgreSQL's own COPY of the same rows from a CSV file (the physical limit).

The legacy documents are the 1y seed's own (the generator's people pass: 25 tenants,
2,000 users, 1,500 connectors, with production dirt at 5%) in the in-process store.
``strangler backfill all`` then runs as the CLI runs it (1,000 documents a batch: map,
seal secrets, COPY into staging, version-guarded upsert, checkpoint). The baseline
copies the resulting rows out to CSV files and times ``COPY table FROM`` each file
into empty tables: no mapping, no encryption, no guard, no checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import tempfile
import time
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from legacy_emulator.generator import SCALES, Dirt, IdMint, _people
from legacy_emulator.generator_plan import plan_tenants
from legacy_emulator.generator_scales import stream
from legacy_emulator.generator_tree import TenantContext
from migrators.backfill import backfill_entity
from migrators.crypto import SecretBox
from migrators.registry import default_registry
from schema.runner import upgrade
from strangler.config import ConnectorKeys
from strangler.mongo import open_database

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
KEYS = ConnectorKeys.parse(
    "bench:" + base64.b64encode(b"bench-key-of-thirty-two-bytes!!!").decode()
)


async def _seed_people(url: str) -> dict[str, int]:
    db = open_database(url)
    scale = SCALES["1y"]
    mint = IdMint(1)
    dirt = Dirt(0.05, stream(1, "dirt"), mint)
    tenants = [TenantContext(p) for p in plan_tenants(scale, stream(1, "plan"), mint, 0)]
    wanted = ("Accounts", "users", "connectors")
    batches: dict[str, list[dict[str, object]]] = {name: [] for name in wanted}
    for collection, document in _people(1, mint, dirt, tenants):
        if collection in batches:
            batches[collection].append(document)
    for name, documents in batches.items():
        await db[name].insert_many(documents)
    return {name: len(documents) for name, documents in batches.items()}


async def _run() -> None:
    name = f"bench_backfill_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    try:
        await upgrade(url, progress=lambda _line: None)
        mongo_url = f"memory://{name}"
        counts = await _seed_people(mongo_url)
        db = open_database(mongo_url)
        conn = await asyncpg.connect(url)
        ctx = SecretBox(KEYS).context()
        timings: dict[str, tuple[int, float, float]] = {}
        # the people specs; the workspace tree has its own bench (bench/bench_tree.py)
        specs = [default_registry().get(name) for name in ("subscriptions", "users", "connectors")]
        for spec in specs:
            summary = await backfill_entity(db, conn, spec, ctx, batch_size=1000)
            timings[spec.name] = (summary.result.written, summary.seconds, summary.write_seconds)
        copies: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as directory:
            tables = [spec.tables[0] for spec in specs]
            for table in tables:
                await conn.copy_from_table(table, output=f"{directory}/{table}.csv", format="csv")
            for _ in range(3):  # the best of three: the physical limit, not a cold cache
                await conn.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
                for table in tables:
                    started = time.perf_counter()
                    await conn.copy_to_table(table, source=f"{directory}/{table}.csv", format="csv")
                    spent = time.perf_counter() - started
                    copies[table] = min(copies.get(table, spent), spent)
        await conn.close()
        print(f"documents: {counts}")
        print(
            f"{'entity':<15}{'rows':>7}{'backfill rows/s':>17}{'writer rows/s':>15}"
            f"{'COPY rows/s':>13}"
        )
        sums = [0.0, 0.0, 0.0, 0.0]
        for spec in specs:
            rows, seconds, writing = timings[spec.name]
            copy_seconds = copies[spec.tables[0]]
            for i, value in enumerate((rows, seconds, writing, copy_seconds)):
                sums[i] += value
            print(
                f"{spec.name:<15}{rows:>7,}{rows / seconds:>17,.0f}{rows / writing:>15,.0f}"
                f"{rows / copy_seconds:>13,.0f}"
            )
        rows_all, seconds_all, writing_all, copy_all = sums
        print(
            f"{'all':<15}{int(rows_all):>7,}{rows_all / seconds_all:>17,.0f}"
            f"{rows_all / writing_all:>15,.0f}{rows_all / copy_all:>13,.0f}"
        )
        print(
            "backfill = end to end (reading the in-process mongomock store included); writer = "
            "map, seal, COPY to staging, guarded upsert, checkpoint; COPY = PostgreSQL loading "
            "the same rows from CSV into empty tables (best of 3)"
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()
