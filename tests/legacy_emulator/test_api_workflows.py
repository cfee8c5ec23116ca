"""Workflows: documents, tree summaries, legacy's missing locking and missing transactions."""

from __future__ import annotations

import json
from datetime import datetime

from strangler.tokens import mint_token

DIAGRAM = json.dumps({"nodes": [{"id": "a"}, {"id": "b"}], "edges": [["a", "b"]]})


async def test_add_workflow_returns_version_1_and_writes_the_tree_summary(
    api, tree, db, tenant_a
) -> None:
    response = await api.post(
        "/workflow/addWorkflow",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        workflow_name="orders",
        workFlowDiagram=DIAGRAM,
        parameters={"batch": 10},
        tags=["etl"],
        source_connectorid="cn_000000000001",
    )
    assert response.status_code == 201
    workflow = response.json()["data"]
    assert workflow["workflow_id"].startswith("wf_")
    assert (workflow["version"], workflow["is_active"], workflow["is_checked_out"]) == (
        1,
        True,
        False,
    )
    assert workflow["workFlowDiagram"] == DIAGRAM
    assert (workflow["parameters"], workflow["tags"]) == ({"batch": 10}, ["etl"])
    assert workflow["environment"] == "prod"  # inherited from the job
    assert (workflow["subscription_id"], workflow["created_by"]) == (
        tenant_a.subscription_id,
        tenant_a.user_id,
    )
    fetched = await api.data("GET", "/workflow/getWorkflow", workflow_id=workflow["workflow_id"])
    assert fetched == workflow
    data = await api.data("GET", "/workspace/getWorkspace", workspace_id=tree.workspace_id)
    summaries = data["folders"][0]["jobs"][0]["workflows"]
    assert summaries == [{"workflow_id": workflow["workflow_id"], "workflow_name": "orders"}]
    stored = await db["workspace"].find_one({"workspace_id": tree.workspace_id})
    stored_summary = stored["folders"][0]["jobs"][0]["workflows"][0]
    assert stored_summary["workFlowDiagram"] == DIAGRAM


async def test_add_workflow_checks_the_tree_and_duplicate_names(api, tree, new_workflow) -> None:
    await new_workflow(api, tree, "orders")
    duplicate = await api.post(
        "/workflow/addWorkflow",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        workflow_name="orders",
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["message"] == "Workflow name already exists"
    unknown_job = await api.post(
        "/workflow/addWorkflow",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id="jb_000000000000",
        workflow_name="x",
    )
    assert (unknown_job.status_code, unknown_job.json()["message"]) == (404, "Job not found")
    bad_diagram = await api.post(
        "/workflow/addWorkflow",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        workflow_name="y",
        workFlowDiagram={"nodes": []},
    )
    assert bad_diagram.status_code == 400


async def test_add_workflow_is_not_atomic(hooked_api, hooked, db, new_tree) -> None:
    """A failure after the workflow insert leaves a workflow that no tree shows."""
    tree = await new_tree(hooked_api)

    async def store_fails() -> None:
        raise ConnectionError("mongod went away")

    hooked.before("workspace", "replace_one", store_fails)
    response = await hooked_api.post(
        "/workflow/addWorkflow",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        workflow_name="half-written",
    )
    assert response.status_code == 500
    orphan = await db["workflow"].find_one({"workflow_name": "half-written"})
    assert orphan is not None and orphan["version"] == 1
    data = await hooked_api.data("GET", "/workspace/getWorkspace", workspace_id=tree.workspace_id)
    assert data["folders"][0]["jobs"][0]["workflows"] == []
    logged = await db["userActivity"].count_documents(
        {"object_type": "workflow", "object_id": orphan["workflow_id"]}
    )
    assert logged == 0
    # The orphan is still served by id: the workflow document is authoritative.
    fetched = await hooked_api.data(
        "GET", "/workflow/getWorkflow", workflow_id=orphan["workflow_id"]
    )
    assert fetched["workflow_name"] == "half-written"


async def test_get_workflows_by_job_or_workspace_without_diagrams(
    api, tree, new_workflow, new_tree
) -> None:
    first = await new_workflow(api, tree, "a")
    second = await new_workflow(api, tree, "b")
    other_tree = await new_tree(api, "Elsewhere")
    await new_workflow(api, other_tree, "c")
    by_job = (await api.get("/workflow/getWorkflows", job_id=tree.job_id)).json()
    assert by_job["total"] == 2
    ids = [w["workflow_id"] for w in by_job["data"]]
    assert set(ids) == {first["workflow_id"], second["workflow_id"]}
    assert all("workFlowDiagram" not in w for w in by_job["data"])
    by_workspace = (
        await api.get("/workflow/getWorkflows", workspace_id=tree.workspace_id, per_page=1)
    ).json()
    assert (by_workspace["total"], len(by_workspace["data"])) == (2, 1)
    assert by_workspace["data"][0]["workflow_id"] == ids[0]
    neither = await api.get("/workflow/getWorkflows")
    assert neither.status_code == 400


async def test_dirty_stored_workflows_render_by_the_conventions(api, db, tenant_a) -> None:
    await db["workflow"].insert_one(
        {
            "workflow_id": "wf_0000000000d1",
            "subscription_id": tenant_a.subscription_id,
            "workspace_id": "ws_gone00000000",
            "workflow_name": "dirty",
            "workFlowDiagram": "{not json",
            "version": "3",
            "is_active": "true",
            "created_at": 1709296205123,
            "checked_out_at": "2024-03-01T12:30:05.123+00:00",
            "unknown": 1,
        }
    )
    data = await api.data("GET", "/workflow/getWorkflow", workflow_id="wf_0000000000d1")
    assert (data["version"], data["is_active"], data["workFlowDiagram"]) == (3, True, "{not json")
    assert (data["created_at"], data["checked_out_at"]) == (
        "2024-03-01 12:30:05",
        "2024-03-01 12:30:05",
    )
    assert data["tags"] is None and data["is_checked_out"] is None
    assert "unknown" not in data and "_id" not in data


async def test_update_workflow_ignores_version_and_the_last_writer_wins(
    api, tree, new_workflow, db
) -> None:
    workflow = await new_workflow(api, tree)
    wid = workflow["workflow_id"]
    first = await api.data(
        "POST", "/workflow/updateWorkflow", workflow_id=wid, version=1, description="first"
    )
    second = await api.data(
        "POST", "/workflow/updateWorkflow", workflow_id=wid, version=1, description="second"
    )
    assert first["version"] == second["version"] == 1  # a stale version is not refused
    assert (await api.data("GET", "/workflow/getWorkflow", workflow_id=wid))[
        "description"
    ] == "second"
    backups = await db["workflowBkp"].find({"workflow_id": wid}).to_list(None)
    assert [b.get("description") for b in backups] == [None, "first"]


async def test_renaming_a_workflow_updates_the_summary_but_not_its_diagram(
    api, tree, new_workflow, db
) -> None:
    workflow = await new_workflow(api, tree, workFlowDiagram=DIAGRAM)
    await api.data(
        "POST",
        "/workflow/updateWorkflow",
        workflow_id=workflow["workflow_id"],
        workflow_name="renamed",
        workFlowDiagram='{"nodes": [], "edges": []}',
    )
    stored = await db["workspace"].find_one({"workspace_id": tree.workspace_id})
    summary = stored["folders"][0]["jobs"][0]["workflows"][0]
    assert summary["workflow_name"] == "renamed"
    assert summary["workFlowDiagram"] == DIAGRAM  # the summary copy goes stale


async def test_delete_workflow_is_soft_and_leaves_dependencies_dangling(
    api, tree, new_workflow
) -> None:
    upstream = await new_workflow(api, tree, "upstream")
    await api.data(
        "POST",
        "/workspace/updateJob",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        workflow_dependency=[upstream["workflow_id"]],
    )
    deleted = await api.data(
        "POST", "/workflow/deleteWorkflow", workflow_id=upstream["workflow_id"]
    )
    assert deleted == {"workflow_id": upstream["workflow_id"]}
    gone = await api.get("/workflow/getWorkflow", workflow_id=upstream["workflow_id"])
    assert gone.status_code == 404
    job = (await api.data("GET", "/workspace/getWorkspace", workspace_id=tree.workspace_id))[
        "folders"
    ][0]["jobs"][0]
    assert job["workflows"] == []
    assert job["workflow_dependency"] == [upstream["workflow_id"]]


async def test_another_tenants_workflow_is_a_404(api, api_b, tree, new_workflow) -> None:
    wid = (await new_workflow(api, tree))["workflow_id"]
    assert (await api_b.get("/workflow/getWorkflow", workflow_id=wid)).status_code == 404
    assert (await api_b.get("/workflow/getVersions", workflow_id=wid)).status_code == 404
    for path in (
        "/workflow/updateWorkflow",
        "/workflow/deleteWorkflow",
        "/workflow/checkOut",
        "/workflow/checkIn",
        "/workflow/runNow",
    ):
        response = await api_b.post(path, workflow_id=wid, description="x")
        assert response.status_code == 404, path
        assert response.json() == {"status": False, "message": "Workflow not found"}
    listed = (await api_b.get("/workflow/getWorkflows", job_id=tree.job_id)).status_code
    assert listed == 404


async def test_check_out_then_check_in_bumps_the_version_and_records_history(
    api, tree, new_workflow, tenant_a
) -> None:
    wid = (await new_workflow(api, tree))["workflow_id"]
    out = await api.data("POST", "/workflow/checkOut", workflow_id=wid)
    assert (out["is_checked_out"], out["checked_out_by"]) == (True, tenant_a.user_id)
    assert out["checked_out_at"] is not None and out["version"] == 1
    back = await api.data("POST", "/workflow/checkIn", workflow_id=wid, comment="tuned")
    assert (back["version"], back["is_checked_out"], back["checked_out_by"]) == (2, False, None)
    await api.data("POST", "/workflow/checkIn", workflow_id=wid, comment="again")
    body = (await api.get("/workflow/getVersions", workflow_id=wid)).json()
    assert body["total"] == 3
    entries = body["data"]
    assert [(e["version_number"], e["change_type"]) for e in entries] == [
        (3, "check_in"),
        (2, "check_in"),
        (1, "check_out"),
    ]
    assert entries[1]["comment"] == "tuned"
    assert entries[1]["workflow_snapshot"]["version"] == 2
    assert entries[1]["workflow_snapshot"]["workflow_id"] == wid
    page_two = (await api.get("/workflow/getVersions", workflow_id=wid, per_page=2, page=2)).json()
    assert [e["version_number"] for e in page_two["data"]] == [1]


async def test_a_workflow_checked_out_by_someone_else_is_refused(
    api, tree, new_workflow, secret, tenant_a
) -> None:
    wid = (await new_workflow(api, tree))["workflow_id"]
    await api.data("POST", "/workflow/checkOut", workflow_id=wid)
    colleague = {
        "Authorization": "Bearer "
        + mint_token(secret, "usr_cccccccccccc", tenant_a.subscription_id)
    }
    for path in ("/workflow/checkOut", "/workflow/checkIn"):
        response = await api.client.post(path, json={"workflow_id": wid}, headers=colleague)
        assert response.status_code == 403
        assert tenant_a.user_id in response.json()["message"]
    # updateWorkflow does not look at the check-out (legacy never enforced it there).
    edit = await api.client.post(
        "/workflow/updateWorkflow",
        json={"workflow_id": wid, "description": "sneaky"},
        headers=colleague,
    )
    assert edit.status_code == 200
    assert (await api.post("/workflow/checkOut", workflow_id=wid)).status_code == 200


async def test_dirty_stored_versions_render_and_order_newest_first(
    api, tree, new_workflow, db
) -> None:
    wid = (await new_workflow(api, tree))["workflow_id"]
    await db["workflow_versions"].insert_many(
        [
            {"workflow_id": wid, "version_number": "2", "change_type": "check_in",
             "created_at": "2024-02-01T00:00:00.000Z",
             "workflow_snapshot": {"_id": "x", "version": 2, "at": datetime(2024, 2, 1)}},
            {"workflow_id": wid, "version_number": 3, "change_type": "restore",
             "created_at": 1709251200000},
            {"workflow_id": wid, "version_number": "1", "change_type": "check_in",
             "created_at": "2024-02-01 00:00:00"},  # same moment as version 2
        ]
    )  # fmt: skip
    entries = await api.data("GET", "/workflow/getVersions", workflow_id=wid)
    assert [e["version_number"] for e in entries] == [3, 2, 1]
    assert entries[0]["created_at"] == "2024-03-01 00:00:00"
    assert entries[1]["workflow_snapshot"] == {"version": 2, "at": "2024-02-01 00:00:00"}
    assert entries[0]["comment"] is None and entries[0]["workflow_snapshot"] is None
