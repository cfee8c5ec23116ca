"""Backfill rows/s of two years of job runs and activity into their monthly partitions,
beside PostgreSQL's own COPY of the same rows (the physical limit), and MB/s of source
documents.

The documents are the generator's own (``legacy_emulator.generator_documents``: runs with
their logs, activity entries with their data, production dirt at 5%), their ``created_at``
spread over the 730 days before the seed's anchor, as in the 2y scale's history. The 2y
scale's daily volumes (50,000 runs and 100,000 entries a day) would make 110 million
documents, far past what the in-process store holds here: the bench takes
``--per-day`` of each per day instead (the rates are per row; the partitions, 25 months
of them created on demand by the writer, are the 2y history's). ``strangler backfill``
then runs as the CLI runs it (1,000 documents a batch). The baseline copies the resulting
rows out to CSV and times ``COPY`` of each file into the emptied partitioned table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import tempfile
import time
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import bson

from legacy_emulator import generator_documents as docs
from legacy_emulator.generator import Dirt, IdMint, _finish
from legacy_emulator.generator_scales import ANCHOR, stream
from migrators.backfill import backfill_entity
from migrators.registry import default_registry
from migrators.spec import MappingContext
from schema.runner import upgrade
from strangler.mongo import open_database

ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
DAYS = 730
TENANTS = [f"sub_hist{n:08d}" for n in range(60)]


async def _seed(url: str, per_day: int) -> dict[str, tuple[int, int]]:
    """(documents, BSON bytes) per collection."""
    db = open_database(url)
    mint = IdMint(2)
    dirt = Dirt(0.05, stream(2, "dirt"), mint)
    rng = random.Random(2)
    accounts = [
        docs.account(rng, tenant, f"Tenant {n}", ANCHOR - timedelta(days=DAYS + 30))
        for n, tenant in enumerate(TENANTS)
    ]
    await db["Accounts"].insert_many(accounts)
    made: dict[str, list[dict[str, object]]] = {"jobRun": [], "userActivity": []}
    targets = [("workflow", f"wf_{n:012x}", f"Flow {n}") for n in range(500)]
    for day in range(DAYS, 0, -1):
        start = ANCHOR - timedelta(days=day)
        for _ in range(per_day):
            tenant = rng.choice(TENANTS)
            created = start + timedelta(seconds=rng.randrange(86_400))
            ref = (f"wf_{rng.randrange(500):012x}", "job_000000000001", "ws_000000000001", tenant)
            run = docs.job_run(
                rng, mint("run_"), ref, f"usr_{rng.randrange(999):012x}", created, True
            )
            made["jobRun"].append(_finish(mint, dirt, "jobRun", run)[1])
            entry = docs.activity(rng, tenant, f"usr_{rng.randrange(999):012x}",
                                  rng.choice(targets), created)  # fmt: skip
            made["userActivity"].append(_finish(mint, dirt, "userActivity", entry)[1])
    sizes = {}
    for name, documents in made.items():
        sizes[name] = (len(documents), sum(len(bson.encode(d)) for d in documents))
        for start in range(0, len(documents), 10_000):
            await db[name].insert_many(documents[start : start + 10_000])
    return sizes


async def _run(per_day: int) -> None:
    name = f"bench_history_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    try:
        await upgrade(url, progress=lambda _line: None)
        mongo_url = f"memory://{name}"
        sizes = await _seed(mongo_url, per_day)
        db = open_database(mongo_url)
        conn = await asyncpg.connect(url)
        ctx = MappingContext()
        registry = default_registry()
        await backfill_entity(db, conn, registry.get("subscriptions"), ctx)
        specs = [registry.get("job_runs"), registry.get("activity")]
        timings = {}
        for spec in specs:
            summary = await backfill_entity(db, conn, spec, ctx, batch_size=1000)
            timings[spec.name] = (summary.result.written, summary.seconds, summary.write_seconds)
        partitions = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'job_runs'::regclass"
        )
        copies: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as directory:
            for spec in specs:
                table = spec.tables[0]
                path = f"{directory}/{table}.csv"
                columns = [r[0] for r in await conn.fetch(
                    "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", table)]  # fmt: skip
                await conn.copy_from_query(
                    f"SELECT {', '.join(columns)} FROM {table}", output=path, format="csv"
                )
                for _ in range(3):  # the best of three
                    await conn.execute(f"TRUNCATE {table}")
                    started = time.perf_counter()
                    await conn.copy_to_table(table, source=path, format="csv", columns=columns)
                    spent = time.perf_counter() - started
                    copies[table] = min(copies.get(table, spent), spent)
        await conn.close()
        print(
            f"{DAYS} days of history, {per_day} runs and {per_day} activity entries a day, "
            f"dirt 5%; job_runs now has {partitions} partitions (monthly, made on demand, "
            "and the default)"
        )
        print(f"{'entity':<10}{'rows':>9}{'MB':>7}{'backfill rows/s':>17}{'MB/s':>7}"
              f"{'writer rows/s':>15}{'COPY rows/s':>13}")  # fmt: skip
        for spec, collection in zip(specs, ("jobRun", "userActivity"), strict=True):
            rows, seconds, writing = timings[spec.name]
            _count, size = sizes[collection]
            print(
                f"{spec.name:<10}{rows:>9,}{size / 1e6:>7.1f}{rows / seconds:>17,.0f}"
                f"{size / 1e6 / seconds:>7.1f}{rows / writing:>15,.0f}"
                f"{rows / copies[spec.tables[0]]:>13,.0f}"
            )
        print(
            "backfill = end to end (reading the in-process mongomock store included), MB/s of "
            "the source documents' BSON; writer = map, COPY to staging, partitions made, "
            "guarded upsert, checkpoint; COPY = PostgreSQL loading the same rows from CSV into "
            "the emptied partitioned table (best of 3)"
        )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_history", description=__doc__.split("\n")[0])
    parser.add_argument("--per-day", type=int, default=100, help="runs and entries a day (100)")
    args = parser.parse_args(argv or [])
    asyncio.run(_run(args.per_day))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
