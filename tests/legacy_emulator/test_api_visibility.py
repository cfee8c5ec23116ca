"""Every endpoint that takes an id: 404 for a soft-deleted one and for another tenant's.

The documents are stored directly, the way old data holds them (``d_flag`` as a
boolean or as the string ``"true"``), so that the check does not depend on the
delete endpoints.
"""

from __future__ import annotations

import pytest

WS, FD, JB, WF = "ws_00000000000a", "fd_00000000000a", "jb_00000000000a", "wf_00000000000a"
CN, US, GR, RL = "cn_00000000000a", "usr_00000000000a", "grp_00000000000a", "role_00000000000a"
RUN = "run_00000000000a"

# (method, path, params or body) for each endpoint that names a stored object.
CALLS = [
    ("GET", "/workspace/getWorkspace", {"workspace_id": WS}),
    ("POST", "/workspace/updateWorkspace", {"workspace_id": WS, "workspace_name": "n"}),
    ("POST", "/workspace/deleteWorkspace", {"workspace_id": WS}),
    ("POST", "/workspace/addFolder", {"workspace_id": WS, "folder_name": "n"}),
    ("POST", "/workspace/updateFolder", {"workspace_id": WS, "folder_id": FD}),
    ("POST", "/workspace/deleteFolder", {"workspace_id": WS, "folder_id": FD}),
    ("POST", "/workspace/addJob", {"workspace_id": WS, "folder_id": FD, "job_name": "n"}),
    ("POST", "/workspace/updateJob", {"workspace_id": WS, "folder_id": FD, "job_id": JB}),
    ("POST", "/workspace/deleteJob", {"workspace_id": WS, "folder_id": FD, "job_id": JB}),
    ("POST", "/workflow/addWorkflow",
     {"workspace_id": WS, "folder_id": FD, "job_id": JB, "workflow_name": "n"}),
    ("GET", "/workflow/getWorkflow", {"workflow_id": WF}),
    ("GET", "/workflow/getWorkflows", {"workspace_id": WS}),
    ("GET", "/workflow/getWorkflows", {"job_id": JB}),
    ("POST", "/workflow/updateWorkflow", {"workflow_id": WF}),
    ("POST", "/workflow/deleteWorkflow", {"workflow_id": WF}),
    ("POST", "/workflow/checkOut", {"workflow_id": WF}),
    ("POST", "/workflow/checkIn", {"workflow_id": WF}),
    ("GET", "/workflow/getVersions", {"workflow_id": WF}),
    ("POST", "/workflow/runNow", {"workflow_id": WF}),
    ("GET", "/jobRun/getRun", {"job_run_id": RUN}),
    ("GET", "/connectors/getConnector", {"connector_id": CN}),
    ("POST", "/connectors/updateConnector", {"connector_id": CN}),
    ("POST", "/connectors/deleteConnector", {"connector_id": CN}),
    ("POST", "/connectors/testConnector", {"connector_id": CN}),
    ("GET", "/users/getUser", {"UserId": US}),
    ("POST", "/users/updateUser", {"UserId": US}),
    ("POST", "/groups/addUserToGroup", {"group_id": GR, "UserId": US}),
    ("POST", "/groups/removeUserFromGroup", {"group_id": GR, "UserId": US}),
    ("POST", "/roles/assignRole", {"role_id": RL, "UserId": US}),
]  # fmt: skip


def _documents(subscription_id: str, deleted: object) -> dict[str, dict]:
    """One stored object of each kind, every one carrying ``d_flag: deleted``."""
    common = {"subscription_id": subscription_id, "d_flag": deleted}
    summary = {"workflow_id": WF, "workflow_name": "w", "d_flag": deleted}
    job = {"job_id": JB, "job_name": "j", "d_flag": deleted, "workflows": [summary]}
    folder = {"folder_id": FD, "folder_name": "f", "d_flag": deleted, "jobs": [job]}
    return {
        "workspace": {"workspace_id": WS, "workspace_name": "w", "folders": [folder], **common},
        "workflow": {"workflow_id": WF, "workspace_id": WS, "folder_id": FD, "job_id": JB,
                     "workflow_name": "w", **common},
        "jobRun": {"job_run_id": RUN, "workflow_id": WF, "status": "completed", **common},
        "connectors": {"connector_id": CN, "connector_name": "c", "connection_detail": {},
                       **common},
        "users": {"UserId": US, "email": "u@example.com", "username": "u", **common},
        "groups": {"group_id": GR, "group_name": "g", "users": [], **common},
        "roles": {"role_id": RL, "role_name": "r", "permissions": [], "users": [], **common},
    }  # fmt: skip


async def _store(db, subscription_id: str, deleted: object) -> None:
    for collection, document in _documents(subscription_id, deleted).items():
        await db[collection].insert_one(document)


async def _call(api, method: str, path: str, fields: dict):
    return await (api.get(path, **fields) if method == "GET" else api.post(path, fields))


@pytest.mark.parametrize("deleted", [True, "true"])
async def test_soft_deleted_objects_are_404_everywhere(api, db, tenant_a, deleted) -> None:
    await _store(db, tenant_a.subscription_id, deleted)
    for method, path, fields in CALLS:
        response = await _call(api, method, path, fields)
        assert response.status_code == 404, (path, response.text)
        body = response.json()
        assert body["status"] is False and body["message"].endswith("not found"), path
    for path in ("/workspace/getAllWorkspace", "/connectors/getConnectors", "/users/getUsers",
                 "/groups/getGroups", "/roles/getRoles", "/jobRun/getRuns"):  # fmt: skip
        body = (await api.get(path)).json()
        assert (body["data"], body["total"]) == ([], 0), path


async def test_another_tenants_objects_are_404_everywhere(api_b, db, tenant_a) -> None:
    await _store(db, tenant_a.subscription_id, "false")
    for method, path, fields in CALLS:
        response = await _call(api_b, method, path, fields)
        assert response.status_code == 404, (path, response.text)


async def test_the_same_objects_are_served_to_their_own_tenant(api, db, tenant_a) -> None:
    """The two tests above fail for the right reason: visible, these calls succeed.

    Each successful write also appends exactly one userActivity entry; reads none.
    """
    await _store(db, tenant_a.subscription_id, "false")
    for method, path, fields in CALLS:
        before = await db["userActivity"].count_documents({})
        response = await _call(api, method, path, fields)
        assert response.status_code in (200, 201), (path, response.text)
        appended = await db["userActivity"].count_documents({}) - before
        assert appended == (1 if method == "POST" else 0), path
        if "/delete" in path:
            # A delete hides what the next calls need: store everything afresh.
            for collection in _documents(tenant_a.subscription_id, "false"):
                await db[collection].delete_many({})
            await _store(db, tenant_a.subscription_id, "false")
