"""The legacy emulator and the workspace tree's new-side handlers side by side.

Both sides get the same requests at the same fixed clock. The ids a create mints are
drawn from one deterministic sequence per side (the same sequence on both), so the
answers can be compared whole, ids included, with the shadow comparator."""

from __future__ import annotations

import itertools
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from legacy_emulator.app import create_app
from legacy_emulator.routes import tree_nodes as legacy_nodes
from legacy_emulator.routes import workflows as legacy_workflows
from legacy_emulator.routes import workspaces as legacy_workspaces
from proxy.handlers import tree_nodes, tree_workflows, workspaces
from proxy.registry import HandlerDeps, HandlerRegistry
from shadow_compare.compare import compare_responses
from shadow_compare.model import CompareResult
from shadow_compare.rules import load_rules
from strangler.config import Settings
from strangler.contract import ID_PREFIXES
from strangler.exchange import RecordedRequest, RecordedResponse
from strangler.mongo import Database, open_database
from strangler.tokens import mint_token

SECRET = "tree-new-side-test-secret-0123456789abcdef"
# What both sides record in the audit entry: the client as the proxy saw it.
CLIENT_HEADERS = {"x-forwarded-for": "203.0.113.9", "user-agent": "tree-client/1.0"}
NOW = datetime(2026, 3, 1, 12, 30, 45, 123000, tzinfo=UTC)
RULES = load_rules(Path(__file__).resolve().parents[2] / "shadow_rules.yaml").for_entity(
    "workspaces"
)


@dataclass
class Tenant:
    subscription_id: str
    user_id: str

    @property
    def authorization(self) -> str:
        return "Bearer " + mint_token(SECRET, self.user_id, self.subscription_id)


def fresh_tenant() -> Tenant:
    return Tenant(f"sub_{secrets.token_hex(6)}", f"usr_{secrets.token_hex(6)}")


class IdSequence:
    """``new_id`` for one side: every kind counts up from a per-test random base, so both
    sides mint the same ids in the same order and tests never collide in the shared
    database."""

    def __init__(self, base: int) -> None:
        self._counters: dict[str, Iterator[int]] = {}
        self._base = base

    def __call__(self, kind: str) -> str:
        counter = self._counters.setdefault(kind, itertools.count(self._base))
        return f"{ID_PREFIXES[kind]}{next(counter):012x}"


def recorded(
    method: str, path: str, tenant: Tenant | None, params: dict[str, Any], body: Any
) -> RecordedRequest:
    headers: list[tuple[str, str]] = list(CLIENT_HEADERS.items())
    if tenant is not None:
        headers.append(("authorization", tenant.authorization))
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    return RecordedRequest(
        method=method,
        path=path,
        query_string=urlencode(params),
        headers=tuple(headers),
        body=raw,
        request_id=uuid.uuid4().hex,
    )


@dataclass
class Sides:
    legacy: httpx.AsyncClient
    registry: HandlerRegistry
    db: Database
    pool: asyncpg.Pool
    clock: list[float] = field(default_factory=lambda: [NOW.timestamp()])

    async def call_new(
        self, method: str, path: str, tenant: Tenant | None, params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> RecordedResponse:  # fmt: skip
        handler = self.registry.get(workspaces.ENTITY, f"{method} {path}")
        assert handler is not None, f"no handler for {method} {path}"
        return await handler(recorded(method, path, tenant, params or {}, body))

    async def call_legacy(
        self, method: str, path: str, tenant: Tenant | None, params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> RecordedResponse:  # fmt: skip
        headers = dict(CLIENT_HEADERS)
        if tenant is not None:
            headers["authorization"] = tenant.authorization
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

    async def compare(
        self, method: str, path: str, tenant: Tenant | None, params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> tuple[CompareResult, RecordedResponse, RecordedResponse]:  # fmt: skip
        legacy = await self.call_legacy(method, path, tenant, params, body)
        new = await self.call_new(method, path, tenant, params, body)
        request = recorded(method, path, tenant, params or {}, body)
        result = compare_responses(legacy, new, RULES, endpoint=f"{method} {path}", request=request)
        return result, legacy, new

    async def same(
        self, method: str, path: str, tenant: Tenant | None, params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Both sides answer alike (after the declared normalizations); the new answer."""
        result, legacy, new = await self.compare(method, path, tenant, params, body)
        assert result.equal, (
            f"{method} {path} {params or body}:\n legacy {legacy.status} {legacy.body!r}\n"
            f" new {new.status} {new.body!r}\n"
            + "\n".join(str(d.to_json()) for d in result.differences)
        )
        answer: dict[str, Any] = new.json()
        return answer

    def advance(self, seconds: float) -> None:
        self.clock[0] += seconds


def build_registry(pool: asyncpg.Pool, clock: list[float]) -> HandlerRegistry:
    registry = HandlerRegistry()
    deps = HandlerDeps(settings=Settings(jwt_secret=SECRET), pg_pool=pool, clock=lambda: clock[0])
    workspaces.register(registry, deps)
    registry.freeze()
    return registry


def _millis(clock: list[float]) -> Callable[[], datetime]:
    def now() -> datetime:
        moment = datetime.fromtimestamp(clock[0], UTC)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    return now


@pytest.fixture
def tenant() -> Tenant:
    return fresh_tenant()


@pytest.fixture
def other_tenant() -> Tenant:
    return fresh_tenant()


@pytest.fixture
async def pool(shared_migrated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(shared_migrated_database_url, min_size=1, max_size=8)
    try:
        yield created
    finally:
        await created.close()


@pytest.fixture
def same_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    base = secrets.randbits(40) << 4
    legacy_ids, new_ids = IdSequence(base), IdSequence(base)
    for module in (legacy_workspaces, legacy_nodes, legacy_workflows):
        monkeypatch.setattr(module, "new_id", legacy_ids)
    for module in (tree_nodes, tree_workflows):
        monkeypatch.setattr(module, "new_id", new_ids)


async def open_sides(pool: asyncpg.Pool) -> AsyncIterator[Sides]:
    db = open_database(f"memory://tree-new-side-{uuid.uuid4().hex}")
    app: Starlette = create_app(db, jwt_secret=SECRET, run_step_seconds=0.01, password_rounds=4)
    clock = [NOW.timestamp()]
    app.state.emulator.clock = _millis(clock)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://legacy") as client:
        yield Sides(client, build_registry(pool, clock), db, pool, clock)
    for name in await db.list_collection_names():
        await db[name].drop()


@pytest.fixture
async def sides(pool: asyncpg.Pool, same_ids: None) -> AsyncIterator[Sides]:
    async for built in open_sides(pool):
        yield built


@pytest.fixture
async def fresh_sides(migrated_database_url: str, same_ids: None) -> AsyncIterator[Sides]:
    """Sides on a database of their own (for tests that read the whole outbox)."""
    created = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=4)
    try:
        async for built in open_sides(created):
            yield built
    finally:
        await created.close()
