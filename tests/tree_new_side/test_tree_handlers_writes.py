"""What the new side fixes in the tree's writes: no lost update, atomic cascading deletes,
deleted workflows leaving dependency lists, and an audit and outbox row with every write."""

# ruff: noqa: E501  (request bodies read best on one line)
from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from tree_handler_support import Sides, Tenant, build_registry, open_sides

from shadow_compare.model import Verdict

WS, WF = "/workspace", "/workflow"


async def add(sides: Sides, tenant: Tenant, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await sides.call_new("POST", path, tenant, body=body)
    assert response.status == 201, response.body
    data: dict[str, Any] = response.json()["data"]
    return data


async def new_tree(sides: Sides, tenant: Tenant, name: str, workflows: int) -> dict[str, Any]:
    """A workspace built through the new side: folder -> job -> ``workflows`` workflows."""
    ws = await add(sides, tenant, f"{WS}/addWorkspace", {"workspace_name": name})
    ids: dict[str, Any] = {"ws": ws["workspace_id"]}
    folder = await add(
        sides, tenant, f"{WS}/addFolder", {"workspace_id": ids["ws"], "folder_name": "f"}
    )
    ids["folder"] = folder["folder_id"]
    job = await add(
        sides,
        tenant,
        f"{WS}/addJob",
        {"workspace_id": ids["ws"], "folder_id": ids["folder"], "job_name": "j"},
    )
    ids["job"] = job["job_id"]
    ids["wf"] = []
    for number in range(workflows):
        workflow = await add(
            sides,
            tenant,
            f"{WF}/addWorkflow",
            {
                "workspace_id": ids["ws"],
                "folder_id": ids["folder"],
                "job_id": ids["job"],
                "workflow_name": f"w{number}",
            },
        )
        ids["wf"].append(workflow["workflow_id"])
    return ids


# --- optimistic locking -------------------------------------------------------------------


@pytest.fixture
async def wide_sides(shared_migrated_database_url: str) -> AsyncIterator[Sides]:
    """Sides whose pool lets 50 requests hold a connection at once."""
    pool = await asyncpg.create_pool(shared_migrated_database_url, min_size=1, max_size=50)
    try:
        async for built in open_sides(pool):
            built.registry = build_registry(pool, built.clock)
            yield built
    finally:
        await pool.close()


async def test_fifty_concurrent_versioned_updates_lose_nothing(
    wide_sides: Sides, tenant: Tenant
) -> None:
    sides = wide_sides
    workflow_id = (await new_tree(sides, tenant, "locking", 1))["wf"][0]
    outcomes: list[tuple[int, int | None, str]] = []

    async def client(number: int) -> None:
        marker = f"c{number}"
        for _attempt in range(3):  # a client told 409 reads again and retries, twice at most
            read = await sides.call_new(
                "GET", f"{WF}/getWorkflow", tenant, {"workflow_id": workflow_id}
            )
            seen = read.json()["data"]
            body = {
                "workflow_id": workflow_id,
                "version": seen["version"],
                "tags": [*seen["tags"], marker],
            }
            answer = await sides.call_new("POST", f"{WF}/updateWorkflow", tenant, body=body)
            version = answer.json()["data"]["version"] if answer.status == 200 else None
            outcomes.append((answer.status, version, marker))
            if answer.status == 200:
                return

    await asyncio.gather(*(client(number) for number in range(50)))

    statuses = {status for status, _, _ in outcomes}
    assert statuses <= {200, 409}, outcomes
    successes = sorted((version, marker) for status, version, marker in outcomes if status == 200)
    final = await sides.call_new("GET", f"{WF}/getWorkflow", tenant, {"workflow_id": workflow_id})
    data = final.json()["data"]
    assert data["version"] == 1 + len(successes)
    # Each success applied on top of the one before it: its version is the next one, and
    # the final list holds every success's marker, in the order they were applied.
    assert [version for version, _ in successes] == list(range(2, 2 + len(successes)))
    assert data["tags"] == [marker for _, marker in successes]
    assert len(successes) > 1 and 409 in statuses  # the race really happened
    async with sides.pool.acquire() as conn:
        audited = await conn.fetchval(
            "SELECT count(*) FROM user_activity WHERE object_id = $1 AND action = 'updated'",
            workflow_id,
        )
        queued = await conn.fetchval(
            "SELECT count(*) FROM migration_outbox WHERE legacy_id = $1 AND operation = 'update'",
            workflow_id,
        )
    assert audited == queued == len(successes)  # a refused update leaves no trace


async def test_concurrent_updates_without_version_each_apply_on_the_last(
    wide_sides: Sides, tenant: Tenant
) -> None:
    sides = wide_sides
    workflow_id = (await new_tree(sides, tenant, "unversioned", 1))["wf"][0]
    answers = await asyncio.gather(
        *(
            sides.call_new(
                "POST",
                f"{WF}/updateWorkflow",
                tenant,
                body={"workflow_id": workflow_id, "description": f"d{n}"},
            )
            for n in range(50)
        )
    )
    assert {answer.status for answer in answers} == {200}
    assert sorted(answer.json()["data"]["version"] for answer in answers) == list(range(2, 52))


async def test_a_stale_version_is_refused_and_declared(sides: Sides, tenant: Tenant) -> None:
    workflow = await sides.same(
        "POST", f"{WS}/addWorkspace", tenant, body={"workspace_name": "stale"}
    )
    ws = workflow["data"]["workspace_id"]
    folder = await sides.same(
        "POST", f"{WS}/addFolder", tenant, body={"workspace_id": ws, "folder_name": "f"}
    )
    fd = folder["data"]["folder_id"]
    job = await sides.same(
        "POST", f"{WS}/addJob", tenant, body={"workspace_id": ws, "folder_id": fd, "job_name": "j"}
    )
    added = await sides.same(
        "POST", f"{WF}/addWorkflow", tenant,
        body={"workspace_id": ws, "folder_id": fd, "job_id": job["data"]["job_id"], "workflow_name": "w"},
    )  # fmt: skip
    workflow_id = added["data"]["workflow_id"]
    first = {"workflow_id": workflow_id, "version": 1, "description": "first"}
    result, _, new = await sides.compare("POST", f"{WF}/updateWorkflow", tenant, body=first)
    assert new.status == 200 and result.kind.value == "expected"
    stale = {"workflow_id": workflow_id, "version": 1, "description": "second"}
    result, legacy, new = await sides.compare("POST", f"{WF}/updateWorkflow", tenant, body=stale)
    assert (legacy.status, new.status) == (200, 409)
    assert [(d.path, d.verdict, d.rule) for d in result.differences] == [
        ("@status", Verdict.EXPECTED, "stale-version-409")
    ]
    assert "version 1 is not the current version 2" in new.json()["message"]
    got = await sides.call_new("GET", f"{WF}/getWorkflow", tenant, {"workflow_id": workflow_id})
    assert got.json()["data"]["description"] == "first"
    not_a_number = {"workflow_id": workflow_id, "version": "x"}
    result, legacy, new = await sides.compare(
        "POST", f"{WF}/updateWorkflow", tenant, body=not_a_number
    )
    assert (legacy.status, new.status) == (200, 400)
    assert new.json()["message"] == "version must be a whole number"
    assert [(d.verdict, d.rule) for d in result.differences] == [
        (Verdict.EXPECTED, "version-not-a-number")
    ]


# --- deleting -----------------------------------------------------------------------------


async def test_deleting_a_workflow_removes_it_from_dependency_lists(
    sides: Sides, tenant: Tenant
) -> None:
    created = await sides.same(
        "POST", f"{WS}/addWorkspace", tenant, body={"workspace_name": "deps"}
    )
    ws = created["data"]["workspace_id"]
    folder = await sides.same(
        "POST", f"{WS}/addFolder", tenant, body={"workspace_id": ws, "folder_name": "f"}
    )
    fd = folder["data"]["folder_id"]
    jobs = []
    for name in ("producer", "consumer"):
        job = await sides.same(
            "POST",
            f"{WS}/addJob",
            tenant,
            body={"workspace_id": ws, "folder_id": fd, "job_name": name},
        )
        jobs.append(job["data"]["job_id"])
    workflows = []
    for name in ("a", "b", "c"):
        added = await sides.same(
            "POST", f"{WF}/addWorkflow", tenant,
            body={"workspace_id": ws, "folder_id": fd, "job_id": jobs[0], "workflow_name": name},
        )  # fmt: skip
        workflows.append(added["data"]["workflow_id"])
    a, b, c = workflows
    await sides.same(
        "POST", f"{WS}/updateJob", tenant,
        body={"workspace_id": ws, "folder_id": fd, "job_id": jobs[1], "workflow_dependency": [a, b, c]},
    )  # fmt: skip
    await sides.same("POST", f"{WF}/deleteWorkflow", tenant, body={"workflow_id": b})

    result, legacy, new = await sides.compare(
        "GET", f"{WS}/getWorkspace", tenant, {"workspace_id": ws}
    )
    legacy_lists = [j["workflow_dependency"] for j in legacy.json()["data"]["folders"][0]["jobs"]]
    new_lists = [j["workflow_dependency"] for j in new.json()["data"]["folders"][0]["jobs"]]
    assert legacy_lists == [[], [a, b, c]]  # legacy's flaw: the deleted workflow stays listed
    assert new_lists == [[], [a, c]]
    assert {(d.verdict, d.rule) for d in result.differences} == {
        (Verdict.EXPECTED, "deleted-workflow-leaves-dependencies"),
        (Verdict.EXPECTED, "deleted-workflow-leaves-dependencies-items"),
    }
    async with sides.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT workflow_id, position FROM workflow_dependencies WHERE job_id = $1 "
            "ORDER BY position",
            jobs[1],
        )
    assert [(r["workflow_id"], r["position"]) for r in rows] == [(a, 0), (c, 1)]


async def _tree_state(conn: asyncpg.Connection, workspace_id: str) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for table in ("workspaces", "folders", "jobs", "workflows", "workflow_tree_entries"):
        state[table] = await conn.fetch(
            f"SELECT is_deleted, xmin::text AS tx FROM {table} WHERE workspace_id = $1",
            workspace_id,
        )
    return state


async def test_deleting_a_workspace_cascades_in_one_transaction(
    sides: Sides, tenant: Tenant
) -> None:
    doomed = await new_tree(sides, tenant, "doomed", 3)
    kept = await new_tree(sides, tenant, "kept", 1)
    dependencies = [doomed["wf"][0], kept["wf"][0], doomed["wf"][2], "wf_00000000dead"]
    answer = await sides.call_new(
        "POST", f"{WS}/updateJob", tenant,
        body={"workspace_id": kept["ws"], "folder_id": kept["folder"], "job_id": kept["job"],
              "workflow_dependency": dependencies},
    )  # fmt: skip
    assert answer.status == 200
    async with sides.pool.acquire() as conn:
        outbox_before = await conn.fetchval("SELECT coalesce(max(id), 0) FROM migration_outbox")

    deleted = await sides.call_new(
        "POST", f"{WS}/deleteWorkspace", tenant,
        body={"workspace_id": doomed["ws"], "reason_to_delete": "done"},
    )  # fmt: skip
    assert (deleted.status, deleted.json()["data"]) == (200, {"workspace_id": doomed["ws"]})

    async with sides.pool.acquire() as conn:
        state = await _tree_state(conn, doomed["ws"])
        outbox = await conn.fetch(
            "SELECT entity, legacy_id, operation, payload ? 'activity' AS audited "
            "FROM migration_outbox WHERE id > $1 AND subscription_id = $2 ORDER BY id",
            outbox_before,
            tenant.subscription_id,
        )
        dependency_rows = await conn.fetch(
            "SELECT workflow_id FROM workflow_dependencies WHERE job_id = $1 ORDER BY position",
            kept["job"],
        )
        audit = await conn.fetch(
            "SELECT action, object_type FROM user_activity WHERE object_id = $1 AND action = 'deleted'",
            doomed["ws"],
        )
    rows = [row for table in state.values() for row in table]
    assert len(rows) == 1 + 1 + 1 + 3 + 3
    assert all(row["is_deleted"] for row in rows)
    assert len({row["tx"] for row in rows}) == 1  # every row changed by the same transaction
    assert [r["workflow_id"] for r in dependency_rows] == [kept["wf"][0], "wf_00000000dead"]
    assert [(r["action"], r["object_type"]) for r in audit] == [("deleted", "workspace")]
    assert [tuple(r) for r in outbox] == [
        ("workspaces", kept["ws"], "update", False),  # its dependency list changed
        ("workspaces", doomed["ws"], "delete", True),
        *(("workflows", workflow_id, "delete", False) for workflow_id in doomed["wf"]),
    ]
    for workflow_id in doomed["wf"]:
        gone = await sides.call_new(
            "GET", f"{WF}/getWorkflow", tenant, {"workflow_id": workflow_id}
        )
        assert gone.status == 404
    # Its name is free again; the kept workspace is whole.
    again = await sides.call_new(
        "POST", f"{WS}/addWorkspace", tenant, body={"workspace_name": "doomed"}
    )
    assert again.status == 201
    tree = await sides.call_new("GET", f"{WS}/getWorkspace", tenant, {"workspace_id": kept["ws"]})
    assert tree.json()["data"]["folders"][0]["jobs"][0]["workflows"][0]["workflow_name"] == "w0"


async def test_a_workspace_delete_failing_midway_leaves_nothing(
    migrated_database_url: str, same_ids: None, tenant: Tenant
) -> None:
    pool = await asyncpg.create_pool(migrated_database_url, min_size=1, max_size=4)
    try:
        async for sides in open_sides(pool):
            doomed = await new_tree(sides, tenant, "doomed", 3)
            async with pool.acquire() as conn:
                # The third workflow's update fails, after the folders, jobs, tree entries and
                # the first workflows were already changed inside the transaction.
                await conn.execute(
                    f"""CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN RAISE EXCEPTION 'disk on fire'; END $$;
                    CREATE TRIGGER refuse BEFORE UPDATE ON workflows FOR EACH ROW
                    WHEN (NEW.workflow_id = '{doomed["wf"][2]}' AND NEW.is_deleted)
                    EXECUTE FUNCTION refuse();"""
                )
                before = await _tree_state(conn, doomed["ws"])
                outbox_before = await conn.fetchval("SELECT count(*) FROM migration_outbox")
                audit_before = await conn.fetchval("SELECT count(*) FROM user_activity")
            answer = await sides.call_new(
                "POST", f"{WS}/deleteWorkspace", tenant, body={"workspace_id": doomed["ws"]}
            )
            assert (answer.status, answer.json()["message"]) == (500, "Internal server error")
            async with pool.acquire() as conn:
                assert await _tree_state(conn, doomed["ws"]) == before
                assert await conn.fetchval("SELECT count(*) FROM migration_outbox") == outbox_before
                assert await conn.fetchval("SELECT count(*) FROM user_activity") == audit_before
            tree = await sides.call_new(
                "GET", f"{WS}/getWorkspace", tenant, {"workspace_id": doomed["ws"]}
            )
            assert len(tree.json()["data"]["folders"][0]["jobs"][0]["workflows"]) == 3
    finally:
        await pool.close()


@pytest.mark.parametrize("level", ["folder", "job"])
async def test_deleting_a_folder_or_job_cascades_below_it(
    sides: Sides, tenant: Tenant, level: str
) -> None:
    tree = await new_tree(sides, tenant, f"cascade-{level}", 2)
    body = {"workspace_id": tree["ws"], "folder_id": tree["folder"]}
    if level == "job":
        body["job_id"] = tree["job"]
    path = f"{WS}/deleteFolder" if level == "folder" else f"{WS}/deleteJob"
    assert (await sides.call_new("POST", path, tenant, body=body)).status == 200
    async with sides.pool.acquire() as conn:
        state = await _tree_state(conn, tree["ws"])
    assert [r["is_deleted"] for r in state["workspaces"]] == [False]
    below = state["jobs"] + state["workflows"] + state["workflow_tree_entries"]
    below += state["folders"] if level == "folder" else []
    assert below and all(r["is_deleted"] for r in below)
    assert len({r["tx"] for r in below}) == 1


# --- the diagram's parsed copy ----------------------------------------------------------------


async def test_a_diagram_is_kept_as_sent_and_parsed_by_the_migrations_rule(
    sides: Sides, tenant: Tenant
) -> None:
    workflow_id = (await new_tree(sides, tenant, "diagrams", 1))["wf"][0]
    sent = {
        '{"nodes": [{"id": "n1", "x": 1.10}]}': {"nodes": [{"id": "n1", "x": 1.1}]},
        '{"nodes": [], "ratio": NaN}': None,  # legacy keeps it; jsonb cannot hold NaN
        '{"x": 1e999}': None,
        '{"nodes": [': None,
    }
    for text, parsed in sent.items():
        answer = await sides.call_new(
            "POST", f"{WF}/updateWorkflow", tenant,
            body={"workflow_id": workflow_id, "workFlowDiagram": text},
        )  # fmt: skip
        assert answer.status == 200, answer.body
        read = await sides.call_new(
            "GET", f"{WF}/getWorkflow", tenant, {"workflow_id": workflow_id}
        )
        assert read.json()["data"]["workFlowDiagram"] == text
        async with sides.pool.acquire() as conn:
            stored = await conn.fetchval(
                "SELECT workflow_diagram::text FROM workflows WHERE workflow_id = $1", workflow_id
            )
        assert (None if stored is None else json.loads(stored)) == parsed, text
