"""``strangler shadow-ci`` (``make shadow-ci``): the replay corpora against the legacy
emulator and the new side, each a process of its own, as a pull request's cut-over evidence.

The data set is the one the corpora name (``legacy serve --with-data small``, seed 1),
seeded into ``legacy mongod`` through PyMongo; ``backfill all`` carries it into a
database of this command's own (``uzo_shadow_ci`` on DATABASE_URL's server, dropped and
created afresh); ``proxy serve`` puts every entity the corpora exercise in ``new`` (its
answers come from PostgreSQL only); then ``shadow replay`` sends every case to the
emulator and to the proxy and gates on what it finds. No sync runs: an isolated tenant's
writes reach both sides through the replay alone, as the corpus format requires.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pathlib
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import yaml

from legacy_emulator.generator import seed_store
from shadow_compare.corpus import case_entity, load_corpora
from shadow_compare.endpoints import load_entity_endpoints
from strangler.config import load_settings, redact_url
from strangler.demo_processes import (
    ProcessFailed,
    Services,
    _answers,
    _reset_database,
    free_port,
    remove_run_dir,
)
from strangler.demo_stack import REPO, _with_database
from strangler.errors import DataError
from strangler.mongo import close_database, open_database

__all__ = ["Sides", "flag_table_with", "register", "run_shadow_ci"]

DATABASE = "uzo_shadow_ci"
SEED = 1  # the data set the shipped corpora's ids come from
Say = Callable[[str], None]


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg,unused-ignore]
    parser = subparsers.add_parser(
        "shadow-ci",
        help="replay the shadow_cases corpora against the emulator and the new side (CI)",
        description="Start legacy mongod seeded with the corpora's data set (small, seed 1), "
        "legacy serve, schema upgrade and backfill all into the database uzo_shadow_ci on "
        "DATABASE_URL's server (dropped and created afresh), and proxy serve with every "
        "entity the corpora exercise in new mode; then strangler shadow replay against both "
        "and its gates (observed regression rate 0). Exit code 0 when every gate passes, 1 "
        "when one fails, 2 when the services cannot start.",
    )
    parser.add_argument(
        "--cases", type=pathlib.Path, default=REPO / "shadow_cases", help="corpus directory"
    )
    parser.add_argument(
        "--rules",
        type=pathlib.Path,
        default=REPO / "shadow_rules.yaml",
        help="comparison rules (default shadow_rules.yaml)",
    )
    parser.add_argument(
        "--junit", type=pathlib.Path, help="also write the report as JUnit XML to this file"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the services listen on")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the services' logs even when it passes"
    )
    parser.set_defaults(handler=_shadow_ci)


def flag_table_with(text: str, entities: Sequence[str], mode: str, sample_rate: float = 0.0) -> str:
    """The flag table ``text`` with ``entities`` in ``mode`` (comparing ``sample_rate`` of
    their reads) and every other entity in legacy."""
    table = yaml.safe_load(text)
    for name, spec in table["entities"].items():
        spec["mode"] = mode if name in entities else "legacy"
        spec.pop("percent", None)
        spec["sample_rate"] = sample_rate if name in entities else 0.0
    return yaml.safe_dump(table, sort_keys=False)


def _shadow_ci(args: argparse.Namespace) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if not args.rules.is_file():
        raise DataError(f"--rules {args.rules}: no such file")
    return asyncio.run(run_shadow_ci(args.cases, args.rules, args.junit, args.host, args.keep_logs))


@dataclass
class Sides:
    """Both sides of one run, each a process: legacy mongod seeded with the corpora's data
    set, legacy serve on it, and a fresh database backfilled from it. ``services`` stops
    whatever was started, also after a failed start."""

    services: Services
    host: str
    mongo_url: str
    legacy_url: str
    database_url: str

    @classmethod
    def plan(cls, run_dir: pathlib.Path, database: str, host: str, say: Say) -> Sides:
        settings = load_settings()
        database_url = _with_database(settings.database_url, database)
        mongo_url = f"mongodb://{host}:{free_port(host)}/uzo"
        legacy_url = f"http://{host}:{free_port(host)}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MONGO_URL": mongo_url,
               "DATABASE_URL": database_url, "LEGACY_URL": legacy_url,
               "REDIS_URL": settings.redis_url}  # fmt: skip
        return cls(Services(run_dir, env, say), host, mongo_url, legacy_url, database_url)

    async def start(self, say: Say, legacy_in_memory: bool = False) -> None:
        """Start the legacy side and fill the new side's database (steps 1 to 3).

        ``legacy_in_memory``: ``legacy serve`` keeps its own in-process copy of the same data
        set (the generator is deterministic) instead of reading ``legacy mongod``, whose
        wire-protocol test server would weigh on every legacy answer (for benchmarks)."""
        host, services = self.host, self.services
        mongod_port = self.mongo_url.rsplit(":", 1)[1].split("/")[0]
        legacy_port = self.legacy_url.rsplit(":", 1)[1]
        await services.start("mongod", ["legacy", "mongod", "--host", host, "--port", mongod_port],
                             _answers(host, int(mongod_port)))  # fmt: skip
        db = open_database(self.mongo_url)
        try:
            summary = await seed_store(db, scale="small", seed=SEED)
        finally:
            await close_database(db)
        say(f"1. legacy mongod {self.mongo_url}: {summary.lines()[0]}")
        await _reset_database(self.database_url)
        await services.run("schema-upgrade", ["schema", "upgrade"])
        serve = ["legacy", "serve", "--host", host, "--port", legacy_port]
        if legacy_in_memory:
            await services.start("legacy", [*serve, "--with-data", "small"],
                                 _answers(host, int(legacy_port)),
                                 env={"MONGO_URL": "memory://legacy"})  # fmt: skip
        else:
            await services.start("legacy", serve, _answers(host, int(legacy_port)))
        say(f"2. legacy serve {self.legacy_url}; schema upgrade {redact_url(self.database_url)}")
        _, output = await services.run("backfill", ["backfill", "all"])
        say(f"3. backfill all: {_backfilled(output)}")

    async def proxy(self, name: str, table: str, *options: str, nice: int = 0) -> tuple[str, str]:
        """``proxy serve`` with flag table text ``table``: (its URL, its admin URL).

        ``nice``: the process's scheduling niceness (a benchmark's stand-in for a service on
        hardware of its own: the others' work comes first)."""
        path = self.services.run_dir / f"{name}.rules.yaml"
        path.write_text(table, "utf-8")
        port, admin = free_port(self.host), free_port(self.host)
        service = await self.services.start(
            name,
            ["proxy", "serve", "--host", self.host, "--port", str(port),
             "--admin-port", str(admin), "--rules", str(path), *options],
            _answers(self.host, port),
        )  # fmt: skip
        if nice:
            os.setpriority(os.PRIO_PROCESS, service.process.pid, nice)
        return f"http://{self.host}:{port}", f"http://{self.host}:{admin}"


async def run_shadow_ci(cases: pathlib.Path, rules: pathlib.Path, junit: pathlib.Path | None,
                        host: str = "127.0.0.1", keep_logs: bool = False,
                        say: Say = print, database: str = DATABASE) -> int:  # fmt: skip
    started = time.monotonic()
    flag_table = REPO / "routing_rules.yaml"
    endpoints = load_entity_endpoints(flag_table)
    corpora = load_corpora(cases, endpoints)  # a bad corpus stops it before anything starts
    entities = sorted({case_entity(c, endpoints) for corpus in corpora for c in corpus.cases})
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="strangler-shadow-ci-"))
    sides = Sides.plan(run_dir, database, host, say)
    services = sides.services
    result = 2
    say(f"shadow-ci: {sum(len(c.cases) for c in corpora)} cases in {len(corpora)} corpora "
        f"({', '.join(entities)}); services' logs in {run_dir}")  # fmt: skip
    try:
        await sides.start(say)
        legacy_url = sides.legacy_url
        table = flag_table_with(flag_table.read_text("utf-8"), entities, "new")
        proxy_url, _ = await sides.proxy("proxy", table)
        say(f"4. proxy serve {proxy_url}: {', '.join(entities)} in new (PostgreSQL only)")
        replay = ["shadow", "replay", "--cases", str(cases), "--legacy", legacy_url,
                  "--new", proxy_url, "--rules", str(rules),
                  *(["--junit", str(junit)] if junit is not None else [])]  # fmt: skip
        status, output = await services.run("replay", replay, check=False)
        say("5. strangler shadow replay (legacy emulator vs new side):")
        for line in output.splitlines():
            say(f"   {line}")
        dead = services.dead()
        for line in dead:
            say(f"   SERVICE DIED: {line}")
        result = 1 if status != 0 or dead else 0
        verdict = "passed" if result == 0 else "FAILED"
        say(f"shadow-ci {verdict} in {time.monotonic() - started:.0f} s")
        return result
    except ProcessFailed as exc:
        say(f"\nSTOPPED: {exc}\n   the services' logs are in {run_dir}")
        return 2
    finally:
        await services.stop()
        if result == 0 and not keep_logs:
            remove_run_dir(run_dir)


_COUNTS = re.compile(r"^  \S+ \(\S+\): read (\d+), written (\d+), .*quarantined (\d+)")


def _backfilled(output: str) -> str:
    """The backfill summary's totals (its per-collection lines are in backfill.log)."""
    found = [m for m in (_COUNTS.match(line) for line in output.splitlines()) if m]
    read, written, quarantined = (sum(int(m.group(n)) for m in found) for n in (1, 2, 3))
    return (f"{len(found)} collections, {read:,} documents read, {written:,} rows written, "
            f"{quarantined:,} quarantined")  # fmt: skip
