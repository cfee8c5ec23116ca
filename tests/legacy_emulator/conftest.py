"""Fixtures for the emulator's API tests: a fresh in-process store per test, two tenants."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
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


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    store = open_database(f"memory://legacy-test-{uuid.uuid4().hex}")
    yield store
    for name in await store.list_collection_names():
        await store[name].drop()


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
