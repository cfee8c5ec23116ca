"""LEGACY.md section 1 conventions, checked on every endpoint of section 3."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from strangler.tokens import mint_token

# Every HTTP endpoint of LEGACY.md section 3, as the contract lists it.
GETS = [
    "/workspace/getAllWorkspace",
    "/workspace/getWorkspace",
    "/workflow/getWorkflow",
    "/workflow/getWorkflows",
    "/workflow/getVersions",
    "/jobRun/getRuns",
    "/jobRun/getRun",
    "/connectors/getConnectors",
    "/connectors/getConnector",
    "/users/getUsers",
    "/users/getUser",
    "/groups/getGroups",
    "/roles/getRoles",
    "/userActivity/getActivity",
]
POSTS = [
    "/workspace/addWorkspace",
    "/workspace/updateWorkspace",
    "/workspace/deleteWorkspace",
    "/workspace/addFolder",
    "/workspace/updateFolder",
    "/workspace/deleteFolder",
    "/workspace/addJob",
    "/workspace/updateJob",
    "/workspace/deleteJob",
    "/workflow/addWorkflow",
    "/workflow/updateWorkflow",
    "/workflow/deleteWorkflow",
    "/workflow/checkOut",
    "/workflow/checkIn",
    "/workflow/runNow",
    "/connectors/addConnector",
    "/connectors/updateConnector",
    "/connectors/deleteConnector",
    "/connectors/testConnector",
    "/users/addUser",
    "/users/updateUser",
    "/groups/addGroup",
    "/groups/addUserToGroup",
    "/groups/removeUserFromGroup",
    "/roles/addRole",
    "/roles/assignRole",
]
LISTS = [
    "/workspace/getAllWorkspace",
    "/connectors/getConnectors",
    "/users/getUsers",
    "/groups/getGroups",
    "/roles/getRoles",
    "/userActivity/getActivity",
    "/jobRun/getRuns",
]
ENDPOINTS = [("GET", path) for path in GETS] + [("POST", path) for path in POSTS]


def test_the_app_serves_exactly_the_contracts_endpoints(app: Starlette) -> None:
    served = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in (route.methods or ()) - {"HEAD"}
    }
    assert served == set(ENDPOINTS)
    sockets = {route.path for route in app.routes if not isinstance(route, Route)}
    assert sockets == {"/ws/runNow/{workflow_id}", "/ws/activity"}


def _bad_tokens(secret: str, tenant) -> dict[str, dict[str, str]]:
    expired = mint_token(secret, tenant.user_id, tenant.subscription_id, ttl_seconds=-60)
    forged = mint_token("some-other-secret-of-enough-length", tenant.user_id, "sub_1")
    return {
        "missing": {},
        "not bearer": {"Authorization": f"Basic {tenant.token}"},
        "malformed": {"Authorization": "Bearer not-a-jwt"},
        "badly signed": {"Authorization": f"Bearer {forged}"},
        "expired": {"Authorization": f"Bearer {expired}"},
    }


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
async def test_every_endpoint_answers_401_to_every_bad_token(
    client: httpx.AsyncClient, secret: str, tenant_a, method: str, path: str
) -> None:
    for case, headers in _bad_tokens(secret, tenant_a).items():
        response = await client.request(method, path, headers=headers, json={})
        assert response.status_code == 401, case
        assert response.json() == {"status": False, "message": "Invalid token"}, case


@pytest.mark.parametrize("path", POSTS)
async def test_every_post_answers_400_to_a_body_that_is_not_a_json_object(
    client: httpx.AsyncClient, tenant_a, path: str
) -> None:
    for body in (b"{not json", b"", b"[1, 2]", b'"text"', b"42", b"\xff\xfe"):
        response = await client.post(path, content=body, headers=tenant_a.headers)
        assert response.status_code == 400, body
        assert response.json() == {
            "status": False,
            "message": "Request body must be a JSON object",
        }


@pytest.mark.parametrize("path", POSTS)
async def test_every_post_answers_400_when_a_required_field_is_missing(api, path: str) -> None:
    response = await api.post(path, {})
    assert response.status_code == 400
    body = response.json()
    assert body["status"] is False
    assert body["message"].endswith("is required")


@pytest.mark.parametrize("path", LISTS)
async def test_every_list_rejects_bad_paging_and_clamps_per_page(api, path: str) -> None:
    for page, per_page in (("0", "10"), ("-1", "10"), ("x", "10"), ("1", "0"), ("1", "-5")):
        response = await api.get(path, page=page, per_page=per_page)
        assert response.status_code == 400, (page, per_page)
        assert response.json()["status"] is False
    response = await api.get(path, page="1", per_page="100000")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "message", "data", "total"}
    assert body["status"] is True and isinstance(body["total"], int)


async def test_per_page_above_100_is_clamped_to_100(api, db, tenant_a) -> None:
    await api.data("POST", "/roles/addRole", 201, role_name="seed", permissions=[])
    documents = [
        {"role_id": f"role_{i:012x}", "subscription_id": tenant_a.subscription_id,
         "role_name": f"r{i}", "permissions": []}
        for i in range(130)
    ]  # fmt: skip
    await db["roles"].insert_many(documents)
    body = (await api.get("/roles/getRoles", per_page="500")).json()
    assert len(body["data"]) == 100
    assert body["total"] == 131
    second = (await api.get("/roles/getRoles", per_page="500", page="2")).json()
    assert len(second["data"]) == 31


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/workspace/getWorkspace", "workspace_id"),
        ("/workflow/getWorkflow", "workflow_id"),
        ("/workflow/getVersions", "workflow_id"),
        ("/jobRun/getRun", "job_run_id"),
        ("/connectors/getConnector", "connector_id"),
        ("/users/getUser", "UserId"),
    ],
)
async def test_single_gets_need_their_id_and_404_an_unknown_one(api, path: str, param: str) -> None:
    missing = await api.get(path)
    assert missing.status_code == 400
    assert missing.json() == {"status": False, "message": f"{param} is required"}
    unknown = await api.get(path, **{param: "xx_000000000000"})
    assert unknown.status_code == 404
    assert unknown.json()["status"] is False


async def test_unknown_paths_and_wrong_methods_answer_in_the_envelope(api) -> None:
    missing = await api.get("/workspace/nothingHere")
    assert (missing.status_code, missing.json()["status"]) == (404, False)
    wrong = await api.get("/workspace/addWorkspace")
    assert (wrong.status_code, wrong.json()["status"]) == (405, False)


async def test_ids_are_a_prefix_and_12_lowercase_hex(tree) -> None:
    for value, prefix in (
        (tree.workspace_id, "ws_"),
        (tree.folder_id, "fd_"),
        (tree.job_id, "jb_"),
    ):
        assert value.startswith(prefix)
        tail = value[len(prefix) :]
        assert len(tail) == 12 and tail == tail.lower() and int(tail, 16) >= 0


async def test_an_unexpected_store_failure_is_a_500_envelope(hooked_api, hooked) -> None:
    async def broken() -> None:
        raise RuntimeError("disk on fire")

    hooked.before("roles", "insert_one", broken)
    response = await hooked_api.post("/roles/addRole", role_name="r", permissions=[])
    assert response.status_code == 500
    assert response.json() == {"status": False, "message": "Internal server error"}
