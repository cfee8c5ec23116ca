"""Connectors: plain-text passwords in storage, masked everywhere they leave it."""

from __future__ import annotations

from datetime import UTC, datetime

DETAIL = {"host": "db.internal", "port": 5432, "database": "sales", "username": "etl",
          "password": "hunter2", "sslmode": "require"}  # fmt: skip


async def _add(api, name: str = "warehouse", **fields) -> dict:
    body = {"connector_name": name, "connector_type": "postgres", "connection_detail": DETAIL}
    return await api.data("POST", "/connectors/addConnector", 201, **{**body, **fields})


async def test_add_connector_stores_the_password_in_plain_text_and_masks_it(api, db) -> None:
    connector = await _add(api, description="main")
    assert connector["connector_id"].startswith("cn_")
    assert connector["connection_detail"] == {**DETAIL, "password": "********"}
    assert (connector["test_status"], connector["is_active"]) == ("untested", True)
    assert connector["last_tested_at"] is None
    stored = await db["connectors"].find_one({"connector_id": connector["connector_id"]})
    assert stored["connection_detail"]["password"] == "hunter2"  # the legacy flaw, kept
    fetched = await api.data(
        "GET", "/connectors/getConnector", connector_id=connector["connector_id"]
    )
    assert fetched == connector
    activity = await db["userActivity"].find_one({"object_id": connector["connector_id"]})
    assert "hunter2" not in repr(activity)


async def test_connector_names_are_unique_and_the_type_filter_works(api, app) -> None:
    moments = iter(datetime(2024, 5, 1, 12, 0, second, tzinfo=UTC) for second in range(60))
    app.state.emulator.clock = lambda: next(moments)  # a before b, never the same millisecond
    await _add(api, "a")
    await _add(api, "b", connector_type="s3", connection_detail={"bucket": "x"})
    duplicate = await api.post(
        "/connectors/addConnector",
        connector_name="a",
        connector_type="mysql",
        connection_detail={},
    )
    assert duplicate.status_code == 409
    only_s3 = (await api.get("/connectors/getConnectors", connector_type="s3")).json()
    assert [c["connector_name"] for c in only_s3["data"]] == ["b"]
    assert only_s3["total"] == 1
    everything = (await api.get("/connectors/getConnectors")).json()
    assert [c["connector_name"] for c in everything["data"]] == ["b", "a"]
    missing_detail = await api.post(
        "/connectors/addConnector", connector_name="c", connector_type="postgres"
    )
    assert missing_detail.status_code == 400


async def test_update_keeps_the_stored_password_when_the_mask_comes_back(api, db) -> None:
    connector = await _add(api)
    cid = connector["connector_id"]
    updated = await api.data(
        "POST",
        "/connectors/updateConnector",
        connector_id=cid,
        connection_detail=connector["connection_detail"] | {"host": "db2.internal"},
        is_active=False,
    )
    assert updated["connection_detail"]["host"] == "db2.internal"
    assert updated["connection_detail"]["password"] == "********"
    assert updated["is_active"] is False
    stored = await db["connectors"].find_one({"connector_id": cid})
    assert stored["connection_detail"]["password"] == "hunter2"
    await api.data(
        "POST",
        "/connectors/updateConnector",
        connector_id=cid,
        connection_detail=DETAIL | {"password": "new-secret"},
    )
    stored = await db["connectors"].find_one({"connector_id": cid})
    assert stored["connection_detail"]["password"] == "new-secret"


async def test_test_connector_reports_and_stores_the_outcome(api) -> None:
    good = await _add(api, "good")
    bad = await _add(api, "bad", connection_detail={"port": 1})
    result = await api.data("POST", "/connectors/testConnector", connector_id=good["connector_id"])
    assert set(result) == {"test_status", "last_tested_at"}
    assert result["test_status"] == "success"
    failed = await api.data("POST", "/connectors/testConnector", connector_id=bad["connector_id"])
    assert failed["test_status"] == "failed"
    fetched = await api.data("GET", "/connectors/getConnector", connector_id=good["connector_id"])
    assert (fetched["test_status"], fetched["last_tested_at"]) == (
        "success",
        result["last_tested_at"],
    )


async def test_deleted_and_foreign_connectors_are_404(api, api_b) -> None:
    connector = await _add(api)
    cid = connector["connector_id"]
    for path in ("/connectors/updateConnector", "/connectors/testConnector",
                 "/connectors/deleteConnector"):  # fmt: skip
        assert (await api_b.post(path, connector_id=cid)).status_code == 404
    assert (await api_b.get("/connectors/getConnector", connector_id=cid)).status_code == 404
    deleted = await api.data("POST", "/connectors/deleteConnector", connector_id=cid)
    assert deleted == {"connector_id": cid}
    assert (await api.get("/connectors/getConnector", connector_id=cid)).status_code == 404
    assert (await api.get("/connectors/getConnectors")).json()["total"] == 0


async def test_dirty_stored_connectors_render_masked_and_normalised(api, db, tenant_a) -> None:
    await db["connectors"].insert_one(
        {"connector_id": "cn_0000000000d1", "subscription_id": tenant_a.subscription_id,
         "connector_name": "old", "connection_detail": {"host": "h", "password": "pw"},
         "is_active": "false", "created_at": "2023-06-01T10:00:00.000Z", "d_flag": "false"}
    )  # fmt: skip
    data = await api.data("GET", "/connectors/getConnector", connector_id="cn_0000000000d1")
    assert data["connection_detail"] == {"host": "h", "password": "********"}
    assert (data["is_active"], data["created_at"]) == (False, "2023-06-01 10:00:00")
    assert data["test_status"] is None and data["description"] is None
