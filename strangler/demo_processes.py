"""``strangler demo --processes``: the walk-through with every service a process of its own,
started with the commands and settings ``deploy/`` runs them with.

Processes (each ``strangler ...`` with the environment of ``deploy/env.example``):
``legacy mongod`` (the wire-protocol test server standing in for MongoDB), ``schema
upgrade``, ``legacy serve``, ``backfill all``, ``sync all --feed change-stream``,
``reverse-sync all`` and ``proxy serve``; the walk runs ``flags set`` as an operator would,
one command per step, with ``--proxy-admin``. This process only seeds the legacy data
(through PyMongo, like any client of MongoDB), drives client traffic through the proxy, and
makes the closing checks: every acknowledged write in both stores, verify clean.

Each service's output goes to ``<run dir>/<name>.log``; a service that dies is reported
with the end of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from legacy_emulator.generator import SeedSummary, seed_store
from migrators.crypto import SecretBox
from schema.connect import connect, database_name
from strangler.config import Settings, redact_url
from strangler.demo_check import ledger_differences, mongo_states, postgres_states, verify_all
from strangler.demo_stack import REPO, _sampled_rules, _with_database, demo_database_url
from strangler.demo_traffic import Tenant, Traffic, tenant_of
from strangler.errors import StranglerError
from strangler.mongo import Database, close_database, open_database

__all__ = ["ProcessFailed", "Services", "remove_run_dir", "run_processes"]

Say = Callable[[str], None]
# The walk's steps, as an operator runs them (the in-process demo's, for one entity).
STEPS: tuple[tuple[str, str | None], ...] = (
    ("shadow", None),
    ("canary", "50"),
    ("new", None),
    ("legacy", None),
)
WALKED = "connectors"


class ProcessFailed(StranglerError):
    """A service died, did not come up, or a one-shot command failed."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Service:
    name: str
    argv: list[str]
    log: pathlib.Path
    process: asyncio.subprocess.Process

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Services:
    """The services of one run, each a ``strangler`` process; stopped in reverse order."""

    run_dir: pathlib.Path
    env: dict[str, str]
    say: Say
    started: list[Service] = field(default_factory=list)

    def _argv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "strangler.cli", *args]

    async def start(self, name: str, args: Sequence[str], ready: Callable[[], bool],
                    env: dict[str, str] | None = None) -> Service:  # fmt: skip
        """Start a service (``env``: settings that differ from the run's) and wait for it."""
        log = self.run_dir / f"{name}.log"
        out = log.open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv(args),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**self.env, **(env or {})},
            )
        finally:
            out.close()
        service = Service(name, list(args), log, process)
        self.started.append(service)
        deadline = time.monotonic() + 120
        while not ready():
            if process.returncode is not None:
                raise ProcessFailed(f"{name} exited with {process.returncode}:\n{service.tail()}")
            if time.monotonic() > deadline:
                raise ProcessFailed(f"{name} did not come up in 120 s:\n{service.tail()}")
            await asyncio.sleep(0.1)
        return service

    async def run(self, name: str, args: Sequence[str], *, check: bool = True) -> tuple[int, str]:
        """A one-shot command: (exit status, output)."""
        process = await asyncio.create_subprocess_exec(
            *self._argv(args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
        )
        output, _ = await process.communicate()
        text = output.decode(errors="replace")
        (self.run_dir / f"{name}.log").write_text(text, encoding="utf-8")
        if check and process.returncode != 0:
            raise ProcessFailed(f"strangler {' '.join(args)} exited {process.returncode}:\n{text}")
        return process.returncode or 0, text

    def dead(self) -> list[str]:
        return [
            f"{s.name} exited with {s.process.returncode}:\n{s.tail()}"
            for s in self.started
            if s.process.returncode is not None
        ]

    async def stop(self) -> None:
        for service in reversed(self.started):
            if service.process.returncode is None:
                service.process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(service.process.wait(), 30)
                except TimeoutError:
                    service.process.kill()
                    await service.process.wait()
        self.started.clear()


def remove_run_dir(run_dir: pathlib.Path) -> None:
    """Delete a run's directory of service logs (a run that passed needs none of them)."""
    with contextlib.suppress(OSError):
        for log in run_dir.iterdir():
            log.unlink()
        run_dir.rmdir()


def _answers(host: str, port: int) -> Callable[[], bool]:
    def probe() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((host, port)) == 0

    return probe


def _log_says(path: pathlib.Path, text: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return text in path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False

    return probe


async def _reset_database(database_url: str) -> None:
    admin = await connect(_with_database(database_url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database_name(database_url)}" WITH (FORCE)')
    finally:
        await admin.close()


async def _tenants(db: Database, summary: SeedSummary, secret: str) -> list[Tenant]:
    tenants = []
    for subscription_id, user_id in summary.tenants:
        live = db["workspace"].find(
            {"subscription_id": subscription_id, "d_flag": {"$in": [False, None, "false"]}}
        )
        workspaces = [doc["workspace_id"] async for doc in live][:1]
        if workspaces:
            tenants.append(tenant_of(secret, subscription_id, user_id, workspaces))
    return tenants


@dataclass
class ProcessOptions:
    host: str = "127.0.0.1"
    seed: int = 1
    quick: bool = False
    reset_named: bool = False
    run_dir: pathlib.Path | None = None
    evidence_wait: float = 90.0  # at most, per step, for its gates to pass under traffic
    feed: str = "polling"  # as deploy/systemd/strangler-sync@.service runs it


async def _walk(services: Services, traffic: Traffic, rules: pathlib.Path, admin_url: str,
                options: ProcessOptions, say: Say) -> None:  # fmt: skip
    dwell = 3.0 if options.quick else 6.0
    traffic.focus = WALKED
    for number, (mode, percent) in enumerate(STEPS, start=1):
        await asyncio.sleep(dwell)  # traffic at the previous step: evidence for the gates
        argv = ["flags", "set", WALKED, mode, *([percent] if percent else []),
                "--rules", str(rules), "--proxy-admin", admin_url,
                "--max-regression-rate", "0.05", "--who", "demo",
                "--reason", "demo --processes walk"]  # fmt: skip
        shown = " ".join(argv[: 4 if not percent else 5])
        deadline = time.monotonic() + options.evidence_wait
        attempt = 0
        while True:
            attempt += 1
            status, output = await services.run(f"flags-{number}-{attempt}", argv, check=False)
            if status == 0:
                break
            if services.dead() or time.monotonic() > deadline:
                raise ProcessFailed(f"strangler {shown} refused:\n{output}")
            await asyncio.sleep(2.0)  # the gates want more evidence: keep the traffic going
        said = [line for line in output.splitlines() if line.strip()][-1:]
        say(f"   step {number}: strangler {shown} ({attempt} attempt(s)): "
            f"{said[0].strip() if said else 'done'}")  # fmt: skip


async def _drained(pool: asyncpg.Pool, db: Database, settings: Settings, deadline: float
                   ) -> list[str]:  # fmt: skip
    from migrators.registry import default_registry
    from migrators.reverse import pending_count

    context = SecretBox(settings.connector_keys).context()
    while True:
        async with pool.acquire() as conn:
            waiting = sum([await pending_count(conn, s.name) for s in default_registry()])
            if waiting == 0:
                reports = await verify_all(db, conn, context)
                if all(r.clean for r in reports) or time.monotonic() > deadline:
                    return [line for r in reports for line in r.lines()]
        if time.monotonic() > deadline:
            return [f"still in flight after the wait: {waiting} outbox rows"]
        await asyncio.sleep(0.5)


async def run_processes(settings: Settings, options: ProcessOptions, say: Say = print) -> int:
    """The walk-through as separate processes; 0 when no write was lost and verify is clean."""
    started = time.monotonic()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request buries the walk
    database_url, note = demo_database_url(settings, options.reset_named)
    own_dir = options.run_dir is None
    run_dir = options.run_dir or pathlib.Path(tempfile.mkdtemp(prefix="strangler-demo-"))
    host = options.host
    ports = {name: free_port(host) for name in ("mongod", "legacy", "proxy", "admin")}
    mongo_url = f"mongodb://{host}:{ports['mongod']}/uzo"
    legacy_url = f"http://{host}:{ports['legacy']}"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "MONGO_URL": mongo_url,
        "DATABASE_URL": database_url,
        "LEGACY_URL": legacy_url,
        "REDIS_URL": settings.redis_url,
    }
    services = Services(run_dir, env, say)
    traffic: Traffic | None = None
    db: Database | None = None
    pool: asyncpg.Pool | None = None
    result = 1
    say(f"Every service a process of its own, as deploy/ runs them; logs in {run_dir}")
    try:
        await services.start("mongod", ["legacy", "mongod", "--host", host, "--port",
                                        str(ports["mongod"])],
                             _answers(host, ports["mongod"]))  # fmt: skip
        say(f"1. strangler legacy mongod (the wire-protocol test server): {mongo_url}")
        db = open_database(mongo_url)
        summary = await seed_store(db, scale="small", seed=options.seed)
        say(f"   seeded through PyMongo: {summary.lines()[0]}")
        await _reset_database(database_url)
        await services.run("schema-upgrade", ["schema", "upgrade"])
        say(f"2. strangler schema upgrade: {redact_url(database_url)} ({note})")
        await services.start("legacy", ["legacy", "serve", "--host", host, "--port",
                                        str(ports["legacy"])],
                             _answers(host, ports["legacy"]))  # fmt: skip
        say(f"3. strangler legacy serve: {legacy_url} (MONGO_URL={mongo_url})")
        await services.start("sync", ["sync", "all", "--feed", options.feed],
                             lambda: True)  # fmt: skip
        _, output = await services.run("backfill", ["backfill", "all"])
        say(f"4. strangler sync all --feed {options.feed} (running), then strangler backfill all:")
        for line in output.splitlines():
            if line.startswith("  ") and "(" in line and "read" in line:
                say(f"   {line.strip()}")
        rules = run_dir / "routing_rules.yaml"
        rules.write_text(_sampled_rules((REPO / "routing_rules.yaml").read_text("utf-8")), "utf-8")
        await services.start(
            "proxy",
            ["proxy", "serve", "--host", host, "--port", str(ports["proxy"]), "--admin-port",
             str(ports["admin"]), "--rules", str(rules), "--shadow-rules",
             str(REPO / "shadow_rules.yaml")],
            _answers(host, ports["proxy"]),
        )  # fmt: skip
        proxy_url = f"http://{host}:{ports['proxy']}"
        admin_url = f"http://{host}:{ports['admin']}"
        say(f"5. strangler proxy serve: {proxy_url} (admin {admin_url}), rules {rules}")
        await services.start("reverse-sync", ["reverse-sync", "all"], lambda: True)
        say("6. strangler reverse-sync all (running)")
        tenants = await _tenants(db, summary, settings.jwt_secret)
        traffic = Traffic(proxy_url, tenants)
        traffic.start()
        say(f"7. client traffic through the proxy: {len(tenants)} tenants")
        say(f"8. {WALKED}: legacy -> shadow -> canary 50 -> new -> legacy, with 'strangler "
            "flags set' (gates evaluated, never forced; --max-regression-rate 0.05)")  # fmt: skip
        await _walk(services, traffic, rules, admin_url, options, say)
        await asyncio.sleep(3.0 if options.quick else 6.0)  # traffic back on legacy
        say("9. closing checks")
        await traffic.stop()
        stopped, traffic = traffic, None
        say(f"   traffic stopped: {stopped.counters.line()}")
        for sample in stopped.counters.unexpected_samples:
            say(f"   unexpected answer: {sample}")
        dead = services.dead()
        for line in dead:
            say(f"   SERVICE DIED: {line}")
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        lines = await _drained(pool, db, settings, time.monotonic() + 60)
        for line in lines:
            say(f"   {line}")
        clean = all(": clean;" in line for line in lines if not line.startswith("  "))
        clean = clean and not any(line.startswith("still in flight") for line in lines)
        async with pool.acquire() as conn:
            stores = {
                "MongoDB": await mongo_states(db, stopped.ledger),
                "PostgreSQL": await postgres_states(conn, stopped.ledger),
            }
        lost = ledger_differences(stopped.ledger, stores)
        for line in lost[:10]:
            say(f"   LOST {line}")
        say(f"   verify: {'clean' if clean else 'NOT clean'}")
        say(f"   client writes acknowledged: {stopped.ledger.acknowledged}, lost: {len(lost)}")
        say(f"   (walk-through took {time.monotonic() - started:.0f} s)")
        result = 0 if clean and not lost and not dead else 1
        return result
    except ProcessFailed as exc:
        say(f"\nSTOPPED: {exc}")
        say(f"   the services' logs are in {run_dir}")
        return 1
    finally:
        if traffic is not None:
            await traffic.stop()
        if pool is not None:
            await pool.close()
        if db is not None:
            await close_database(db)
        await services.stop()
        if own_dir and result == 0:  # a failed run keeps its services' logs
            remove_run_dir(run_dir)
