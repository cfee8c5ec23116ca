"""``make bench`` (live updates): 1,000 WebSocket subscribers over two proxy instances, each
hearing every message of its workflow or tenant and none of another's; publish-to-delivery
latency.

Everything as deployed (``strangler shadow-ci``'s start-up, then two ``proxy serve`` with
job_runs and activity in ``new``). Subscribers: 70% ``/ws/runNow/{workflow_id}`` and 30%
``/ws/activity`` over 10 tenants of 10 workflows each, alternately on either proxy. Then
messages are published on Redis as the run worker and the activity relay publish them, at
a steady rate, each stamped with its publish time; every subscriber checks that it got
exactly the messages of its own channel.

The baseline is legacy's: its hub lives in one process's memory, so a subscriber on a
second instance hears nothing that the first one publishes (LEGACY.md section 4).

    python -m bench live                        # or: make bench
    python -m bench.bench_live --subscribers 200 --messages 500
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import secrets
import statistics
import tempfile
import time
from collections import Counter
from typing import Any

import redis.asyncio as aioredis
import websockets

from strangler.config import load_settings
from strangler.demo_processes import remove_run_dir
from strangler.runs import activity_channel, run_channel
from strangler.shadow_ci import Sides, flag_table_with
from strangler.tokens import mint_token

REPO = pathlib.Path(__file__).resolve().parents[1]
DATABASE = "uzo_bench_live"
TENANTS = [f"sub_bench{n:07d}" for n in range(10)]
WORKFLOWS = {t: [f"wf_{t[-4:]}{n:04d}" for n in range(10)] for t in TENANTS}


class Subscriber:
    def __init__(self, url: str, channel: str) -> None:
        self.url, self.channel = url, channel
        self.got: list[int] = []
        self.latencies: list[float] = []
        self.ws: Any = None
        self.task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, max_queue=None)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                now = time.time()
                message = json.loads(text)
                self.got.append(int(message["seq"]))
                self.latencies.append(now - float(message["t"]))
        except websockets.ConnectionClosed:
            return


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(subscribers: int, messages: int, rate: float) -> None:
    settings = load_settings()
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="strangler-bench-live-"))
    quiet: list[str] = []
    sides = Sides.plan(run_dir, DATABASE, "127.0.0.1", quiet.append)
    prefix = f"bench:{secrets.token_hex(4)}:"
    redis = aioredis.from_url(settings.redis_url)
    subs: list[Subscriber] = []
    try:
        await sides.start(quiet.append, legacy_in_memory=True)
        text = (REPO / "routing_rules.yaml").read_text("utf-8")
        table = flag_table_with(text, ["job_runs", "activity"], "new")
        proxies = [
            (await sides.proxy(f"proxy-{n}", table, "--redis-prefix", prefix))[0] for n in range(2)
        ]
        rng = random.Random(7)
        for n in range(subscribers):
            tenant = rng.choice(TENANTS)
            token = mint_token(settings.jwt_secret, f"usr_bench{n:07d}", tenant)
            base = proxies[n % 2].replace("http://", "ws://")
            if rng.random() < 0.7:
                flow = rng.choice(WORKFLOWS[tenant])
                channel = run_channel(prefix, tenant, flow)
                subs.append(Subscriber(f"{base}/ws/runNow/{flow}?token={token}", channel))
            else:
                channel = activity_channel(prefix, tenant)
                subs.append(Subscriber(f"{base}/ws/activity?token={token}", channel))
        opened = time.perf_counter()
        for start in range(0, len(subs), 100):
            await asyncio.gather(*(s.open() for s in subs[start : start + 100]))
        connect_seconds = time.perf_counter() - opened
        channels = sorted({s.channel for s in subs})
        expected: dict[str, list[int]] = {c: [] for c in channels}
        pause = 1.0 / rate
        started = time.perf_counter()
        for seq in range(messages):
            channel = channels[seq % len(channels)]
            expected[channel].append(seq)
            body = {"seq": seq, "t": time.time(), "status": "running"}
            await redis.publish(channel, json.dumps(body))
            await asyncio.sleep(max(0.0, started + (seq + 1) * pause - time.perf_counter()))
        await asyncio.sleep(2.0)  # the last deliveries
        latencies = [x for s in subs for x in s.latencies]
        wrong = sum(1 for s in subs for seq in s.got if seq not in set(expected[s.channel]))
        missing = sum(len(set(expected[s.channel]) - set(s.got)) for s in subs)
        twice = sum(sum(c - 1 for c in Counter(s.got).values() if c > 1) for s in subs)
        deliveries = sum(len(expected[s.channel]) for s in subs)
        print(
            f"{len(subs):,} subscribers ({sum('/ws/runNow/' in s.url for s in subs)} runNow, "
            f"{sum('/ws/activity' in s.url for s in subs)} activity) over 2 proxies, "
            f"{len(channels)} channels; connected in {connect_seconds:.1f} s"
        )
        print(
            f"{messages:,} messages published at {rate:g}/s: {len(latencies):,} of "
            f"{deliveries:,} deliveries made; missing {missing}, another's {wrong}, twice {twice}"
        )
        if latencies:
            print(
                f"publish -> delivery: p50 {_pct(latencies, 0.5):.1f} ms, p99 "
                f"{_pct(latencies, 0.99):.1f} ms, max {max(latencies) * 1000:.1f} ms "
                f"(mean {statistics.fmean(latencies) * 1000:.1f} ms)"
            )
        print(
            "baseline, legacy: one process's in-memory hub; a subscriber on a second instance "
            "hears none of what the first publishes"
        )
    finally:
        for sub in subs:
            if sub.ws is not None:
                await sub.ws.close()
            if sub.task is not None:
                sub.task.cancel()
        await redis.aclose()
        await sides.services.stop()
        remove_run_dir(run_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_live", description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000, help="WebSockets (1000)")
    parser.add_argument("--messages", type=int, default=2000, help="published (2000)")
    parser.add_argument("--rate", type=float, default=200.0, help="messages/s (200)")
    args = parser.parse_args(argv or [])
    asyncio.run(run(args.subscribers, args.messages, args.rate))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
