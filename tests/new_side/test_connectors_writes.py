"""What the new side's connector writes store: one transaction holding the row, its audit
row and its outbox row; secrets sealed at rest; tenants kept apart by the database."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from new_side_support import Sides, Tenant

ADD = "/connectors/addConnector"


async def rows_as_owner(pool: asyncpg.Pool, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE strangler_sync")
        return list(await conn.fetch(sql, *args))


async def add(sides: Sides, tenant: Tenant, name: str, password: str = "pw-Secret-1") -> str:
    body = {
        "connector_name": name,
        "connector_type": "postgres",
        "connection_detail": {"host": "h", "username": "u", "password": password},
    }
    response = await sides.call_new("POST", ADD, tenant, body=body)
    assert response.status == 201, response.body
    connector_id: str = response.json()["data"]["connector_id"]
    return connector_id


async def test_each_write_commits_its_audit_row_and_outbox_row_with_it(
    sides: Sides, tenant: Tenant
) -> None:
    connector_id = await add(sides, tenant, "audited")
    for path, body in (
        ("/connectors/updateConnector", {"connector_id": connector_id, "description": "d"}),
        ("/connectors/testConnector", {"connector_id": connector_id}),
        ("/connectors/deleteConnector", {"connector_id": connector_id}),
    ):
        response = await sides.call_new("POST", path, tenant, body=body)
        assert response.status == 200, response.body
    audit = await rows_as_owner(
        sides.pool,
        "SELECT action, user_id, object_name, ip_address, previous_data, current_data "
        "FROM user_activity WHERE object_id = $1 ORDER BY created_at, action",
        connector_id,
    )
    assert sorted(row["action"] for row in audit) == ["created", "deleted", "executed", "updated"]
    assert {row["user_id"] for row in audit} == {tenant.user_id}
    assert {row["ip_address"] for row in audit} == {"203.0.113.9"}
    outbox = await rows_as_owner(
        sides.pool,
        "SELECT operation, origin, subscription_id, payload, applied_at FROM migration_outbox "
        "WHERE legacy_id = $1 ORDER BY id",
        connector_id,
    )
    assert [row["operation"] for row in outbox] == ["insert", "update", "update", "delete"]
    assert {row["origin"] for row in outbox} == {"new"}
    assert {row["subscription_id"] for row in outbox} == {tenant.subscription_id}
    assert all(row["applied_at"] is None for row in outbox)
    # No secret travels in the audit trail or the outbox: only the mask.
    for row in audit:
        assert "pw-Secret-1" not in json.dumps([row["previous_data"], row["current_data"]])
    for row in outbox:
        assert "pw-Secret-1" not in row["payload"]


async def test_a_write_failing_midway_leaves_nothing_behind(
    sides: Sides, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    import proxy.handlers.connectors as module

    async def broken_outbox(*args: Any, **kwargs: Any) -> int:
        raise asyncpg.PostgresConnectionError("connection lost while writing the outbox row")

    monkeypatch.setattr(module, "record_outbox", broken_outbox)
    body = {"connector_name": "half", "connector_type": "s3", "connection_detail": {"bucket": "b"}}
    response = await sides.call_new("POST", ADD, tenant, body=body)
    assert response.status == 500
    assert response.json() == {"status": False, "message": "Internal server error"}
    for table in ("connectors", "user_activity", "migration_outbox"):
        rows = await rows_as_owner(
            sides.pool, f"SELECT 1 FROM {table} WHERE subscription_id = $1", tenant.subscription_id
        )
        assert rows == [], f"{table} kept a row of the failed write"


async def test_passwords_are_sealed_at_rest_and_masked_in_every_answer(
    sides: Sides, tenant: Tenant
) -> None:
    connector_id = await add(sides, tenant, "sealed", password="correct-horse-battery")
    [row] = await rows_as_owner(
        sides.pool,
        "SELECT connection_detail::text AS detail, secret_ciphertext, secret_key_id "
        "FROM connectors WHERE connector_id = $1",
        connector_id,
    )
    assert "password" not in json.loads(row["detail"])
    assert row["secret_key_id"] == "k2"  # the active key
    assert b"correct-horse-battery" not in bytes(row["secret_ciphertext"])
    opened = sides.box.open_json(
        bytes(row["secret_ciphertext"]), "k2", b"uzo:connector:" + connector_id.encode()
    )
    assert opened == {"password": "correct-horse-battery"}
    dump = await rows_as_owner(
        sides.pool,
        "SELECT (SELECT string_agg(t::text, '') FROM connectors t) || "
        "(SELECT string_agg(a::text, '') FROM user_activity a) || "
        "(SELECT string_agg(o::text, '') FROM migration_outbox o) AS everything",
    )
    assert "correct-horse-battery" not in dump[0]["everything"]
    for method, path, params, body in (
        ("GET", "/connectors/getConnector", {"connector_id": connector_id}, None),
        ("GET", "/connectors/getConnectors", {}, None),
        ("POST", "/connectors/updateConnector", {}, {"connector_id": connector_id}),
    ):
        response = await sides.call_new(method, path, tenant, params, body)
        assert b"correct-horse-battery" not in response.body
        assert b'"password":"********"' in response.body


async def test_another_tenants_connector_is_404_and_untouched(
    sides: Sides, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await add(sides, other_tenant, "theirs")
    mine = await add(sides, tenant, "theirs")  # the same name is fine in another tenant
    assert mine != theirs
    for method, path, params, body in (
        ("GET", "/connectors/getConnector", {"connector_id": theirs}, None),
        ("POST", "/connectors/updateConnector", {}, {"connector_id": theirs, "description": "x"}),
        ("POST", "/connectors/testConnector", {}, {"connector_id": theirs}),
        ("POST", "/connectors/deleteConnector", {}, {"connector_id": theirs}),
    ):
        response = await sides.call_new(method, path, tenant, params, body)
        assert (response.status, response.json()["message"]) == (404, "Connector not found")
    listing = (await sides.call_new("GET", "/connectors/getConnectors", tenant)).json()
    assert [item["connector_id"] for item in listing["data"]] == [mine]
    [row] = await rows_as_owner(
        sides.pool,
        "SELECT description, is_deleted, test_status FROM connectors WHERE connector_id = $1",
        theirs,
    )
    assert (row["description"], row["is_deleted"], row["test_status"]) == (None, False, "untested")


async def test_row_level_security_not_the_handler_hides_other_tenants(
    sides: Sides, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = await add(sides, other_tenant, "rls")
    async with sides.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT set_config('app.subscription_id', $1, true)", tenant.subscription_id
        )
        await conn.execute("SET LOCAL ROLE strangler_app")
        # No tenant filter in the statement: the policy alone hides the row.
        found = await conn.fetchval(
            "SELECT count(*) FROM connectors WHERE connector_id = $1", theirs
        )
        assert found == 0


async def test_two_racing_adds_of_one_name_give_one_connector_and_one_409(
    sides: Sides, tenant: Tenant
) -> None:
    import asyncio

    body = {"connector_name": "race", "connector_type": "pg", "connection_detail": {"host": "h"}}
    first, second = await asyncio.gather(
        sides.call_new("POST", ADD, tenant, body=body),
        sides.call_new("POST", ADD, tenant, body=body),
    )
    assert sorted([first.status, second.status]) == [201, 409]
    rows = await rows_as_owner(
        sides.pool,
        "SELECT 1 FROM connectors WHERE subscription_id = $1 AND connector_name = 'race'",
        tenant.subscription_id,
    )
    assert len(rows) == 1


async def test_a_tenant_without_an_accounts_row_can_still_write(
    sides: Sides, tenant: Tenant
) -> None:
    # Legacy trusts a well-signed token whose tenant has no Accounts document; so does this.
    before = await rows_as_owner(
        sides.pool, "SELECT 1 FROM subscriptions WHERE subscription_id = $1", tenant.subscription_id
    )
    assert before == []
    await add(sides, tenant, "first-ever")
    after = await rows_as_owner(
        sides.pool,
        "SELECT company_name FROM subscriptions WHERE subscription_id = $1",
        tenant.subscription_id,
    )
    assert [row["company_name"] for row in after] == [None]
