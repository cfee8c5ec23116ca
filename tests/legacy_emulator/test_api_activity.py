"""userActivity: one entry appended per successful write, listed newest first with filters."""

from __future__ import annotations

from datetime import datetime


async def test_every_successful_write_appends_one_activity_entry(
    api, tree, new_workflow, tenant_a
) -> None:
    # make_tree wrote three things: a workspace, a folder, a job.
    workflow = await new_workflow(api, tree)
    await api.data("POST", "/workflow/updateWorkflow", workflow_id=workflow["workflow_id"])
    refused = await api.post("/workspace/addWorkspace", workspace_name="Sales")  # 409
    assert refused.status_code == 409
    body = (await api.get("/userActivity/getActivity")).json()
    assert body["total"] == 5
    entries = body["data"]
    assert [(e["action"], e["object_type"]) for e in entries] == [
        ("updated", "workflow"),
        ("created", "workflow"),
        ("created", "job"),
        ("created", "folder"),
        ("created", "workspace"),
    ]
    newest = entries[0]
    assert (newest["UserId"], newest["subscription_id"]) == (
        tenant_a.user_id,
        tenant_a.subscription_id,
    )
    assert newest["object_id"] == workflow["workflow_id"]
    assert newest["previous_data"]["workflow_id"] == workflow["workflow_id"]
    assert newest["current_data"]["workflow_name"] == "orders"
    assert newest["user_agent"].startswith("python-httpx")
    assert newest["ip_address"] == "127.0.0.1"
    assert "_id" not in newest


async def test_reads_append_nothing(api, tree) -> None:
    before = (await api.get("/userActivity/getActivity")).json()["total"]
    await api.get("/workspace/getWorkspace", workspace_id=tree.workspace_id)
    await api.get("/workspace/getAllWorkspace")
    assert (await api.get("/userActivity/getActivity")).json()["total"] == before


async def test_the_activity_insert_is_separate_from_the_write(hooked_api, hooked, db) -> None:
    async def store_fails() -> None:
        raise ConnectionError("mongod went away")

    hooked.before("userActivity", "insert_one", store_fails)
    response = await hooked_api.post("/workspace/addWorkspace", workspace_name="Kept")
    assert response.status_code == 500
    assert await db["workspace"].count_documents({"workspace_name": "Kept"}) == 1
    assert await db["userActivity"].count_documents({}) == 0


async def test_filters_and_tenant_isolation(api, db, tenant_a, tenant_b) -> None:
    def entry(n: int, user: str, object_type: str, created: object, tenant=tenant_a) -> dict:
        return {
            "subscription_id": tenant.subscription_id,
            "UserId": user,
            "action": "viewed",
            "object_type": object_type,
            "object_id": f"obj{n}",
            "created_at": created,
        }

    await db["userActivity"].insert_many(
        [
            entry(1, "usr_000000000001", "workflow", datetime(2024, 1, 1)),
            entry(2, "usr_000000000002", "workflow", "2024-02-01T00:00:00"),
            entry(3, "usr_000000000001", "connector", 1709251200000),
            entry(4, "usr_000000000001", "workflow", datetime(2024, 4, 1), tenant=tenant_b),
        ]
    )

    async def objects(**params: str) -> list[str]:
        body = (await api.get("/userActivity/getActivity", **params)).json()
        assert body["total"] == len(body["data"])
        return [e["object_id"] for e in body["data"]]

    assert await objects() == ["obj3", "obj2", "obj1"]
    assert await objects(UserId="usr_000000000001") == ["obj3", "obj1"]
    assert await objects(object_type="workflow") == ["obj2", "obj1"]
    assert await objects(object_id="obj2") == ["obj2"]
    assert await objects(**{"from": "2024-01-15 00:00:00", "to": "2024-02-28 00:00:00"}) == ["obj2"]
    last_page = (await api.get("/userActivity/getActivity", per_page="1", page="3")).json()
    assert ([e["object_id"] for e in last_page["data"]], last_page["total"]) == (["obj1"], 3)
    assert (await api.get("/userActivity/getActivity", to="someday")).status_code == 400


async def test_the_client_address_comes_from_the_last_forwarded_hop(client, tenant_a) -> None:
    headers = {**tenant_a.headers, "X-Forwarded-For": "198.51.100.7, 203.0.113.9"}
    response = await client.post(
        "/workspace/addWorkspace", json={"workspace_name": "via proxy"}, headers=headers
    )
    assert response.status_code == 201
    body = (await client.get("/userActivity/getActivity", headers=tenant_a.headers)).json()
    assert body["data"][0]["ip_address"] == "203.0.113.9"
