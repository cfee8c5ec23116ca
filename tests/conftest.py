"""Fixtures for real services: a fresh PostgreSQL database per test session, Redis.

PostgreSQL and Redis are taken from the environment (localhost by default), so
anyone with containers can point the suite at them instead:
``TEST_PG_ADMIN_URL`` (a superuser connection used to create and drop the
throw-away databases) and ``TEST_REDIS_URL``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, Verbosity, settings

# Property tests run on a busy machine (CI shares its two cores with PostgreSQL and the
# other suites): slowness must never fail the build, only a counterexample may. The
# ``ci`` profile (the default) has no deadline, no too_slow health check, and derives
# its examples from each test's name (derandomized: the same examples on every run, so a
# failure reproduces as it is). ``HYPOTHESIS_PROFILE=explore`` draws new examples each
# run (random seed, printed with any failure) for hunting bugs locally.
settings.register_profile(
    "ci",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
    print_blob=True,
)
settings.register_profile(
    "explore",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=list(Phase),
    verbosity=Verbosity.normal,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The tests that run the whole stack for minutes (the demo's walk-through, the walk through
# every mix of modes) go to one worker, one after the other: side by side they would take
# both cores from each other and from the rest of the suite, and outlast their timeouts.
# (xdist's ``--dist loadgroup`` means to do this with a mark; under pytest 9 it sees none.)
WHOLE_STACK = frozenset({
    "tests/demo/test_demo_walk.py::test_the_walk_through_loses_no_write_and_ends_with_mongodb_retired",
    "tests/control/test_mode_combinations.py::test_each_step_into_new_and_back_keeps_the_legacy_contract",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The whole-stack tests first: their worker starts on them at once, and the other
    worker's share of the rest is done by the time they end."""
    items.sort(key=lambda item: item.nodeid not in WHOLE_STACK)  # stable: the rest as found


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "load":
        return None  # another --dist asked for by name: xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class WholeStackOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "whole-stack" if nodeid in WHOLE_STACK else nodeid

    return WholeStackOnOneWorker(config, log)


PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://root@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_scratch_database(prefix: str = "strangler_test") -> str:
    """Create an empty database and return its URL; drop it with :func:`drop_scratch_database`."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}"')
    return _with_database(PG_ADMIN_URL, name)


async def drop_scratch_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def empty_database_url() -> AsyncIterator[str]:
    """The URL of a brand-new, empty database, dropped after the test."""
    url = await create_scratch_database()
    try:
        yield url
    finally:
        await drop_scratch_database(url)


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    """A Redis client; tests namespace their keys with :func:`redis_prefix`."""
    client = aioredis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    yield f"test:{secrets.token_hex(4)}:"


async def _migrated_scratch_database(prefix: str) -> str:
    from schema.runner import upgrade

    url = await create_scratch_database(prefix)
    try:
        await upgrade(url, progress=lambda _line: None)
    except BaseException:
        await drop_scratch_database(url)
        raise
    return url


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def migrated_template_database() -> AsyncIterator[str]:
    """The name of a database migrated once per session; copied, never connected to."""
    url = await _migrated_scratch_database("strangler_test_template")
    try:
        yield urlsplit(url).path.lstrip("/")
    finally:
        await drop_scratch_database(url)


@pytest.fixture
async def migrated_database_url(migrated_template_database: str) -> AsyncIterator[str]:
    """A scratch database with every schema migration applied, dropped after the test.

    Copied from a session template (CREATE DATABASE ... TEMPLATE) rather than migrated
    for each test; the template itself went through ``schema.runner.upgrade``.
    """
    name = f"strangler_test_mig_{os.getpid()}_{secrets.token_hex(4)}"
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template_database}"')
    url = _with_database(PG_ADMIN_URL, name)
    try:
        yield url
    finally:
        await drop_scratch_database(url)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def shared_migrated_database_url() -> AsyncIterator[str]:
    """One migrated database for the whole session, for tests that only add rows of their
    own (fresh legacy ids and subscription ids) and never rely on a table being empty."""
    url = await _migrated_scratch_database("strangler_test_shared")
    try:
        yield url
    finally:
        await drop_scratch_database(url)


@dataclass(frozen=True)
class ScratchDatabases:
    """For tests that manage databases themselves (other scopes, other owners)."""

    admin_url: str
    create: Callable[[str], Awaitable[str]]
    drop: Callable[[str], Awaitable[None]]
    # An empty database named after the prefix, every schema migration applied.
    create_migrated: Callable[[str], Awaitable[str]]


@pytest.fixture(scope="session")
def scratch_databases() -> ScratchDatabases:
    return ScratchDatabases(
        PG_ADMIN_URL, create_scratch_database, drop_scratch_database, _migrated_scratch_database
    )


@pytest.fixture(scope="session")
def wire_mongod() -> Iterator[str]:
    """``strangler legacy mongod`` in this process (port 0), shared by the session:
    ``mongodb://127.0.0.1:PORT``. Tests name a database of their own (:func:`wire_mongo_url`)."""
    from legacy_emulator.wire import CommandEngine, WireServer

    server = WireServer(CommandEngine())
    server.run()
    try:
        yield f"mongodb://127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture
def wire_mongo_url(wire_mongod: str) -> str:
    """A fresh database on the session's wire-protocol test server, reached through PyMongo."""
    return f"{wire_mongod}/t{secrets.token_hex(6)}"
