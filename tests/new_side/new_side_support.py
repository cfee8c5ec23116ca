"""Helpers and fixtures of the new-side tests (conftest.py re-exports the fixtures).

The legacy emulator and the PostgreSQL handlers side by side, fed the same data, called with
the same requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from legacy_emulator.app import create_app
from migrators.backfill import legacy_id_of
from migrators.crypto import SecretBox
from migrators.entities.connectors import SPECS
from migrators.registry import default_registry
from migrators.spec import Mapped, MappingContext
from migrators.touched import TouchedReader
from migrators.writer import SourceItem, write_batch
from proxy.handlers import activity as activity_handlers
from proxy.handlers import connectors as connector_handlers
from proxy.handlers import groups as group_handlers
from proxy.handlers import job_runs as run_handlers
from proxy.handlers import roles as role_handlers
from proxy.handlers import users as user_handlers
from proxy.registry import HandlerDeps, HandlerRegistry
from schema.keys import row_key
from strangler.config import ConnectorKeys, Settings
from strangler.exchange import RecordedRequest, RecordedResponse
from strangler.mongo import Database, open_database
from strangler.tokens import mint_token

CONNECTORS = next(spec for spec in SPECS if spec.name == "connectors")
SECRET = "new-side-test-secret-0123456789abcdef"
# The flag entities whose handlers the tests call.
ENTITIES = ("connectors", "users", "groups", "roles", "job_runs", "activity")
KEYS = ConnectorKeys.parse("k1:" + "a" * 43 + "=,k2:" + "b" * 43 + "=")
# A fixed "now" for both sides, at millisecond precision as BSON keeps it.
NOW = datetime(2026, 3, 1, 12, 30, 45, 123000, tzinfo=UTC)


def fresh_tenant() -> tuple[str, str]:
    return f"sub_{secrets.token_hex(6)}", f"usr_{secrets.token_hex(6)}"


@dataclass
class Tenant:
    subscription_id: str
    user_id: str

    @property
    def authorization(self) -> str:
        return "Bearer " + mint_token(SECRET, self.user_id, self.subscription_id)


@dataclass
class Sides:
    """One request, answered by legacy (the emulator) and by the new-side handlers."""

    legacy: httpx.AsyncClient
    registry: HandlerRegistry
    db: Database
    pool: asyncpg.Pool
    box: SecretBox
    clock: list[float] = field(default_factory=lambda: [NOW.timestamp()])

    def _recorded(
        self, method: str, path: str, tenant: Tenant | None, params: dict[str, Any], body: Any
    ) -> RecordedRequest:
        headers: list[tuple[str, str]] = [("x-forwarded-for", "203.0.113.9")]
        if tenant is not None:
            headers.append(("authorization", tenant.authorization))
        raw = (
            body
            if isinstance(body, bytes)
            else (b"" if body is None else json.dumps(body).encode())
        )
        return RecordedRequest(
            method=method,
            path=path,
            query_string=urlencode(params),
            headers=tuple(headers),
            body=raw,
            request_id=uuid.uuid4().hex,
        )

    async def call_new(
        self, method: str, path: str, tenant: Tenant | None, params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> RecordedResponse:  # fmt: skip
        route = f"{method} {path}"
        handler = next(
            (self.registry.get(e, route) for e in ENTITIES if self.registry.has(e, route)), None
        )
        assert handler is not None, f"no handler for {method} {path}"
        return await handler(self._recorded(method, path, tenant, params or {}, body))

    async def call_legacy(
        self, method: str, path: str, tenant: Tenant | None, params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> RecordedResponse:  # fmt: skip
        headers = {} if tenant is None else {"authorization": tenant.authorization}
        content = body if isinstance(body, bytes) else (None if body is None else json.dumps(body))
        response = await self.legacy.request(
            method, path, params=params or {}, content=content, headers=headers
        )
        return RecordedResponse(
            status=response.status_code,
            headers=tuple(response.headers.items()),
            body=response.content,
            side="legacy",
        )

    async def both(
        self, method: str, path: str, tenant: Tenant | None, params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[RecordedResponse, RecordedResponse]:  # fmt: skip
        legacy = await self.call_legacy(method, path, tenant, params, body)
        new = await self.call_new(method, path, tenant, params, body)
        return legacy, new

    async def seed(self, document: dict[str, Any]) -> None:
        """The same legacy connector document, in MongoDB and as its PostgreSQL row."""
        await self.db["connectors"].insert_one(dict(document))
        await insert_connector_row(self.pool, self.box, document)


async def insert_connector_row(pool: asyncpg.Pool, box: SecretBox, doc: dict[str, Any]) -> None:
    """A legacy connector document stored as backfill stores it: through the connectors
    mapping (secrets sealed, dirty values kept as found), as the sync role."""
    mapped = CONNECTORS.map_document(dict(doc), MappingContext(seal=box.seal, open=box.open))
    assert isinstance(mapped, Mapped), mapped
    row = mapped.rows["connectors"][0]
    columns = list(row)
    values = [
        json.dumps(row[c]) if c in ("connection_detail", "extra") else row[c] for c in columns
    ]
    placeholders = ", ".join(
        f"${i}::jsonb" if c in ("connection_detail", "extra") else f"${i}"
        for i, c in enumerate(columns, 1)
    )
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE strangler_sync")
        await conn.execute(
            "INSERT INTO subscriptions (id, subscription_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING",
            row_key("subscription", doc["subscription_id"]),
            doc["subscription_id"],
        )
        await conn.execute(
            f"INSERT INTO connectors ({', '.join(columns)}) VALUES ({placeholders})", *values
        )


def connector_document(
    tenant: Tenant, name: str, *, kind: str = "postgres", created_at: datetime = NOW,
    password: str | None = "s3cr3t-Pa55", deleted: bool = False, host: str = "db.example",
) -> dict[str, Any]:  # fmt: skip
    detail: dict[str, Any] = {"host": host, "port": 5432, "database": "sales", "username": "svc"}
    if password is not None:
        detail["password"] = password
    return {
        "connector_id": f"cn_{secrets.token_hex(6)}",
        "subscription_id": tenant.subscription_id,
        "connector_name": name,
        "connector_type": kind,
        "description": f"{name} connection",
        "connection_detail": detail,
        "is_active": True,
        "test_status": "untested",
        "last_tested_at": None,
        "created_by": tenant.user_id,
        "created_at": created_at,
        "updated_at": created_at,
        "d_flag": deleted,
    }


HASH = "$2b$04$" + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0"


async def seed_documents(sides: Sides, name: str, documents: list[dict[str, Any]]) -> None:
    """The same legacy documents in MongoDB and in PostgreSQL (through the batch writer)."""
    spec = default_registry().get(name)
    await sides.db[spec.collection].insert_many([dict(d) for d in documents])
    version = int(time.time() * 1000)
    items = [SourceItem(legacy_id_of(spec, d), dict(d), version) for d in documents]
    async with sides.pool.acquire() as conn:
        if name != "subscriptions":
            await write_batch(
                conn, default_registry().get("subscriptions"),
                [SourceItem(d["subscription_id"], {"subscription_id": d["subscription_id"]},
                            version) for d in documents],
                ctx=MappingContext(),
            )  # fmt: skip
        result = await write_batch(conn, spec, items, ctx=MappingContext())
    assert not result.quarantined, result


def user_doc(tenant: Tenant, name: str, created_at=NOW, **fields: Any) -> dict[str, Any]:
    return {
        "UserId": f"usr_{secrets.token_hex(6)}",
        "subscription_id": tenant.subscription_id,
        "email": f"{name}@example.com",
        "username": name,
        "full_name": name.title(),
        "password": HASH,
        "photo_url": None,
        "user_utc_offset": "+05:30",
        "is_active": True,
        "is_email_verified": False,
        "last_login_at": None,
        "created_at": created_at,
        "updated_at": created_at,
        **fields,
    }


@pytest.fixture
def tenant() -> Tenant:
    return Tenant(*fresh_tenant())


@pytest.fixture
def other_tenant() -> Tenant:
    return Tenant(*fresh_tenant())


@pytest.fixture
async def pool(shared_migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(shared_migrated_database_url, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()


def build_registry(pool: asyncpg.Pool, clock: list[float]) -> HandlerRegistry:
    registry = HandlerRegistry()
    deps = HandlerDeps(
        settings=Settings(jwt_secret=SECRET, connector_keys=KEYS, password_rounds=4),
        pg_pool=pool,
        clock=lambda: clock[0],
    )
    for module in (connector_handlers, user_handlers, group_handlers, role_handlers,
                   run_handlers, activity_handlers):  # fmt: skip
        module.register(registry, deps)
    registry.freeze()
    return registry


@pytest.fixture
async def fresh_pool(migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a database of its own, for tests that count the whole outbox."""
    created = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=4)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
async def sides(pool: asyncpg.Pool) -> AsyncIterator[Sides]:
    async for built in _sides(pool):
        yield built


@pytest.fixture
async def fresh_sides(fresh_pool: asyncpg.Pool) -> AsyncIterator[Sides]:
    async for built in _sides(fresh_pool):
        yield built


async def _sides(pool: asyncpg.Pool) -> AsyncIterator[Sides]:
    db = open_database(f"memory://new-side-{uuid.uuid4().hex}")
    app: Starlette = create_app(db, jwt_secret=SECRET, run_step_seconds=0.01, password_rounds=4)
    clock = [NOW.timestamp()]
    app.state.emulator.clock = lambda: datetime.fromtimestamp(clock[0], UTC).replace(
        microsecond=datetime.fromtimestamp(clock[0], UTC).microsecond // 1000 * 1000
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://legacy") as client:
        yield Sides(client, build_registry(pool, clock), db, pool, SecretBox(KEYS), clock)
    for name in await db.list_collection_names():
        await db[name].drop()


class ShortBlockReader(TouchedReader):
    """PollingFeed asks for block_ms=0 right after a sweep round, meaning "do not wait"; to
    Redis, BLOCK 0 means "wait forever". Until the feed passes None there, wait 1 ms."""

    async def read(self, count: int, block_ms: int) -> Any:
        return await super().read(count, block_ms or 1)


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns the signals


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve an ASGI app on a free loopback port of this event loop; yields its URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    server = _QuietServer(
        uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()
