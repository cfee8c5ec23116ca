"""Folders and jobs inside the workspace document, and legacy's whole-document rewrites."""

from __future__ import annotations


async def test_add_folder_and_job_return_201_and_appear_in_the_tree(api, tenant_a) -> None:
    ws = await api.data("POST", "/workspace/addWorkspace", 201, workspace_name="W")
    folder = await api.data(
        "POST",
        "/workspace/addFolder",
        201,
        workspace_id=ws["workspace_id"],
        folder_name="F",
        description="fd",
    )
    assert set(folder) == {
        "folder_id", "folder_name", "description", "created_by", "created_at", "jobs"
    }  # fmt: skip
    assert (folder["folder_name"], folder["jobs"], folder["created_by"]) == (
        "F",
        [],
        tenant_a.user_id,
    )
    job = await api.data(
        "POST",
        "/workspace/addJob",
        201,
        workspace_id=ws["workspace_id"],
        folder_id=folder["folder_id"],
        job_name="J",
        environment="dev",
    )
    assert (job["job_name"], job["environment"]) == ("J", "dev")
    assert (job["workflow_dependency"], job["workflows"]) == ([], [])
    tree = await api.data("GET", "/workspace/getWorkspace", workspace_id=ws["workspace_id"])
    assert tree["folders"] == [{**folder, "jobs": [job]}]


async def test_folder_and_job_names_are_unique_within_their_parent(api, tree) -> None:
    dup_folder = await api.post(
        "/workspace/addFolder", workspace_id=tree.workspace_id, folder_name="Daily"
    )
    assert dup_folder.status_code == 409
    assert dup_folder.json()["message"] == "Folder name already exists"
    dup_job = await api.post(
        "/workspace/addJob",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_name="Load",
    )
    assert dup_job.status_code == 409
    other = await api.data(
        "POST", "/workspace/addFolder", 201, workspace_id=tree.workspace_id, folder_name="Other"
    )
    same_name_elsewhere = await api.post(
        "/workspace/addJob",
        workspace_id=tree.workspace_id,
        folder_id=other["folder_id"],
        job_name="Load",
    )
    assert same_name_elsewhere.status_code == 201


async def test_update_folder_and_job(api, tree) -> None:
    folder = await api.data(
        "POST",
        "/workspace/updateFolder",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        folder_name="Nightly",
    )
    assert folder["folder_name"] == "Nightly" and len(folder["jobs"]) == 1
    job = await api.data(
        "POST",
        "/workspace/updateJob",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        environment="qa",
        workflow_dependency=["wf_000000000001", "wf_doesnotexist"],
    )
    assert (job["job_name"], job["environment"]) == ("Load", "qa")
    # Legacy keeps the list as given, without checking the ids.
    assert job["workflow_dependency"] == ["wf_000000000001", "wf_doesnotexist"]
    bad = await api.post(
        "/workspace/updateJob",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        workflow_dependency="wf_1",
    )
    assert bad.status_code == 400


async def test_deleting_a_folder_hides_it_and_everything_below(api, tree, new_workflow) -> None:
    workflow = await new_workflow(api, tree)
    deleted = await api.data(
        "POST", "/workspace/deleteFolder", workspace_id=tree.workspace_id, folder_id=tree.folder_id
    )
    assert deleted == {"folder_id": tree.folder_id}
    data = await api.data("GET", "/workspace/getWorkspace", workspace_id=tree.workspace_id)
    assert data["folders"] == []
    for path, params in (
        ("/workflow/getWorkflow", {"workflow_id": workflow["workflow_id"]}),
        ("/workflow/getVersions", {"workflow_id": workflow["workflow_id"]}),
    ):
        assert (await api.get(path, **params)).status_code == 404
    listed = (await api.get("/workflow/getWorkflows", workspace_id=tree.workspace_id)).json()
    assert (listed["data"], listed["total"]) == ([], 0)
    add_job = await api.post(
        "/workspace/addJob",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_name="X",
    )
    assert add_job.status_code == 404
    assert add_job.json() == {"status": False, "message": "Folder not found"}


async def test_deleting_a_job_hides_its_workflows(api, tree, new_workflow, db) -> None:
    workflow = await new_workflow(api, tree)
    deleted = await api.data(
        "POST",
        "/workspace/deleteJob",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        reason_to_delete="obsolete",
    )
    assert deleted == {"job_id": tree.job_id}
    data = await api.data("GET", "/workspace/getWorkspace", workspace_id=tree.workspace_id)
    assert data["folders"][0]["jobs"] == []
    gone = await api.get("/workflow/getWorkflow", workflow_id=workflow["workflow_id"])
    assert gone.status_code == 404
    assert (await api.get("/workflow/getWorkflows", job_id=tree.job_id)).status_code == 404
    run = await api.post("/workflow/runNow", workflow_id=workflow["workflow_id"])
    assert run.status_code == 404
    # The workflow document itself is untouched: only the tree says it is gone.
    stored = await db["workflow"].find_one({"workflow_id": workflow["workflow_id"]})
    assert stored["d_flag"] is False


async def test_deleting_a_workspace_hides_its_workflows(api, tree, new_workflow) -> None:
    workflow = await new_workflow(api, tree)
    await api.data("POST", "/workspace/deleteWorkspace", workspace_id=tree.workspace_id)
    gone = await api.get("/workflow/getWorkflow", workflow_id=workflow["workflow_id"])
    assert gone.status_code == 404


async def test_unknown_or_deleted_nodes_and_other_tenants_are_404(api, api_b, tree) -> None:
    for body, message in (
        ({"folder_id": "fd_000000000000", "folder_name": "x"}, "Folder not found"),
        ({"folder_id": tree.folder_id, "job_id": "jb_000000000000"}, "Job not found"),
    ):
        path = "/workspace/updateJob" if "job_id" in body else "/workspace/updateFolder"
        response = await api.post(path, {"workspace_id": tree.workspace_id, **body})
        assert response.status_code == 404
        assert response.json()["message"] == message
    theirs = await api_b.post(
        "/workspace/deleteJob",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
    )
    assert theirs.status_code == 404
    await api.data(
        "POST",
        "/workspace/deleteJob",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
    )
    again = await api.post(
        "/workspace/updateJob",
        workspace_id=tree.workspace_id,
        folder_id=tree.folder_id,
        job_id=tree.job_id,
        job_name="back",
    )
    assert again.status_code == 404


async def test_a_tree_edit_rewrites_the_whole_document_keeping_what_it_read(api, tree, db) -> None:
    await db["workspace"].update_one(
        {"workspace_id": tree.workspace_id},
        {"$set": {"legacy_extra": "kept", "folders.0.created_at": "2020-01-01T00:00:00Z"}},
    )
    await api.data(
        "POST", "/workspace/addFolder", 201, workspace_id=tree.workspace_id, folder_name="New"
    )
    document = await db["workspace"].find_one({"workspace_id": tree.workspace_id})
    assert document["legacy_extra"] == "kept"  # unknown fields survive the rewrite
    assert document["folders"][0]["created_at"] == "2020-01-01T00:00:00Z"  # stored as found
    assert [f["folder_name"] for f in document["folders"]] == ["Daily", "New"]


async def test_concurrent_tree_edits_lose_one_of_them(hooked_api, hooked, new_tree) -> None:
    """Legacy's race: another edit landing between this one's read and its write is lost."""
    tree = await new_tree(hooked_api)

    async def another_request() -> None:
        response = await hooked_api.post(
            "/workspace/addFolder", workspace_id=tree.workspace_id, folder_name="Theirs"
        )
        assert response.status_code == 201

    hooked.before("workspace", "replace_one", another_request)
    mine = await hooked_api.post(
        "/workspace/addFolder", workspace_id=tree.workspace_id, folder_name="Mine"
    )
    assert mine.status_code == 201
    data = await hooked_api.data("GET", "/workspace/getWorkspace", workspace_id=tree.workspace_id)
    assert [f["folder_name"] for f in data["folders"]] == ["Daily", "Mine"]
