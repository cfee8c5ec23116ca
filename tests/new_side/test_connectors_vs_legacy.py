"""Every connectors endpoint answered by the new side exactly as legacy answers it.

Each case sends the same request to the legacy emulator and to the PostgreSQL handlers,
both holding the same connectors, and compares the two answers with the shadow
comparator under the project's declared rules (shadow_rules.yaml): same status, same
body. The only substitution is the id a create mints, which each side draws at random.
"""

# ruff: noqa: E501  (the request tables read best one case per line)
from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from new_side_support import NOW, Sides, Tenant, connector_document

from shadow_compare.compare import compare_responses
from shadow_compare.rules import load_rules
from strangler.exchange import RecordedRequest, RecordedResponse

RULES = load_rules(Path(__file__).resolve().parents[2] / "shadow_rules.yaml").for_entity(
    "connectors"
)


def assert_same(legacy: RecordedResponse, new: RecordedResponse, endpoint: str) -> None:
    result = compare_responses(legacy, new, RULES, endpoint=endpoint)
    assert result.equal, (
        f"{endpoint}: legacy {legacy.status} {legacy.body!r}\n new {new.status} {new.body!r}\n"
        + "\n".join(str(d.to_json()) for d in result.differences)
    )


async def seed_tenant(sides: Sides, tenant: Tenant, other: Tenant) -> list[dict[str, Any]]:
    docs = [
        connector_document(tenant, "warehouse", created_at=NOW - timedelta(days=3)),
        connector_document(tenant, "orders", kind="mysql", created_at=NOW - timedelta(days=2)),
        # Two with the same created_at: the id decides their order.
        connector_document(tenant, "tie-a", created_at=NOW - timedelta(days=1)),
        connector_document(tenant, "tie-b", created_at=NOW - timedelta(days=1)),
        connector_document(tenant, "bucket", kind="s3", password=None, host=""),
        connector_document(tenant, "gone", deleted=True),
        connector_document(other, "theirs"),
    ]
    for doc in docs:
        await sides.seed(doc)
    return docs


READS: list[tuple[str, dict[str, Any]]] = [
    ("list, defaults", {}),
    ("second page of two", {"page": "2", "per_page": "2"}),
    ("per_page clamped to 100", {"per_page": "1000"}),
    ("filtered by type", {"connector_type": "mysql"}),
    ("filter matching nothing", {"connector_type": "oracle"}),
    ("page past the end", {"page": "9"}),
    ("per_page zero", {"per_page": "0"}),
    ("page not a number", {"page": "x"}),
]


@pytest.mark.parametrize(("case", "params"), READS, ids=[case for case, _ in READS])
async def test_get_connectors_matches_legacy(
    sides: Sides, tenant: Tenant, other_tenant: Tenant, case: str, params: dict[str, Any]
) -> None:
    await seed_tenant(sides, tenant, other_tenant)
    legacy, new = await sides.both("GET", "/connectors/getConnectors", tenant, params)
    assert_same(legacy, new, "GET /connectors/getConnectors")


async def test_lists_hide_deleted_and_other_tenants_and_mask_passwords(
    sides: Sides, tenant: Tenant, other_tenant: Tenant
) -> None:
    await seed_tenant(sides, tenant, other_tenant)
    new = await sides.call_new("GET", "/connectors/getConnectors", tenant)
    body = new.json()
    names = [item["connector_name"] for item in body["data"]]
    assert body["total"] == 5
    assert names[:3] == ["bucket", "tie-a", "tie-b"] or names[:3] == ["bucket", "tie-b", "tie-a"]
    assert "gone" not in names and "theirs" not in names
    assert b"s3cr3t-Pa55" not in new.body
    assert {item["connection_detail"].get("password") for item in body["data"]} == {
        "********",
        None,
    }


async def test_get_connector_matches_legacy_in_every_case(
    sides: Sides, tenant: Tenant, other_tenant: Tenant
) -> None:
    docs = await seed_tenant(sides, tenant, other_tenant)
    by_name = {doc["connector_name"]: doc["connector_id"] for doc in docs}
    endpoint = "GET /connectors/getConnector"
    cases = [
        ({"connector_id": by_name["warehouse"]}, 200),
        ({"connector_id": by_name["bucket"]}, 200),
        ({}, 400),
        ({"connector_id": "  "}, 400),
        ({"connector_id": "cn_000000000000"}, 404),
        ({"connector_id": by_name["gone"]}, 404),
        ({"connector_id": by_name["theirs"]}, 404),  # another tenant's: as if it did not exist
    ]
    for params, status in cases:
        legacy, new = await sides.both("GET", "/connectors/getConnector", tenant, params)
        assert new.status == status, new.body
        assert_same(legacy, new, endpoint)


@pytest.mark.parametrize(
    "path", ["/connectors/getConnectors", "/connectors/getConnector"], ids=["list", "one"]
)
@pytest.mark.parametrize("authorization", [None, "Bearer not.a.token", "Basic abc"])
async def test_reads_without_a_valid_token_are_401_as_in_legacy(
    sides: Sides, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    legacy_response = await sides.legacy.get(path, headers=headers)
    legacy = RecordedResponse(
        legacy_response.status_code, tuple(legacy_response.headers.items()), legacy_response.content
    )
    handler = sides.registry.get("connectors", f"GET {path}")
    assert handler is not None
    new = await handler(RecordedRequest("GET", path, headers=tuple(headers.items())))
    assert new.status == 401
    assert_same(legacy, new, f"GET {path}")


ADD_BODIES: list[tuple[str, Any]] = [
    ("no name", {"connector_type": "postgres", "connection_detail": {"host": "h"}}),
    ("blank name", {"connector_name": " ", "connector_type": "postgres", "connection_detail": {}}),
    ("no type", {"connector_name": "x", "connection_detail": {"host": "h"}}),
    ("no detail", {"connector_name": "x", "connector_type": "postgres"}),
    ("detail not an object", {"connector_name": "x", "connector_type": "pg", "connection_detail": "h"}),
    ("description not text", {"connector_name": "x", "connector_type": "pg", "connection_detail": {}, "description": 5}),
    ("duplicate name", {"connector_name": "warehouse", "connector_type": "pg", "connection_detail": {}}),
    ("body not JSON", b"{not json"),
    ("body an array", b"[1, 2]"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "body"), ADD_BODIES, ids=[case for case, _ in ADD_BODIES])
async def test_add_connector_refusals_match_legacy(
    sides: Sides, tenant: Tenant, other_tenant: Tenant, case: str, body: Any
) -> None:
    await seed_tenant(sides, tenant, other_tenant)
    legacy, new = await sides.both("POST", "/connectors/addConnector", tenant, body=body)
    assert legacy.status in (400, 409)
    assert_same(legacy, new, "POST /connectors/addConnector")


async def test_add_connector_matches_legacy_and_is_then_readable(
    sides: Sides, tenant: Tenant, other_tenant: Tenant
) -> None:
    await seed_tenant(sides, tenant, other_tenant)
    body = {
        "connector_name": "  crm  ",
        "connector_type": "postgres",
        "description": "CRM replica",
        "connection_detail": {"host": "crm.internal", "port": 5432, "password": "hunter2!"},
    }
    legacy, new = await sides.both("POST", "/connectors/addConnector", tenant, body=body)
    assert (legacy.status, new.status) == (201, 201)
    legacy_id = legacy.json()["data"]["connector_id"]
    new_id = new.json()["data"]["connector_id"]
    assert new_id.startswith("cn_") and len(new_id) == 15
    # Each side mints its own id: compare with the new side's id read as legacy's.
    aligned = new.body.replace(new_id.encode(), legacy_id.encode())
    assert_same(
        legacy, RecordedResponse(new.status, new.headers, aligned), "POST /connectors/addConnector"
    )
    assert b"hunter2!" not in new.body
    fetched = await sides.call_new(
        "GET", "/connectors/getConnector", tenant, {"connector_id": new_id}
    )
    assert fetched.json()["data"] == new.json()["data"]


async def test_update_connector_matches_legacy_in_every_case(
    sides: Sides, tenant: Tenant, other_tenant: Tenant
) -> None:
    docs = await seed_tenant(sides, tenant, other_tenant)
    ids = {doc["connector_name"]: doc["connector_id"] for doc in docs}
    sides.clock[0] += 3600  # an hour later: updated_at moves on both sides
    endpoint = "POST /connectors/updateConnector"
    cases: list[tuple[dict[str, Any], int]] = [
        ({"connector_id": ids["warehouse"], "connector_name": "dwh", "description": None}, 200),
        ({"connector_id": ids["warehouse"], "is_active": False}, 200),
        # The mask sent back keeps the stored password; other keys are replaced.
        ({"connector_id": ids["warehouse"], "connection_detail": {"host": "new", "password": "********"}}, 200),
        # A detail without a password keeps it too.
        ({"connector_id": ids["orders"], "connection_detail": {"host": "mysql2"}}, 200),
        ({"connector_id": ids["orders"], "connection_detail": {"host": "m", "password": "n3w"}}, 200),
        ({"connector_id": ids["bucket"], "connection_detail": {"bucket": "b", "password": "********"}}, 200),
        ({"connector_id": ids["orders"], "connector_name": "tie-a"}, 409),
        ({"connector_id": ids["orders"], "connector_name": "orders"}, 200),  # its own name
        ({"connector_id": ids["orders"], "connector_name": ""}, 400),
        ({"connector_id": ids["orders"], "is_active": "yes"}, 400),
        ({"connector_id": ids["orders"], "connection_detail": [1]}, 400),
        ({"connector_id": ids["theirs"], "connector_name": "mine now"}, 404),
        ({"connector_id": ids["gone"]}, 404),
        ({"connector_name": "x"}, 400),
    ]  # fmt: skip
    for body, status in cases:
        legacy, new = await sides.both("POST", "/connectors/updateConnector", tenant, body=body)
        assert new.status == status, (body, new.body)
        assert_same(legacy, new, endpoint)
        if "connector_id" in body and status != 404:
            params = {"connector_id": body["connector_id"]}
            legacy, new = await sides.both("GET", "/connectors/getConnector", tenant, params)
            assert_same(legacy, new, "GET /connectors/getConnector")


async def test_test_and_delete_connector_match_legacy(
    sides: Sides, tenant: Tenant, other_tenant: Tenant
) -> None:
    docs = await seed_tenant(sides, tenant, other_tenant)
    ids = {doc["connector_name"]: doc["connector_id"] for doc in docs}
    sides.clock[0] += 60
    for name, status in (("warehouse", 200), ("bucket", 200), ("theirs", 404), ("gone", 404)):
        body = {"connector_id": ids[name]}
        legacy, new = await sides.both("POST", "/connectors/testConnector", tenant, body=body)
        assert new.status == status
        assert_same(legacy, new, "POST /connectors/testConnector")
    outcome = (await sides.call_new(
        "GET", "/connectors/getConnector", tenant, {"connector_id": ids["warehouse"]}
    )).json()["data"]  # fmt: skip
    assert outcome["test_status"] == "success"
    for body, status in (
        ({"connector_id": ids["orders"]}, 200),
        ({"connector_id": ids["orders"]}, 404),  # already deleted
        ({"connector_id": ids["theirs"]}, 404),
        ({}, 400),
    ):
        legacy, new = await sides.both("POST", "/connectors/deleteConnector", tenant, body=body)
        assert new.status == status
        assert_same(legacy, new, "POST /connectors/deleteConnector")
    legacy, new = await sides.both("GET", "/connectors/getConnectors", tenant)
    assert_same(legacy, new, "GET /connectors/getConnectors")
    assert new.json()["total"] == 4


async def test_dirty_legacy_documents_read_and_update_as_legacy_does(
    sides: Sides, tenant: Tenant
) -> None:
    def dirty(name: str, **changes: Any) -> dict[str, Any]:
        return {**connector_document(tenant, name), **changes}

    missing = connector_document(tenant, "sparse")
    for key in ("description", "test_status", "last_tested_at", "is_active", "updated_at"):
        del missing[key]
    docs = [
        dirty("text-dates", created_at="2024-02-03 04:05:06", updated_at=1700000000000),
        dirty("epoch", created_at=1600000000000, is_active="true", d_flag="false"),
        dirty("unreadable", created_at="someday", last_tested_at="not a date"),
        dirty("deleted-as-text", d_flag="true"),
        dirty("port-as-text", connection_detail={"host": "h", "port": "5432", "password": "p"}),
        dirty("unknown-field", legacy_only={"kept": [1, 2]}, test_status="success"),
        dirty("null-password", connection_detail={"host": "h", "password": None}),
        missing,
    ]
    for doc in docs:
        await sides.seed(doc)
    legacy, new = await sides.both("GET", "/connectors/getConnectors", tenant)
    assert_same(legacy, new, "GET /connectors/getConnectors")
    assert new.json()["total"] == 7
    for doc in docs:
        params = {"connector_id": doc["connector_id"]}
        legacy, new = await sides.both("GET", "/connectors/getConnector", tenant, params)
        assert_same(legacy, new, "GET /connectors/getConnector")
        body = {"connector_id": doc["connector_id"], "description": "touched"}
        legacy, new = await sides.both("POST", "/connectors/updateConnector", tenant, body=body)
        assert_same(legacy, new, "POST /connectors/updateConnector")
