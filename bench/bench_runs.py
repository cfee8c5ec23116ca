"""``make bench`` (job runs): a burst of runNow through the proxy with job_runs in ``new``,
a run worker killed with SIGKILL in the middle and another started; every run must reach
a final status exactly once.

Everything as deployed, each a process of its own (``strangler shadow-ci``'s start-up:
legacy mongod seeded with the small data set, a database backfilled from it, ``legacy
serve``), then ``proxy serve`` with job_runs in ``new`` and ``strangler runs work``. The
burst is sent with a bounded number of requests in flight; when a third of it is answered,
the first worker is killed (SIGKILL: nothing acknowledged, runs left half-way) and a second
one started, which takes over the dead one's messages after ``--claim-idle-ms``.

Printed: requests/s of the burst, runs/s from the first request until the last run is
final, and the checks: runs lost (not final at the end), runs finished twice (more than
one final log entry), dead-lettered. The baseline is legacy's own: runs simulated in the
API process, lost when that process dies (LEGACY.md section 4).

    python -m bench runs                        # or: make bench
    python -m bench.bench_runs --runs 2000 --in-flight 32
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import secrets
import tempfile
import time

import aiohttp
import asyncpg
import redis.asyncio as aioredis

from proxy.handlers.tree_store import VISIBLE_WORKFLOW
from strangler.config import load_settings
from strangler.demo_processes import remove_run_dir
from strangler.runs import DEAD_STREAM, RUN_STREAM
from strangler.shadow_ci import Sides, flag_table_with
from strangler.tokens import mint_token

REPO = pathlib.Path(__file__).resolve().parents[1]
DATABASE = "uzo_bench_runs"


async def _workflows(database_url: str) -> list[tuple[str, str, str]]:
    """(workflow_id, subscription_id, a user of it) of visible workflows."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT w.workflow_id, w.subscription_id, min(u.user_id) AS user_id "
            "FROM workflows w JOIN users u USING (subscription_id) "
            f"WHERE {VISIBLE_WORKFLOW} GROUP BY 1, 2 ORDER BY 1 LIMIT 40"
        )
    finally:
        await conn.close()
    return [(r["workflow_id"], r["subscription_id"], r["user_id"]) for r in rows]


async def _left(database_url: str, ids: list[str]) -> tuple[int, int]:
    """(runs not final, runs with more than one final log entry)."""
    conn = await asyncpg.connect(database_url)
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM job_runs WHERE job_run_id = ANY($1::text[]) "
            "AND status NOT IN ('completed', 'failed')",
            ids,
        )
        twice = await conn.fetchval(
            "SELECT count(*) FROM (SELECT job_run_id FROM job_runs, jsonb_array_elements(logs) e "
            "WHERE job_run_id = ANY($1::text[]) AND (e ->> 'message' LIKE 'Run completed%' "
            "OR e ->> 'message' LIKE 'Run failed%') GROUP BY 1 HAVING count(*) > 1) AS t",
            ids,
        )
    finally:
        await conn.close()
    return int(left), int(twice)


async def run(runs: int, in_flight: int, claim_idle_ms: int) -> None:
    settings = load_settings()
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="strangler-bench-runs-"))
    quiet: list[str] = []
    sides = Sides.plan(run_dir, DATABASE, "127.0.0.1", quiet.append)
    prefix = f"bench:{secrets.token_hex(4)}:"
    redis = aioredis.from_url(settings.redis_url)
    worker_args = ["--step-seconds", "0.01", "--claim-idle-ms", str(claim_idle_ms),
                   "--redis-prefix", prefix]  # fmt: skip
    try:
        await sides.start(quiet.append, legacy_in_memory=True)
        text = (REPO / "routing_rules.yaml").read_text("utf-8")
        url, _ = await sides.proxy("proxy", flag_table_with(text, ["job_runs"], "new"))
        flows = await _workflows(sides.database_url)
        tokens = {sub: mint_token(settings.jwt_secret, user, sub) for _, sub, user in flows}

        def ready(name: str) -> bool:
            log = sides.services.run_dir / f"{name}.log"
            return log.exists() and "run worker" in log.read_text("utf-8", errors="replace")

        first = await sides.services.start(
            "worker-a", ["runs", "work", "--consumer", "a", *worker_args], lambda: ready("worker-a")
        )
        ids: list[str] = []
        failures: dict[int, int] = {}
        killed_at = runs // 3
        started = time.perf_counter()
        gate = asyncio.Semaphore(in_flight)
        connector = aiohttp.TCPConnector(limit=in_flight)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one(n: int) -> None:
                flow, sub, _ = flows[n % len(flows)]
                async with gate:
                    async with session.post(
                        f"{url}/workflow/runNow", json={"workflow_id": flow},
                        headers={"authorization": f"Bearer {tokens[sub]}"},
                    ) as response:  # fmt: skip
                        body = await response.json()
                if response.status != 200:
                    failures[response.status] = failures.get(response.status, 0) + 1
                    return
                ids.append(body["data"]["job_run_id"])
                if len(ids) == killed_at:
                    first.process.kill()  # SIGKILL, mid-burst: its runs are left half-way

            await asyncio.gather(*(one(n) for n in range(runs)))
        sent = time.perf_counter() - started
        await first.process.wait()
        await sides.services.start(
            "worker-b", ["runs", "work", "--consumer", "b", *worker_args], lambda: ready("worker-b")
        )
        deadline = time.monotonic() + 600
        while True:
            left, twice = await _left(sides.database_url, ids)
            if left == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        total = time.perf_counter() - started
        dead = await redis.xlen(prefix + DEAD_STREAM)
        print(
            f"runNow burst through the proxy (job_runs in new), {in_flight} in flight: "
            f"{runs:,} requests in {sent:.1f} s ({runs / sent:,.0f} requests/s), "
            f"not answered 200: {sum(failures.values())} {failures or ''}"
        )
        print(
            f"worker a killed (SIGKILL) after {killed_at:,} answers, worker b started after the "
            f"burst (claims the dead one's messages after {claim_idle_ms} ms idle)"
        )
        print(
            f"every run final after {total:.1f} s: {len(ids) / total:,.0f} runs/s; lost "
            f"(not final) {left}, finished twice {twice}, dead-lettered {dead}"
        )
        print(
            "baseline, legacy: runs are simulated in the API process; a run in flight when it "
            "dies stays queued or running for ever (no queue, nothing to take it over)"
        )
    finally:
        await redis.delete(prefix + RUN_STREAM, prefix + DEAD_STREAM)
        await redis.aclose()
        await sides.services.stop()
        remove_run_dir(run_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_runs", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000, help="runNow requests (10000)")
    parser.add_argument("--in-flight", type=int, default=64, help="requests at once (64)")
    parser.add_argument("--claim-idle-ms", type=int, default=3000, help="worker b's (3000)")
    args = parser.parse_args(argv or [])
    asyncio.run(run(args.runs, args.in_flight, args.claim_idle_ms))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
