"""Fixtures for the emulator's API tests: a fresh in-process store per test, two tenants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from legacy_emulator.app import create_app
from strangler.mongo import Database, open_database
from strangler.tokens import mint_token

SECRET = "legacy-emulator-test-secret-0123456789"
# Fast enough that a run's whole life takes a few hundredths of a second.
RUN_STEP_SECONDS = 0.01


@dataclass(frozen=True)
class Tenant:
    subscription_id: str
    user_id: str

    @property
    def token(self) -> str:
        return mint_token(SECRET, self.user_id, self.subscription_id)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


TENANT_A = Tenant("sub_aaaaaaaaaaa1", "usr_aaaaaaaaaaa1")
TENANT_B = Tenant("sub_bbbbbbbbbbb2", "usr_bbbbbbbbbbb2")


class Api:
    """A client acting as one tenant; ``as_`` switches tenant."""

    def __init__(self, client: httpx.AsyncClient, tenant: Tenant) -> None:
        self.client = client
        self.tenant = tenant

    def as_(self, tenant: Tenant) -> Api:
        return Api(self.client, tenant)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.tenant.headers)

    async def post(self, path: str, body: Any = None, **fields: Any) -> httpx.Response:
        payload = fields if body is None else body
        return await self.client.post(path, json=payload, headers=self.tenant.headers)

    async def data(self, method: str, path: str, expected: int = 200, **fields: Any) -> Any:
        """The ``data`` of a call that must succeed with ``expected``."""
        call = self.get if method == "GET" else self.post
        response = await call(path, **fields)
        assert response.status_code == expected, response.text
        body = response.json()
        assert body["status"] is True
        return body["data"]


@pytest.fixture(params=["memory", "mongod"])
async def db(request: pytest.FixtureRequest) -> AsyncIterator[Database]:
    """The emulator's store: the in-process one, and the same API through PyMongo's real
    client against ``strangler legacy mongod`` (the wire-protocol test server)."""
    over_wire = request.param == "mongod"
    if over_wire:
        store = open_database(request.getfixturevalue("wire_mongo_url"))
    else:
        store = open_database(f"memory://legacy-test-{uuid.uuid4().hex}")
    yield store
    for name in await store.list_collection_names():
        await store[name].drop()
    if over_wire:
        await store.client.close()


@pytest.fixture
def app(db: Database) -> Starlette:
    return create_app(db, jwt_secret=SECRET, run_step_seconds=RUN_STEP_SECONDS, password_rounds=4)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://legacy") as http:
        yield http
    await app.state.emulator.runner.drain()


@pytest.fixture
def api(client: httpx.AsyncClient) -> Api:
    return Api(client, TENANT_A)


@dataclass
class Tree:
    workspace_id: str
    folder_id: str
    job_id: str


async def make_tree(api: Api, name: str = "Sales") -> Tree:
    """A workspace with one folder holding one job, made through the API."""
    ws = await api.data("POST", "/workspace/addWorkspace", 201, workspace_name=name)
    folder = await api.data(
        "POST",
        "/workspace/addFolder",
        201,
        workspace_id=ws["workspace_id"],
        folder_name="Daily",
    )
    job = await api.data(
        "POST",
        "/workspace/addJob",
        201,
        workspace_id=ws["workspace_id"],
        folder_id=folder["folder_id"],
        job_name="Load",
        environment="prod",
    )
    return Tree(ws["workspace_id"], folder["folder_id"], job["job_id"])


async def make_workflow(api: Api, tree: Tree, name: str = "orders", **fields: Any) -> Any:
    return await api.data(
        "POST",
        "/workflow/addWorkflow",
        201,
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        workflow_name=name,
        **fields,
    )


Hook = Callable[[], Awaitable[None]]


class HookedDatabase:
    """A store whose next call of a chosen collection method first runs a hook.

    A hook that raises stands for the store failing at that step; a hook that
    calls the API stands for another request landing in between.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.name = db.name
        self.hooks: dict[tuple[str, str], Hook] = {}

    def before(self, collection: str, method: str, hook: Hook) -> None:
        self.hooks[(collection, method)] = hook

    def __getitem__(self, name: str) -> Any:
        return _HookedCollection(self._db[name], name, self.hooks)

    async def list_collection_names(self) -> list[str]:
        return await self._db.list_collection_names()


class _HookedCollection:
    def __init__(self, inner: Any, name: str, hooks: dict[tuple[str, str], Hook]) -> None:
        self._inner = inner
        self._name = name
        self._hooks = hooks

    def __getattr__(self, attribute: str) -> Any:
        target = getattr(self._inner, attribute)
        key = (self._name, attribute)
        if key not in self._hooks:
            return target

        async def hooked(*args: Any, **kwargs: Any) -> Any:
            hook = self._hooks.pop(key, None)
            if hook is not None:
                await hook()
            return await target(*args, **kwargs)

        return hooked


@pytest.fixture
def hooked(db: Database) -> HookedDatabase:
    return HookedDatabase(db)


@pytest.fixture
async def hooked_api(hooked: HookedDatabase) -> AsyncIterator[Api]:
    """An API client over an app whose store is ``hooked``."""
    app = create_app(hooked, jwt_secret=SECRET, run_step_seconds=RUN_STEP_SECONDS)  # type: ignore[arg-type]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://legacy") as http:
        yield Api(http, TENANT_A)


async def stored(db: Database, collection: str, **query: Any) -> dict[str, Any]:
    """The one stored document matching ``query`` (to look behind the API)."""
    documents = await db[collection].find(query).to_list(None)
    assert len(documents) == 1, documents
    return documents[0]


# --- what the test modules use (they cannot import this module by name) ---------------------


@pytest.fixture
def secret() -> str:
    return SECRET


@pytest.fixture
def tenant_a() -> Tenant:
    return TENANT_A


@pytest.fixture
def tenant_b() -> Tenant:
    return TENANT_B


@pytest.fixture
def api_b(api: Api) -> Api:
    """The same app, called by another tenant."""
    return api.as_(TENANT_B)


@pytest.fixture
async def tree(api: Api) -> Tree:
    return await make_tree(api)


@pytest.fixture
def new_tree() -> Callable[..., Awaitable[Tree]]:
    return make_tree


@pytest.fixture
def new_workflow() -> Callable[..., Awaitable[Any]]:
    return make_workflow


@pytest.fixture
def find_stored() -> Callable[..., Awaitable[dict[str, Any]]]:
    return stored
