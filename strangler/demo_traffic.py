"""The demo's clients: reads and writes of connectors and workspace trees through the proxy,
for several tenants at once, with a ledger of every write the proxy acknowledged.

Each ledger key (a connector, folder, job or workflow) is written by exactly one client task,
one request at a time, so "its last acknowledged value" is well defined; concurrency comes
from many such tasks at once (every tenant's trees are edited side by side, while readers
read them). A fenced write (503 + Retry-After, during a switch of the source of truth) is
tried again after the wait, as a client does; a stale ``version`` on updateWorkflow is an
expected 409 once PostgreSQL serves the tree (legacy ignores versions). A write whose answer
never came (a transport error) is not acknowledged and not in the ledger.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from strangler.tokens import mint_token

__all__ = ["Counters", "Ledger", "Tenant", "Traffic"]

# Writers pause this many beats between calls, readers one: reads are what the comparator
# needs evidence from, writes what makes it interesting.
WRITER_BEATS = 8.0
RUNNABLE_AFTER = 5.0  # seconds: a workflow this old has reached both stores
ACTIVITY_SETTLED_SECONDS = 10.0  # activity this old has reached both stores
READERS_PER_TENANT = 3


@dataclass(frozen=True)
class Tenant:
    subscription_id: str
    user_id: str
    workspaces: tuple[str, ...]  # live workspaces its tree editors work on
    token: str
    # Seeded users, in both stores from the start: the members the membership editor
    # adds and removes (a user added meanwhile may not have reached the other store yet
    # when its group is served there: a read-your-writes question across entities).
    members: tuple[str, ...] = ()


@dataclass
class Ledger:
    """The last acknowledged state of everything the clients wrote."""

    acknowledged: int = 0
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    # a group's or a role's members, each group (role) edited by one client
    memberships: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the runs runNow queued (and acknowledged): each must exist in both stores
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Counters:
    reads: int = 0
    writes: int = 0  # acknowledged
    fenced_retries: int = 0
    stale_version_409: int = 0
    not_acknowledged: int = 0  # transport errors on a write: outcome unknown, not in the ledger
    read_your_writes_misses: int = 0
    unexpected: Counter[str] = field(default_factory=Counter)
    unexpected_samples: list[str] = field(default_factory=list)

    def line(self) -> str:
        odd = sum(self.unexpected.values())
        return (
            f"reads {self.reads:,}, writes acknowledged {self.writes:,}, fenced and retried "
            f"{self.fenced_retries}, stale-version 409 {self.stale_version_409}, "
            f"read-your-writes misses {self.read_your_writes_misses}, unexpected answers {odd}"
        )


class Traffic:
    """Client tasks against ``base_url``; :meth:`start` and :meth:`stop`."""

    def __init__(self, base_url: str, tenants: list[Tenant], *, pace: float = 0.05) -> None:
        self.base_url = base_url
        self.tenants = tenants
        self.pace = pace
        self.ledger = Ledger()
        self.counters = Counters()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._names = itertools.count(1)
        self.crashed: list[str] = []
        self.focus = ""  # the entity being walked: readers favour its endpoints

    # --- one call ----------------------------------------------------------------------

    async def _call(
        self,
        tenant: Tenant,
        method: str,
        path: str,
        payload: dict[str, Any],
        *,
        may_409: bool = False,
        gone: Callable[[], bool] | None = None,
    ) -> dict[str, Any] | None:
        """The answer's ``data`` when the call succeeded; None otherwise (counted)."""
        assert self._client is not None
        headers = {"Authorization": f"Bearer {tenant.token}"}
        write = method == "POST"
        while True:
            try:
                if write:
                    response = await self._client.post(path, json=payload, headers=headers)
                else:
                    response = await self._client.get(path, params=payload, headers=headers)
            except httpx.HTTPError as exc:
                if write:
                    self.counters.not_acknowledged += 1
                self._unexpected(path, type(exc).__name__)
                return None
            if response.status_code == 503 and "retry-after" in response.headers:
                self.counters.fenced_retries += 1
                await asyncio.sleep(float(response.headers["retry-after"]))
                continue
            break
        if response.status_code in (200, 201):
            if write:
                self.counters.writes += 1
                self.ledger.acknowledged += 1
            else:
                self.counters.reads += 1
            data = response.json().get("data")
            return data if isinstance(data, dict) else {"items": data}
        if response.status_code == 404 and gone is not None and gone():
            self.counters.reads += 1  # deleted by its owner meanwhile: 404 is the answer
            return None
        if response.status_code == 409 and may_409:
            self.counters.stale_version_409 += 1
            return None
        self._unexpected(path, f"{response.status_code} {response.text[:160]}")
        return None

    def _unexpected(self, path: str, what: str) -> None:
        self.counters.unexpected[f"{path} {what.split(' ', 1)[0]}"] += 1
        if len(self.counters.unexpected_samples) < 5:
            self.counters.unexpected_samples.append(f"{path}: {what}")

    async def _pause(self, beats: float = 1.0) -> bool:
        """Wait ``beats`` beats (jittered); False once stopping."""
        try:
            await asyncio.wait_for(self._stop.wait(), beats * self.pace * (0.5 + random.random()))
        except TimeoutError:
            return True
        return False

    def _name(self, prefix: str) -> str:
        return f"{prefix}-{next(self._names)}"

    # --- connectors --------------------------------------------------------------------

    async def _add_connector(self, tenant: Tenant) -> str | None:
        name = self._name("demo-cn")
        body = {"connector_name": name, "connector_type": "postgres",
                "connection_detail": {"host": "db.internal", "port": 5432,
                                      "username": "etl", "password": f"pw-{name}"}}  # fmt: skip
        data = await self._call(tenant, "POST", "/connectors/addConnector", body)
        if data is None:
            return None
        self.ledger.connectors[data["connector_id"]] = {
            "connector_name": name, "description": None, "deleted": False,
            "test_status": data.get("test_status"), "tenant": tenant.subscription_id,
            "connector_id": data["connector_id"],
        }  # fmt: skip
        return str(data["connector_id"])

    async def connectors_client(self, tenant: Tenant) -> None:
        own: list[str] = []
        for step in itertools.count():
            if not await self._pause(WRITER_BEATS):
                return
            live = [c for c in own if not self.ledger.connectors[c]["deleted"]]
            if not live or step % 6 == 0:
                added = await self._add_connector(tenant)
                if added:
                    own.append(added)
                continue
            target = random.choice(live)
            state = self.ledger.connectors[target]
            kind = step % 6
            if kind in (1, 2):
                description = f"edited {step}"
                body = {"connector_id": target, "description": description}
                if await self._call(tenant, "POST", "/connectors/updateConnector", body):
                    state["description"] = description
            elif kind == 3:
                data = await self._call(
                    tenant, "POST", "/connectors/testConnector", {"connector_id": target}
                )
                if data is not None:
                    state["test_status"] = data.get("test_status")
            elif kind == 4 and len(live) > 2:
                body = {"connector_id": target}
                if await self._call(tenant, "POST", "/connectors/deleteConnector", body):
                    state["deleted"] = True
            else:
                data = await self._call(
                    tenant, "GET", "/connectors/getConnector", {"connector_id": target}
                )
                if data is not None and data.get("description") != state["description"]:
                    self.counters.read_your_writes_misses += 1

    # --- job runs -------------------------------------------------------------------------

    async def runs_client(self, tenant: Tenant) -> None:
        """Runs its own workflows now and then, and reads its runs back."""
        own: list[str] = []
        for step in itertools.count():
            if not await self._pause(WRITER_BEATS):
                return
            # workflows a few seconds old: the run's side has them whichever serves it
            ready = [k for k, v in self.ledger.workflows.items()
                     if v["tenant"] == tenant.subscription_id and not v["deleted"]
                     and time.monotonic() - v.get("since", 0.0) > RUNNABLE_AFTER]  # fmt: skip
            if ready and (not own or step % 2 == 0):
                flow = random.choice(ready)
                state = self.ledger.workflows[flow]
                data = await self._call(
                    tenant, "POST", "/workflow/runNow", {"workflow_id": flow},
                    gone=functools.partial(_is_deleted, state),
                )  # fmt: skip
                if data is not None:
                    run_id = str(data["job_run_id"])
                    self.ledger.runs[run_id] = {"tenant": tenant.subscription_id}
                    own.append(run_id)
            elif own:
                run_id = random.choice(own)
                data = await self._call(tenant, "GET", "/jobRun/getRun", {"job_run_id": run_id})
                if data is not None and data.get("job_run_id") != run_id:
                    self.counters.read_your_writes_misses += 1

    # --- users, groups and roles --------------------------------------------------------

    async def _add_user(self, tenant: Tenant) -> None:
        name = self._name("demo-user")
        body = {"email": f"{name}@demo.example", "username": name, "full_name": name,
                "password": f"pw-{name}"}  # fmt: skip
        data = await self._call(tenant, "POST", "/users/addUser", body)
        if data is not None:
            self.ledger.users[data["UserId"]] = {
                "full_name": name, "tenant": tenant.subscription_id, "UserId": data["UserId"],
            }  # fmt: skip

    async def _add_holder(self, tenant: Tenant, kind: str) -> str | None:
        """A group or a role of this client's own, empty."""
        name = self._name(f"demo-{kind}")
        if kind == "group":
            data = await self._call(tenant, "POST", "/groups/addGroup", {"group_name": name})
        else:
            body = {"role_name": name, "permissions": ["read", "execute"]}
            data = await self._call(tenant, "POST", "/roles/addRole", body)
        if data is None:
            return None
        holder = str(data[f"{kind}_id"])
        self.ledger.memberships[holder] = {
            "kind": kind, "members": [], "tenant": tenant.subscription_id,
        }  # fmt: skip
        return holder

    async def _change_member(self, tenant: Tenant, holder: str, *, add: bool) -> None:
        state = self.ledger.memberships[holder]
        members: list[str] = state["members"]
        pool = [u for u in tenant.members if (u not in members) == add]
        if not pool or (not add and state["kind"] == "role"):
            return
        user = random.choice(pool)
        if state["kind"] == "role":
            path, body = "/roles/assignRole", {"role_id": holder, "UserId": user}
        else:
            path = "/groups/addUserToGroup" if add else "/groups/removeUserFromGroup"
            body = {"group_id": holder, "UserId": user}
        data = await self._call(tenant, "POST", path, body)
        if data is not None:
            state["members"] = [m for m in data.get("users") or [] if isinstance(m, str)]

    async def people_client(self, tenant: Tenant) -> None:
        """Adds users and edits the members of its own group and role, while it reads."""
        group = role = None
        own: list[str] = []
        for step in itertools.count():
            if not await self._pause(WRITER_BEATS):
                return
            if group is None:
                group = await self._add_holder(tenant, "group")
                continue
            if role is None:
                role = await self._add_holder(tenant, "role")
                continue
            # one write in three steps: each write changes what the lists show, and the
            # comparator meets a changed list as a difference it must read again
            kind = step % 12
            if kind == 0:  # bcrypt is slow on purpose: a few adds are enough
                await self._add_user(tenant)
                own = self._own(self.ledger.users, tenant)
            elif kind in (3, 8):
                await self._change_member(tenant, group, add=random.random() < 0.6)
            elif kind == 6:
                await self._change_member(tenant, role, add=True)
            elif kind == 10 and own:
                target = random.choice(own)
                name = self._name("renamed")
                body = {"UserId": target, "full_name": name}
                if await self._call(tenant, "POST", "/users/updateUser", body):
                    self.ledger.users[target]["full_name"] = name
            elif kind in (1, 5) and own:
                target = random.choice(own)
                data = await self._call(tenant, "GET", "/users/getUser", {"UserId": target})
                expected = self.ledger.users[target]["full_name"]
                if data is not None and data.get("full_name") != expected:
                    self.counters.read_your_writes_misses += 1
            else:
                data = await self._call(tenant, "GET", "/groups/getGroups", {"per_page": "100"})
                listed = {g.get("group_id"): g for g in (data or {}).get("items") or []}
                shown = listed.get(group)
                expected = self.ledger.memberships[group]["members"]
                if data is not None and (shown is None or shown.get("users") != expected):
                    self.counters.read_your_writes_misses += 1

    # --- workspace trees ---------------------------------------------------------------

    async def tree_editor(self, tenant: Tenant, workspace_id: str) -> None:
        """Edits one workspace (its only editor): folders, jobs, workflows, versions."""
        folder = await self._add_folder(tenant, workspace_id)
        while folder is None and await self._pause():
            folder = await self._add_folder(tenant, workspace_id)
        jobs: list[str] = []
        flows: list[str] = []
        for step in itertools.count():
            if folder is None or not await self._pause(WRITER_BEATS):
                return
            kind = step % 8
            if kind == 0 or not jobs:
                job = await self._add_job(tenant, workspace_id, folder)
                if job:
                    jobs.append(job)
            elif kind == 1 or not flows:
                flow = await self._add_workflow(tenant, workspace_id, folder, random.choice(jobs))
                if flow:
                    flows.append(flow)
            elif kind in (2, 3):
                await self._update_workflow(tenant, random.choice(flows), with_version=kind == 2)
            elif kind == 4:
                await self._check_out_in(tenant, random.choice(flows))
            elif kind == 5:
                await self._update_workflow(tenant, random.choice(flows), stale=True)
            elif kind == 6:
                scratch = await self._add_job(tenant, workspace_id, folder)
                if scratch:
                    await self._delete_job(tenant, workspace_id, folder, scratch)
            else:
                await self._read_tree(tenant, workspace_id)

    async def _add_folder(self, tenant: Tenant, workspace_id: str) -> str | None:
        name = self._name("demo-folder")
        body = {"workspace_id": workspace_id, "folder_name": name}
        data = await self._call(tenant, "POST", "/workspace/addFolder", body)
        if data is None:
            return None
        self.ledger.folders[data["folder_id"]] = {
            "workspace_id": workspace_id, "folder_name": name, "deleted": False,
        }  # fmt: skip
        return str(data["folder_id"])

    async def _add_job(self, tenant: Tenant, workspace_id: str, folder_id: str) -> str | None:
        name = self._name("demo-job")
        body = {"workspace_id": workspace_id, "folder_id": folder_id, "job_name": name}
        data = await self._call(tenant, "POST", "/workspace/addJob", body)
        if data is None:
            return None
        self.ledger.jobs[data["job_id"]] = {
            "workspace_id": workspace_id, "folder_id": folder_id, "job_name": name,
            "deleted": False,
        }  # fmt: skip
        return str(data["job_id"])

    async def _delete_job(self, tenant: Tenant, workspace_id: str, folder: str, job: str) -> None:
        body = {"workspace_id": workspace_id, "folder_id": folder, "job_id": job}
        if await self._call(tenant, "POST", "/workspace/deleteJob", body):
            self.ledger.jobs[job]["deleted"] = True

    async def _add_workflow(
        self, tenant: Tenant, workspace_id: str, folder_id: str, job_id: str
    ) -> str | None:
        name = self._name("demo-flow")
        body = {"workspace_id": workspace_id, "folder_id": folder_id, "job_id": job_id,
                "workflow_name": name,
                "workFlowDiagram": '{"nodes": [{"id": "n1"}], "edges": []}'}  # fmt: skip
        data = await self._call(tenant, "POST", "/workflow/addWorkflow", body)
        if data is None:
            return None
        self._remember_workflow(data)
        return str(data["workflow_id"])

    def _remember_workflow(self, data: dict[str, Any]) -> None:
        self.ledger.workflows[data["workflow_id"]] = {
            "workflow_name": data.get("workflow_name"), "description": data.get("description"),
            "version": data.get("version"), "deleted": False,
            "tenant": data.get("subscription_id"), "since": time.monotonic(),
        }  # fmt: skip

    async def _update_workflow(
        self, tenant: Tenant, workflow_id: str, *, with_version: bool = False, stale: bool = False
    ) -> None:
        state = self.ledger.workflows[workflow_id]
        version = state["version"] if isinstance(state["version"], int) else 1
        if stale and version < 2:
            return
        body: dict[str, Any] = {"workflow_id": workflow_id, "description": self._name("desc")}
        if with_version or stale:
            body["version"] = version - 1 if stale else version
        if random.random() < 0.3:
            body["workflow_name"] = self._name("demo-flow")  # a rename rewrites the tree too
        data = await self._call(tenant, "POST", "/workflow/updateWorkflow", body, may_409=stale)
        if data is not None:
            self._remember_workflow(data)

    async def _check_out_in(self, tenant: Tenant, workflow_id: str) -> None:
        body = {"workflow_id": workflow_id}
        data = await self._call(tenant, "POST", "/workflow/checkOut", body)
        if data is None:
            return
        self._remember_workflow(data)
        body["comment"] = "demo check-in"
        data = await self._call(tenant, "POST", "/workflow/checkIn", body)
        if data is not None:
            self._remember_workflow(data)

    async def _read_tree(self, tenant: Tenant, workspace_id: str) -> None:
        tree = await self._call(
            tenant, "GET", "/workspace/getWorkspace", {"workspace_id": workspace_id}
        )
        if tree is None:
            return
        seen = {
            job["job_id"]
            for folder in tree.get("folders") or []
            for job in folder.get("jobs") or []
        }
        mine = [
            job_id
            for job_id, job in self.ledger.jobs.items()
            if job["workspace_id"] == workspace_id and not job["deleted"]
        ]
        if any(job_id not in seen for job_id in mine):
            self.counters.read_your_writes_misses += 1

    # --- readers -----------------------------------------------------------------------

    async def reader(self, tenant: Tenant) -> None:
        """Reads what the tenant holds, seeded and new, so the comparator has evidence."""
        for step in itertools.count():
            if not await self._pause():
                return
            workspace_id = random.choice(tenant.workspaces)
            # Most reads go to the entity being walked, where the comparator needs evidence.
            kinds = _FOCUS.get(self.focus, (0, 1, 2, 3, 4, 5))
            kind = kinds[step % len(kinds)]
            if kind == 0:
                await self._call(tenant, "GET", "/connectors/getConnectors", {"per_page": "50"})
            elif kind == 1:
                ids = self._own(self.ledger.connectors, tenant)
                if ids:
                    chosen = self.ledger.connectors[random.choice(ids)]
                    params = {"connector_id": chosen["connector_id"]}
                    await self._call(
                        tenant,
                        "GET",
                        "/connectors/getConnector",
                        params,
                        gone=functools.partial(_is_deleted, chosen),
                    )
            elif kind == 2:
                await self._call(tenant, "GET", "/workspace/getAllWorkspace", {})
            elif kind == 3:
                params = {"workspace_id": workspace_id}
                await self._call(tenant, "GET", "/workspace/getWorkspace", params)
            elif kind == 4:
                params = {"workspace_id": workspace_id, "per_page": "50"}
                await self._call(tenant, "GET", "/workflow/getWorkflows", params)
            elif kind == 6:
                await self._call(tenant, "GET", "/users/getUsers", {"per_page": "50"})
            elif kind == 7:
                # mostly seeded users, which nobody renames: a read the comparator can settle
                users = list(tenant.members)
                if random.random() < 0.3:
                    users = self._own(self.ledger.users, tenant) or users
                if users:
                    user = random.choice(users)
                    await self._call(tenant, "GET", "/users/getUser", {"UserId": user})
            elif kind == 8:
                await self._call(tenant, "GET", "/groups/getGroups", {"per_page": "50"})
            elif kind == 9:
                await self._call(tenant, "GET", "/roles/getRoles", {"per_page": "50"})
            elif kind == 10:
                await self._call(tenant, "GET", "/jobRun/getRuns", {"per_page": "20"})
            elif kind == 12:
                # up to a few seconds ago: a page whose head still grows would differ by the
                # entries one side has a moment before the other (docs/runs.md)
                settled = datetime.now(UTC) - timedelta(seconds=ACTIVITY_SETTLED_SECONDS)
                params = {"per_page": "20", "to": settled.strftime("%Y-%m-%d %H:%M:%S")}
                await self._call(tenant, "GET", "/userActivity/getActivity", params)
            elif kind == 11:
                runs = self._own(self.ledger.runs, tenant)
                if runs:
                    params = {"job_run_id": random.choice(runs)}
                    await self._call(tenant, "GET", "/jobRun/getRun", params)
            else:
                flows = self._own(self.ledger.workflows, tenant)
                if flows:
                    flow = random.choice(flows)
                    await self._call(tenant, "GET", "/workflow/getWorkflow", {"workflow_id": flow})
                    await self._call(tenant, "GET", "/workflow/getVersions", {"workflow_id": flow})

    @staticmethod
    def _own(entries: dict[str, dict[str, Any]], tenant: Tenant) -> list[str]:
        return [key for key, state in entries.items() if state["tenant"] == tenant.subscription_id]

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=30.0, limits=limits)
        for tenant in self.tenants:
            self._tasks.append(asyncio.create_task(self.connectors_client(tenant)))
            if tenant.members:
                self._tasks.append(asyncio.create_task(self.people_client(tenant)))
            self._tasks.append(asyncio.create_task(self.runs_client(tenant)))
            for _ in range(READERS_PER_TENANT):
                self._tasks.append(asyncio.create_task(self.reader(tenant)))
            for workspace_id in tenant.workspaces:
                self._tasks.append(asyncio.create_task(self.tree_editor(tenant, workspace_id)))

    def restart(self) -> None:
        """Start the clients again after :meth:`stop` (the ledger goes on)."""
        self._stop = asyncio.Event()
        self.start()

    async def stop(self) -> None:
        """Let every task finish its current call (so each acknowledged write is in the
        ledger), then close the client."""
        self._stop.set()
        if self._tasks:
            _done, stuck = await asyncio.wait(self._tasks, timeout=45.0)
            for task in stuck:  # a call that never came back; its write is not acknowledged
                self.crashed.append(f"client task stuck in a call: {task.get_stack(limit=3)}")
                task.cancel()
            outcomes = await asyncio.gather(*self._tasks, return_exceptions=True)
            self.crashed += [
                repr(o)
                for o in outcomes
                if isinstance(o, BaseException) and not isinstance(o, asyncio.CancelledError)
            ]
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()


# Reader kinds (see Traffic.reader) per entity in focus: its own reads, and one of the other.
_FOCUS: dict[str, tuple[int, ...]] = {
    "connectors": (0, 1, 0, 1, 0, 1, 2),
    "workspaces": (2, 3, 4, 5, 3, 4, 5, 0),
    "users": (7, 7, 6, 7, 7, 7, 0),
    "groups": (8, 8, 8, 8, 6, 2),
    "roles": (9, 9, 9, 9, 6, 2),
    "job_runs": (11, 11, 10, 11, 11, 2),
    "activity": (12, 12, 12, 12, 2),
}


def _is_deleted(state: dict[str, Any]) -> bool:
    return bool(state["deleted"])


def tenant_of(
    secret: str, subscription_id: str, user_id: str, workspaces: list[str],
    members: list[str] | None = None,
) -> Tenant:  # fmt: skip
    return Tenant(
        subscription_id, user_id, tuple(workspaces), mint_token(secret, user_id, subscription_id),
        tuple(members or ()),
    )  # fmt: skip
