"""Workspaces: add/get/list/update/delete, ordering, tenants, dirty stored documents."""

from __future__ import annotations

from datetime import UTC, datetime

WORKSPACE_KEYS = {
    "workspace_id", "workspace_name", "description", "subscription_id", "owner_id",
    "created_by", "created_at", "updated_by", "updated_at",
}  # fmt: skip


async def test_add_workspace_returns_201_and_the_stored_workspace(api, tenant_a) -> None:
    response = await api.post("/workspace/addWorkspace", workspace_name="Sales", description="d")
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["message"]) == (True, "Workspace added successfully")
    workspace = body["data"]
    assert set(workspace) == WORKSPACE_KEYS
    assert workspace["workspace_name"] == "Sales"
    assert workspace["subscription_id"] == tenant_a.subscription_id
    assert workspace["owner_id"] == workspace["created_by"] == tenant_a.user_id
    datetime.strptime(workspace["created_at"], "%Y-%m-%d %H:%M:%S")
    fetched = await api.data(
        "GET", "/workspace/getWorkspace", workspace_id=workspace["workspace_id"]
    )
    assert fetched == {**workspace, "folders": []}


async def test_workspace_names_are_unique_per_tenant_among_visible_ones(api, api_b) -> None:
    first = await api.data("POST", "/workspace/addWorkspace", 201, workspace_name="Ops")
    duplicate = await api.post("/workspace/addWorkspace", workspace_name="Ops")
    assert duplicate.status_code == 409
    assert duplicate.json() == {"status": False, "message": "Workspace name already exists"}
    assert (await api_b.post("/workspace/addWorkspace", workspace_name="Ops")).status_code == 201
    other = await api.data("POST", "/workspace/addWorkspace", 201, workspace_name="Other")
    rename = await api.post(
        "/workspace/updateWorkspace", workspace_id=other["workspace_id"], workspace_name="Ops"
    )
    assert rename.status_code == 409
    await api.data("POST", "/workspace/deleteWorkspace", workspace_id=first["workspace_id"])
    assert (await api.post("/workspace/addWorkspace", workspace_name="Ops")).status_code == 201


async def test_list_is_newest_first_then_id_and_pages_with_a_total(api, db, tenant_a) -> None:
    moment = datetime(2024, 5, 1, 10, 0, 0, 250000)
    rows = [
        ("ws_00000000000b", moment),
        ("ws_00000000000a", moment),  # same millisecond: the id decides
        ("ws_00000000000c", "2024-05-02T08:00:00Z"),  # an old document's string date
        ("ws_00000000000d", 1714000000000),  # epoch milliseconds (2024-04-24)
        ("ws_00000000000e", "not a date"),  # unreadable: sorts last
    ]
    await db["workspace"].insert_many(
        [
            {
                "workspace_id": wid,
                "workspace_name": wid,
                "subscription_id": tenant_a.subscription_id,
                "created_at": created,
            }
            for wid, created in rows
        ]
    )
    body = (await api.get("/workspace/getAllWorkspace", per_page=2)).json()
    assert body["total"] == 5
    assert [w["workspace_id"] for w in body["data"]] == ["ws_00000000000c", "ws_00000000000a"]
    rest = (await api.get("/workspace/getAllWorkspace", per_page=2, page=2)).json()
    assert [w["workspace_id"] for w in rest["data"]] == ["ws_00000000000b", "ws_00000000000d"]
    last = (await api.get("/workspace/getAllWorkspace", per_page=2, page=3)).json()
    assert [w["workspace_id"] for w in last["data"]] == ["ws_00000000000e"]
    beyond = (await api.get("/workspace/getAllWorkspace", per_page=2, page=9)).json()
    assert (beyond["data"], beyond["total"]) == ([], 5)
    assert "folders" not in body["data"][0]


async def test_dirty_stored_workspaces_render_by_the_conventions(api, db, tenant_a) -> None:
    await db["workspace"].insert_one(
        {
            "workspace_id": "ws_0000000000d1",
            "workspace_name": "Dirty",
            "subscription_id": tenant_a.subscription_id,
            "created_at": "03/01/2024 12:30:05 PM",
            "updated_at": 1709296205123,
            "d_flag": "false",
            "legacy_extra": {"x": 1},
            "folders": [
                {"folder_id": "fd_0000000000d1", "folder_name": "F", "d_flag": "true"},
                {
                    "folder_id": "fd_0000000000d2",
                    "folder_name": "G",
                    "jobs": None,
                    "created_at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
                },
                "garbage entry",
            ],
        }
    )
    data = await api.data("GET", "/workspace/getWorkspace", workspace_id="ws_0000000000d1")
    assert data["created_at"] == "2024-03-01 12:30:05"
    assert data["updated_at"] == "2024-03-01 12:30:05"
    assert data["description"] is None and data["owner_id"] is None  # missing -> null
    assert "legacy_extra" not in data and "_id" not in data and "d_flag" not in data
    assert data["folders"] == [
        {"folder_id": "fd_0000000000d2", "folder_name": "G", "description": None,
         "created_by": None, "created_at": "2024-01-02 03:04:05", "jobs": []}
    ]  # fmt: skip


async def test_another_tenants_workspace_is_a_404_everywhere(api, api_b) -> None:
    mine = await api.data("POST", "/workspace/addWorkspace", 201, workspace_name="Mine")
    wid = mine["workspace_id"]
    assert (await api_b.get("/workspace/getWorkspace", workspace_id=wid)).status_code == 404
    for path, body in (
        ("/workspace/updateWorkspace", {"workspace_id": wid, "workspace_name": "Theirs"}),
        ("/workspace/deleteWorkspace", {"workspace_id": wid}),
        ("/workspace/addFolder", {"workspace_id": wid, "folder_name": "F"}),
    ):
        response = await api_b.post(path, body)
        assert response.status_code == 404
        assert response.json() == {"status": False, "message": "Workspace not found"}
    assert (await api_b.get("/workspace/getAllWorkspace")).json()["total"] == 0
    assert (await api.data("GET", "/workspace/getWorkspace", workspace_id=wid))[
        "workspace_name"
    ] == "Mine"


async def test_update_changes_only_what_is_given(api, tenant_a) -> None:
    ws = await api.data(
        "POST", "/workspace/addWorkspace", 201, workspace_name="A", description="keep"
    )
    updated = await api.data(
        "POST", "/workspace/updateWorkspace", workspace_id=ws["workspace_id"], workspace_name="B"
    )
    assert (updated["workspace_name"], updated["description"]) == ("B", "keep")
    assert updated["updated_by"] == tenant_a.user_id
    assert updated["created_at"] == ws["created_at"]
    bad = await api.post(
        "/workspace/updateWorkspace", workspace_id=ws["workspace_id"], workspace_name=""
    )
    assert bad.status_code == 400


async def test_delete_is_soft_and_hides_the_workspace(api, db) -> None:
    ws = await api.data("POST", "/workspace/addWorkspace", 201, workspace_name="Old")
    wid = ws["workspace_id"]
    deleted = await api.data(
        "POST", "/workspace/deleteWorkspace", workspace_id=wid, reason_to_delete="unused"
    )
    assert deleted == {"workspace_id": wid}
    assert (await api.get("/workspace/getWorkspace", workspace_id=wid)).status_code == 404
    assert (await api.get("/workspace/getAllWorkspace")).json()["total"] == 0
    again = await api.post("/workspace/deleteWorkspace", workspace_id=wid)
    assert again.status_code == 404
    document = await db["workspace"].find_one({"workspace_id": wid})
    assert document["d_flag"] is True and document["reason_to_delete"] == "unused"


async def test_a_workspace_stored_deleted_as_a_string_flag_is_hidden(api, db, tenant_a) -> None:
    await db["workspace"].insert_one(
        {"workspace_id": "ws_0000000000f1", "subscription_id": tenant_a.subscription_id,
         "workspace_name": "gone", "d_flag": "true"}
    )  # fmt: skip
    response = await api.get("/workspace/getWorkspace", workspace_id="ws_0000000000f1")
    assert response.status_code == 404
    assert (await api.get("/workspace/getAllWorkspace")).json()["total"] == 0
