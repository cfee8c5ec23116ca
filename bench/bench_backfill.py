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
        timings: dict[str, tuple[int, float]] = {}
        for spec in default_registry():
            summary = await backfill_entity(db, conn, spec, ctx, batch_size=1000)
            timings[spec.name] = (summary.result.written, summary.seconds)
        copies: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as directory:
            tables = [spec.tables[0] for spec in default_registry()]
            for table in tables:
                await conn.copy_from_table(table, output=f"{directory}/{table}.csv", format="csv")
            await conn.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
            for table in tables:
                started = time.perf_counter()
                await conn.copy_to_table(table, source=f"{directory}/{table}.csv", format="csv")
                copies[table] = time.perf_counter() - started
        await conn.close()
        print(f"documents: {counts}")
        print(f"{'entity':<15}{'rows':>8}{'backfill rows/s':>18}{'COPY rows/s':>14}{'ratio':>8}")
        total_rows = total_backfill = total_copy = 0.0
        for spec in default_registry():
            rows, seconds = timings[spec.name]
            copy_seconds = copies[spec.tables[0]]
            total_rows += rows
            total_backfill += seconds
            total_copy += copy_seconds
            print(
                f"{spec.name:<15}{rows:>8,}{rows / seconds:>18,.0f}{rows / copy_seconds:>14,.0f}"
                f"{copy_seconds / seconds:>8.2f}"
            )
        print(
            f"{'all':<15}{int(total_rows):>8,}{total_rows / total_backfill:>18,.0f}"
            f"{total_rows / total_copy:>14,.0f}{total_copy / total_backfill:>8.2f}"
        )
        print("(ratio = backfill speed as a share of COPY's; backfill includes reading the "
              "in-process store, mapping, sealing, staging, guard and checkpoint)")  # fmt: skip
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()
