"""The emulator serves the generator's dirty data: every read and write works on it."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from legacy_emulator.app import create_app
from legacy_emulator.cli import data_source, fill_store
from legacy_emulator.export_load import dump_export
from legacy_emulator.generator import seed_store
from strangler.mongo import open_database

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
LISTS = [
    "/workspace/getAllWorkspace",
    "/connectors/getConnectors",
    "/users/getUsers",
    "/groups/getGroups",
    "/roles/getRoles",
    "/userActivity/getActivity",
    "/jobRun/getRuns",
]


@pytest.fixture
async def seeded(db):
    return await seed_store(db, scale="small", dirty=0.5, seed=7)


def _no_mongo_ids(value) -> None:
    if isinstance(value, dict):
        assert "_id" not in value
        for item in value.values():
            _no_mongo_ids(item)
    elif isinstance(value, list):
        for item in value:
            _no_mongo_ids(item)


async def test_every_list_serves_the_dirty_data_in_order(api, seeded, tenant_a) -> None:
    subscription_id, user_id = seeded.tenants[0]
    tenant = type(tenant_a)(subscription_id, user_id)
    seeded_api = api.as_(tenant)
    for path in LISTS:
        body = (await seeded_api.get(path, per_page=100)).json()
        assert body["status"] is True, (path, body)
        assert body["total"] >= len(body["data"]) > 0, path
        _no_mongo_ids(body["data"])
        assert all(item["subscription_id"] == subscription_id for item in body["data"])
        stamps = [item["created_at"] for item in body["data"]]
        readable = [stamp for stamp in stamps if stamp is not None and STAMP.match(stamp)]
        assert readable == sorted(readable, reverse=True), path


async def test_every_single_read_and_the_writes_work_on_dirty_documents(
    api, app, seeded, tenant_a
) -> None:
    subscription_id, user_id = seeded.tenants[0]
    seeded_api = api.as_(type(tenant_a)(subscription_id, user_id))
    workspaces = await seeded_api.data("GET", "/workspace/getAllWorkspace", per_page=100)
    workflow_ids: list[str] = []
    for workspace in workspaces:
        tree = await seeded_api.data(
            "GET", "/workspace/getWorkspace", workspace_id=workspace["workspace_id"]
        )
        _no_mongo_ids(tree)
        listed = await seeded_api.data(
            "GET", "/workflow/getWorkflows", workspace_id=workspace["workspace_id"], per_page=100
        )
        workflow_ids += [workflow["workflow_id"] for workflow in listed]
    assert workflow_ids
    for workflow_id in workflow_ids[:25]:
        await seeded_api.data("GET", "/workflow/getWorkflow", workflow_id=workflow_id)
        await seeded_api.data("GET", "/workflow/getVersions", workflow_id=workflow_id)
    target = workflow_ids[0]
    await seeded_api.data("POST", "/workflow/updateWorkflow", workflow_id=target, tags=["x"])
    checked_out = await seeded_api.post("/workflow/checkOut", workflow_id=target)
    assert checked_out.status_code in (200, 403)  # the seed may have it checked out by another
    run = await seeded_api.data("POST", "/workflow/runNow", workflow_id=target)
    await app.state.emulator.runner.drain()
    finished = await seeded_api.data("GET", "/jobRun/getRun", job_run_id=run["job_run_id"])
    assert finished["status"] in ("completed", "failed")

    connectors = await seeded_api.data("GET", "/connectors/getConnectors", per_page=100)
    for connector in connectors:
        detail = connector["connection_detail"]
        if isinstance(detail, dict) and detail.get("password") is not None:
            assert detail["password"] == "********"
    tested = await seeded_api.data(
        "POST", "/connectors/testConnector", connector_id=connectors[0]["connector_id"]
    )
    assert tested["test_status"] in ("success", "failed")
    users = await seeded_api.data("GET", "/users/getUsers", per_page=100)
    for user in users:
        assert "password" not in user
    groups = await seeded_api.data("GET", "/groups/getGroups")
    if groups:
        await seeded_api.data(
            "POST",
            "/groups/addUserToGroup",
            201,
            group_id=groups[0]["group_id"],
            UserId=users[0]["UserId"],
        )
    first_workspace = workspaces[0]["workspace_id"]
    await seeded_api.data(
        "POST", "/workspace/addFolder", 201, workspace_id=first_workspace, folder_name="new-one"
    )


async def test_an_export_loaded_store_serves_what_the_exported_store_served(
    api, seeded, db, tenant_a, tmp_path, secret
) -> None:
    await dump_export(db, tmp_path)
    loaded = open_database(f"memory://legacy-loaded-{uuid.uuid4().hex}")
    try:
        lines = await fill_store(loaded, data_source(str(tmp_path)))
        assert lines
        app = create_app(loaded, jwt_secret=secret, run_step_seconds=0.01)
        transport = httpx.ASGITransport(app=app)
        subscription_id, user_id = seeded.tenants[0]
        tenant = type(tenant_a)(subscription_id, user_id)
        async with httpx.AsyncClient(transport=transport, base_url="http://legacy") as http:
            from_export = api.as_(tenant)
            from_export.client = http
            original = api.as_(tenant)
            for path in LISTS:
                assert (await from_export.get(path, per_page=50)).json() == (
                    await original.get(path, per_page=50)
                ).json(), path
    finally:
        for name in await loaded.list_collection_names():
            await loaded[name].drop()
