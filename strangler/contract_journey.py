"""One journey through the legacy contract, as a client makes it, against any base URL.

A fresh tenant (a token for a subscription id nobody has used: LEGACY.md trusts a
well-signed token as issued) walks every entity's endpoints in the order a client does,
each call naming what an earlier one created, so that with the entities split between the
two sides a call meets what the other side wrote a moment before:

- connectors: add (and a duplicate name: 409), get, update, test, list;
- the workspace tree: a workspace, a folder, a job and a workflow whose source connector is
  the one just added; update, check out, check in, versions, the tree;
- job runs: ``runNow`` on that workflow with ``/ws/runNow`` open, the run followed to its
  end (``getRun`` and the socket), ``getRuns``;
- users, groups and roles: a user, a group holding that user (added, then removed), a role
  assigned to that user;
- errors: no token (401), an unknown id (404), a non-JSON body and a zero ``per_page`` (400);
  these two parts made while the run goes on (their answers follow the run's);
- the deletes, each followed by the 404 of a get;
- activity: the tenant's list, and every entry ``/ws/activity`` announced meanwhile.

A 503 with ``Retry-After`` (a fenced switch, a causal wait past its bound) is waited out
and asked again, as a client does. What another side carries (a run's end, activity
entries) is waited for, bounded, and the answer recorded either way: the transcript
(:mod:`strangler.contract_transcript`) then shows what was missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

from strangler.contract import new_id
from strangler.contract_transcript import Normalizer, Transcript
from strangler.tokens import mint_token

__all__ = ["JourneyTenant", "fresh_tenant", "run_journey"]

# Bounds of the waits for what another side carries: a run's end (legacy's simulator and
# the run worker take a second or two), activity (a forward or reverse sync's pass).
RUN_END_SECONDS = 20.0
ACTIVITY_SECONDS = 20.0
RETRY_SECONDS = 60.0  # at most, for 503 + Retry-After answers to stop
POLL_SECONDS = 0.2
FINAL_RUN_STATUSES = frozenset({"completed", "failed"})
UNKNOWN_CONNECTOR = "cn_000000000000"
DIAGRAM = '{"nodes": [{"id": "n1"}, {"id": "n2"}], "edges": [{"from": "n1", "to": "n2"}]}'


class JourneyTenant:
    """A subscription and a caller nobody has used, and the token for them."""

    def __init__(self, secret: str, subscription_id: str, user_id: str) -> None:
        self.subscription_id = subscription_id
        self.user_id = user_id
        self.token = mint_token(secret, user_id, subscription_id)
        self.tag = secrets.token_hex(4)  # in names and emails, which some stores keep unique


def fresh_tenant(secret: str) -> JourneyTenant:
    return JourneyTenant(secret, new_id("subscription"), new_id("user"))


def _ws_url(base_url: str, path: str, token: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, path, f"token={token}", ""))


class _Journey:
    def __init__(self, client: httpx.AsyncClient, base_url: str, tenant: JourneyTenant) -> None:
        self.client = client
        self.base_url = base_url
        self.tenant = tenant
        self.transcript = Transcript()
        # What came back, as it came: normalized in this order once the journey is over
        # (ids are named by first appearance), so that parts run side by side still make
        # one transcript in one order.
        self.steps: list[tuple[str, int, Any, bool]] = []
        self.headers = {"Authorization": f"Bearer {tenant.token}"}
        self.writes = 0  # successful writes: each appends one activity entry (LEGACY.md)

    def fork(self) -> _Journey:
        """A part of this journey made meanwhile, on the same client; :meth:`join` it."""
        return _Journey(self.client, self.base_url, self.tenant)

    def join(self, part: _Journey) -> None:
        """``part``'s answers after this journey's so far, its writes and waits counted."""
        self.steps += part.steps
        self.writes += part.writes
        self.transcript.retried += part.transcript.retried
        self.transcript.waited.update(part.transcript.waited)

    def record(self, step: str, status: int, body: Any, *, sort: bool = False) -> None:
        """``sort``: a list whose order of arrival is not part of the contract."""
        self.steps.append((step, status, body, sort))

    def finish(self) -> Transcript:
        normalizer = Normalizer(self.tenant.subscription_id, self.tenant.user_id, self.tenant.tag)
        for step, status, body, sort in self.steps:
            value = normalizer.value(body)
            if sort:
                value = sorted(value, key=lambda item: json.dumps(item, sort_keys=True))
            self.transcript.add(step, status, value)
        return self.transcript

    async def _send(
        self, method: str, path: str, payload: Any, headers: dict[str, str]
    ) -> httpx.Response:
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            if method == "GET":
                response = await self.client.get(path, params=payload, headers=headers)
            elif isinstance(payload, str):
                response = await self.client.post(path, content=payload, headers=headers)
            else:
                response = await self.client.post(path, json=payload, headers=headers)
            wait = response.headers.get("retry-after")
            if response.status_code != 503 or wait is None or time.monotonic() > deadline:
                return response
            self.transcript.retried += 1
            await asyncio.sleep(min(float(wait), 2.0))

    async def call(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        why: str = "",
        token: bool = True,
        record: bool = True,
    ) -> Any:
        """The answer's ``data`` (None unless it succeeded); the answer goes in the
        transcript."""
        headers = dict(self.headers) if token else {}
        if isinstance(payload, str):
            headers["Content-Type"] = "application/json"
        response = await self._send(method, path, payload or {}, headers)
        try:
            body: Any = response.json()
        except ValueError:
            body = {"not JSON": response.text[:200]}
        ok = response.status_code in (200, 201)
        if ok and method == "POST":
            self.writes += 1
        if record:
            step = f"{method} {path}" + (f" ({why})" if why else "")
            self.record(step, response.status_code, body)
        return body.get("data") if ok and isinstance(body, dict) else None

    def named(self, name: str) -> str:
        return f"contract-{name}-{self.tenant.tag}"

    # --- the entities ----------------------------------------------------------------

    async def connectors(self) -> str | None:
        detail = {
            "host": "db.internal",
            "port": 5432,
            "username": "etl",
            "password": "s3cret-" + self.tenant.tag,
        }
        add = {
            "connector_name": self.named("source"),
            "connector_type": "postgres",
            "connection_detail": detail,
            "description": "the journey's source",
        }
        connector = await self.call("POST", "/connectors/addConnector", add)
        await self.call("POST", "/connectors/addConnector", add, why="a duplicate name")
        if connector is None:
            return None
        ident = {"connector_id": connector["connector_id"]}
        await self.call("GET", "/connectors/getConnector", ident)
        await self.call(
            "POST", "/connectors/updateConnector", {**ident, "description": "edited by the journey"}
        )
        await self.call("POST", "/connectors/testConnector", ident)
        await self.call("GET", "/connectors/getConnectors", {"per_page": "100"})
        await self.call(
            "GET",
            "/connectors/getConnector",
            {"connector_id": UNKNOWN_CONNECTOR},
            why="an unknown id",
        )
        return str(connector["connector_id"])

    async def tree(self, connector_id: str | None) -> dict[str, str] | None:
        workspace = await self.call(
            "POST",
            "/workspace/addWorkspace",
            {"workspace_name": self.named("ws"), "description": "w"},
        )
        if workspace is None:
            return None
        ids = {"workspace_id": workspace["workspace_id"]}
        await self.call("GET", "/workspace/getAllWorkspace", {"per_page": "100"})
        await self.call(
            "POST", "/workspace/updateWorkspace", {**ids, "description": "edited by the journey"}
        )
        folder = await self.call(
            "POST", "/workspace/addFolder", {**ids, "folder_name": self.named("folder")}
        )
        if folder is None:
            return None
        ids["folder_id"] = folder["folder_id"]
        job = await self.call(
            "POST",
            "/workspace/addJob",
            {**ids, "job_name": self.named("job"), "environment": "dev"},
        )
        if job is None:
            return None
        ids["job_id"] = job["job_id"]
        add = {
            **ids,
            "workflow_name": self.named("flow"),
            "workFlowDiagram": DIAGRAM,
            "tags": ["contract"],
            "parameters": {"batch": 10},
        }
        if connector_id is not None:
            add["source_connectorid"] = connector_id
        workflow = await self.call("POST", "/workflow/addWorkflow", add)
        if workflow is None:
            return None
        ids["workflow_id"] = flow = workflow["workflow_id"]
        await self.call("GET", "/workflow/getWorkflow", {"workflow_id": flow})
        await self.call(
            "POST",
            "/workflow/updateWorkflow",
            {"workflow_id": flow, "description": "edited", "version": 1},
        )
        await self.call("POST", "/workflow/checkOut", {"workflow_id": flow})
        await self.call("POST", "/workflow/checkIn", {"workflow_id": flow, "comment": "v2"})
        await self.call("GET", "/workflow/getVersions", {"workflow_id": flow})
        await self.call("GET", "/workflow/getWorkflows", {"workspace_id": ids["workspace_id"]})
        await self.call("GET", "/workspace/getWorkspace", {"workspace_id": ids["workspace_id"]})
        return ids

    async def runs(self, workflow_id: str, meanwhile: Callable[[], Awaitable[None]]) -> None:
        """``runNow``, the run followed to its end; ``meanwhile`` runs while it goes on (a
        second or two), as a client goes on with other calls."""
        url = _ws_url(self.base_url, f"/ws/runNow/{workflow_id}", self.tenant.token)
        async with _socket(url) as socket:
            queued = await self.call("POST", "/workflow/runNow", {"workflow_id": workflow_id})
            if queued is None:
                await meanwhile()
                return
            started = time.monotonic()
            await asyncio.gather(self._follow(queued["job_run_id"], socket, started), meanwhile())
        await self.call("GET", "/jobRun/getRuns", {"workflow_id": workflow_id})

    async def _follow(self, run_id: str, socket: Any, started: float) -> None:
        run = None
        while time.monotonic() - started < RUN_END_SECONDS:
            run = await self.call("GET", "/jobRun/getRun", {"job_run_id": run_id}, record=False)
            if run is not None and run.get("status") in FINAL_RUN_STATUSES:
                break
            await asyncio.sleep(POLL_SECONDS)
        self.transcript.waited["run end"] = round(time.monotonic() - started, 2)
        await self.call("GET", "/jobRun/getRun", {"job_run_id": run_id}, why="at its end")
        messages = await _read_until(
            socket, started + RUN_END_SECONDS, lambda m: m.get("status") in FINAL_RUN_STATUSES
        )
        self.record("WS /ws/runNow/{workflow_id} (every status change)", 101, messages)

    async def people(self) -> None:
        add = {
            "email": f"contract-{self.tenant.tag}@journey.example",
            "username": self.named("user"),
            "full_name": "Journey User",
            "password": "pw-" + self.tenant.tag,
        }
        user = await self.call("POST", "/users/addUser", add)
        if user is None:
            return
        who = {"UserId": user["UserId"]}
        await self.call("GET", "/users/getUser", who)
        await self.call("POST", "/users/updateUser", {**who, "full_name": "Journey User Two"})
        await self.call("GET", "/users/getUsers", {"per_page": "100"})
        group = await self.call(
            "POST", "/groups/addGroup", {"group_name": self.named("group"), "description": "g"}
        )
        if group is not None:
            held = {"group_id": group["group_id"], **who}
            await self.call("POST", "/groups/addUserToGroup", held)
            await self.call("GET", "/groups/getGroups", {"per_page": "100"})
            await self.call("POST", "/groups/removeUserFromGroup", held)
        role = await self.call(
            "POST",
            "/roles/addRole",
            {"role_name": self.named("role"), "permissions": ["read", "run"]},
        )
        if role is not None:
            await self.call("POST", "/roles/assignRole", {"role_id": role["role_id"], **who})
            await self.call("GET", "/roles/getRoles", {"per_page": "100"})

    async def errors(self) -> None:
        await self.call("GET", "/connectors/getConnectors", why="no token", token=False)
        await self.call("GET", "/workspace/getAllWorkspace", why="no token", token=False)
        await self.call("POST", "/workspace/addWorkspace", "not json", why="a non-JSON body")
        await self.call("GET", "/users/getUsers", {"per_page": "0"}, why="per_page 0")
        await self.call(
            "GET", "/jobRun/getRun", {"job_run_id": "run_000000000000"}, why="an unknown id"
        )

    async def deletes(self, connector_id: str | None, ids: dict[str, str] | None) -> None:
        if ids is not None:
            flow = {"workflow_id": ids["workflow_id"]}
            await self.call("POST", "/workflow/deleteWorkflow", flow)
            await self.call("GET", "/workflow/getWorkflow", flow, why="deleted")
            job = {k: ids[k] for k in ("workspace_id", "folder_id", "job_id")}
            await self.call("POST", "/workspace/deleteJob", job)
            folder = {k: ids[k] for k in ("workspace_id", "folder_id")}
            await self.call("POST", "/workspace/deleteFolder", folder)
            space = {"workspace_id": ids["workspace_id"]}
            await self.call("GET", "/workspace/getWorkspace", space, why="its tree emptied")
            await self.call("POST", "/workspace/deleteWorkspace", space)
            await self.call("GET", "/workspace/getWorkspace", space, why="deleted")
        if connector_id is not None:
            await self.call("POST", "/connectors/deleteConnector", {"connector_id": connector_id})
            await self.call(
                "GET", "/connectors/getConnector", {"connector_id": connector_id}, why="deleted"
            )

    async def activity(self, socket: Any, since: float) -> None:
        """The tenant's activity once it holds an entry per write (bounded), and what
        ``/ws/activity`` announced meanwhile (order of arrival aside: entries written on
        different sides reach the relay through different syncs)."""
        started = time.monotonic()
        query = {"per_page": "100"}
        while time.monotonic() - started < ACTIVITY_SECONDS:
            listed = await self.call("GET", "/userActivity/getActivity", query, record=False)
            if isinstance(listed, list) and len(listed) >= self.writes:
                break
            await asyncio.sleep(POLL_SECONDS)
        self.transcript.waited["activity"] = round(time.monotonic() - started, 2)
        await self.call("GET", "/userActivity/getActivity", query, why="an entry per write")
        messages = await _read_until(
            socket, started + ACTIVITY_SECONDS, lambda _m: False, count=self.writes
        )
        self.record("WS /ws/activity (every entry, sorted)", 101, messages, sort=True)


@contextlib.asynccontextmanager
async def _socket(url: str) -> AsyncIterator[Any]:
    async with websockets.connect(url, open_timeout=10, close_timeout=2) as socket:
        yield socket


async def _read_until(socket: Any, deadline: float, last: Any, count: int = 0) -> list[Any]:
    """Messages until one satisfies ``last``, ``count`` have come, or the deadline."""
    messages: list[Any] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            raw = await asyncio.wait_for(socket.recv(), timeout=left)
        except (TimeoutError, websockets.ConnectionClosed):
            break
        message = json.loads(raw)
        messages.append(message)
        if last(message) or (count and len(messages) >= count):
            break
    return messages


async def run_journey(base_url: str, tenant: JourneyTenant) -> Transcript:
    """The journey of ``tenant`` against ``base_url``; its transcript, normalized."""
    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:
        journey = _Journey(client, base_url, tenant)
        async with _socket(_ws_url(base_url, "/ws/activity", tenant.token)) as activity:
            started = time.monotonic()
            connector_id = await journey.connectors()
            ids = await journey.tree(connector_id)
            others = journey.fork()

            async def meanwhile() -> None:
                await others.people()
                await others.errors()

            if ids is not None:
                await journey.runs(ids["workflow_id"], meanwhile)
            else:
                await meanwhile()
            journey.join(others)  # the run's answers, then those made while it went on
            await journey.deletes(connector_id, ids)
            await journey.activity(activity, started)
        return journey.finish()
