"""Every users, groups and roles endpoint answered by the new side as legacy answers it, and
what the new side fixes: racing member adds, unique names, hashes, tenants.

Each comparison sends the same request to the legacy emulator and to the PostgreSQL
handlers, both holding the same documents (stored in PostgreSQL through the batch writer,
as backfill stores them), and compares the answers with the shadow comparator under the
project's declared rules. The only substitution is the id a create mints.
"""

# ruff: noqa: E501  (the request tables read best one case per line)
from __future__ import annotations

import asyncio
import json
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from new_side_support import NOW, Sides, Tenant, user_doc
from new_side_support import seed_documents as seed

from shadow_compare.compare import compare_responses
from shadow_compare.rules import load_rules
from strangler.exchange import RecordedResponse
from strangler.user_fields import check_password

RULES = load_rules(Path(__file__).resolve().parents[2] / "shadow_rules.yaml")


def assert_same(
    legacy: RecordedResponse, new: RecordedResponse, entity: str, endpoint: str
) -> None:
    result = compare_responses(legacy, new, RULES.for_entity(entity), endpoint=endpoint)
    assert result.equal, (
        f"{endpoint}: legacy {legacy.status} {legacy.body!r}\n new {new.status} {new.body!r}\n"
        + "\n".join(str(d.to_json()) for d in result.differences)
    )


def aligned(legacy: RecordedResponse, new: RecordedResponse, field: str) -> RecordedResponse:
    """The new answer with the id it minted read as the one legacy minted."""
    theirs, ours = legacy.json()["data"][field], new.json()["data"][field]
    return RecordedResponse(
        new.status, new.headers, new.body.replace(ours.encode(), theirs.encode())
    )


async def seed_tenant(sides: Sides, tenant: Tenant, other: Tenant) -> dict[str, Any]:
    users = [
        user_doc(tenant, "ann", NOW - timedelta(days=3)),
        user_doc(
            tenant,
            "bob",
            NOW - timedelta(days=2),
            is_active="true",
            last_login_at="2025-01-02 03:04:05",
        ),
        user_doc(tenant, "cy", NOW - timedelta(days=1)),
        user_doc(tenant, "di", NOW - timedelta(days=1)),  # a tie: the id decides
        user_doc(tenant, "ed", "not a date", legacy_field=1),
        user_doc(other, "theirs"),
    ]
    await seed(sides, "users", users)
    ann, bob, cy = (u["UserId"] for u in users[:3])
    groups = [
        {"group_id": f"grp_{secrets.token_hex(6)}", "subscription_id": tenant.subscription_id,
         "group_name": "Analysts", "description": "d", "users": [ann, bob],
         "created_by": ann, "created_at": NOW - timedelta(days=2)},
        # dirt: a member twice and one that does not exist, a string date
        {"group_id": f"grp_{secrets.token_hex(6)}", "subscription_id": tenant.subscription_id,
         "group_name": "Dirty", "description": None, "users": [bob, "usr_00000000dead", bob],
         "created_by": "usr_00000000dead", "created_at": "2024-05-06 07:08:09"},
        {"group_id": f"grp_{secrets.token_hex(6)}", "subscription_id": tenant.subscription_id,
         "group_name": "Empty", "created_at": NOW - timedelta(days=1)},  # no users field
        {"group_id": f"grp_{secrets.token_hex(6)}", "subscription_id": other.subscription_id,
         "group_name": "Theirs", "users": [], "created_at": NOW},
    ]  # fmt: skip
    await seed(sides, "groups", groups)
    roles = [
        {"role_id": f"role_{secrets.token_hex(6)}", "subscription_id": tenant.subscription_id,
         "role_name": "Admin", "description": "all", "permissions": ["read", "write"],
         "users": [cy]},
        {"role_id": f"role_{secrets.token_hex(6)}", "subscription_id": tenant.subscription_id,
         "role_name": "Viewer", "permissions": "read", "users": [],
         "created_at": NOW - timedelta(days=5)},
        {"role_id": f"role_{secrets.token_hex(6)}", "subscription_id": other.subscription_id,
         "role_name": "Theirs", "permissions": [], "users": []},
    ]  # fmt: skip
    await seed(sides, "roles", roles)
    return {"users": users, "groups": groups, "roles": roles}


READS = [
    ("users", "/users/getUsers", {}),
    ("users", "/users/getUsers", {"page": "2", "per_page": "2"}),
    ("users", "/users/getUsers", {"page": "9"}),
    ("users", "/users/getUsers", {"per_page": "0"}),
    ("groups", "/groups/getGroups", {}),
    ("groups", "/groups/getGroups", {"per_page": "1", "page": "3"}),
    ("roles", "/roles/getRoles", {}),
    ("roles", "/roles/getRoles", {"page": "x"}),
]


@pytest.mark.parametrize(("entity", "path", "params"), READS)
async def test_lists_match_legacy(sides, tenant, other_tenant, entity, path, params) -> None:
    await seed_tenant(sides, tenant, other_tenant)
    legacy, new = await sides.both("GET", path, tenant, params)
    assert_same(legacy, new, entity, f"GET {path}")


async def test_get_user_matches_legacy_in_every_case(sides, tenant, other_tenant) -> None:
    seeded = await seed_tenant(sides, tenant, other_tenant)
    for params in (
        {"UserId": seeded["users"][1]["UserId"]},
        {"UserId": seeded["users"][4]["UserId"]},  # dirty dates, unknown field
        {"UserId": seeded["users"][5]["UserId"]},  # another tenant's: 404
        {"UserId": "usr_000000000000"},
        {},
    ):
        legacy, new = await sides.both("GET", "/users/getUser", tenant, params)
        assert_same(legacy, new, "users", "GET /users/getUser")
        assert b"$2b$" not in new.body  # never the hash
    legacy, new = await sides.both("GET", "/users/getUser", None, {"UserId": "x"})
    assert (legacy.status, new.status) == (401, 401)


WRITES = [
    (
        "users",
        "/users/addUser",
        {"email": "new@example.com", "username": "newbie", "password": "pw-1"},
        "UserId",
    ),
    (
        "users",
        "/users/addUser",
        {"email": "ann@example.com", "username": "other", "password": "pw"},
        None,
    ),
    (
        "users",
        "/users/addUser",
        {"email": "x@example.com", "username": "ann", "password": "pw"},
        None,
    ),
    ("users", "/users/addUser", {"email": "not-an-email", "username": "u", "password": "pw"}, None),
    ("users", "/users/addUser", {"email": "y@example.com", "username": "u"}, None),
    (
        "users",
        "/users/addUser",
        {"email": "z@example.com", "username": "long", "password": "p" * 73},
        None,
    ),
    ("groups", "/groups/addGroup", {"group_name": "Leads", "description": "x"}, "group_id"),
    ("groups", "/groups/addGroup", {"group_name": "Analysts"}, None),
    ("groups", "/groups/addGroup", {"group_name": "Theirs"}, "group_id"),  # another tenant's name
    ("groups", "/groups/addGroup", {}, None),
    ("roles", "/roles/addRole", {"role_name": "Ops", "permissions": ["run"]}, "role_id"),
    ("roles", "/roles/addRole", {"role_name": "Ops"}, None),
    ("roles", "/roles/addRole", {"role_name": "Admin", "permissions": []}, None),
    ("roles", "/roles/addRole", {"role_name": "Bad", "permissions": "read"}, None),
]


@pytest.mark.parametrize(("entity", "path", "body", "minted"), WRITES)
async def test_adds_match_legacy(sides, tenant, other_tenant, entity, path, body, minted) -> None:
    await seed_tenant(sides, tenant, other_tenant)
    legacy, new = await sides.both("POST", path, tenant, body=body)
    if minted is not None:
        assert (legacy.status, new.status) == (201, 201), new.body
        new = aligned(legacy, new, minted)
    assert_same(legacy, new, entity, f"POST {path}")


async def test_updates_and_member_changes_match_legacy(sides, tenant, other_tenant) -> None:
    seeded = await seed_tenant(sides, tenant, other_tenant)
    ann, bob, cy, di = (u["UserId"] for u in seeded["users"][:4])
    theirs_user = seeded["users"][5]["UserId"]
    analysts, dirty, empty, theirs = (g["group_id"] for g in seeded["groups"])
    admin, viewer, their_role = (r["role_id"] for r in seeded["roles"])
    steps = [
        (
            "users",
            "/users/updateUser",
            {"UserId": bob, "full_name": "Robert", "user_utc_offset": "-08:00", "is_active": False},
        ),
        ("users", "/users/updateUser", {"UserId": bob, "email": "ann@example.com"}),
        ("users", "/users/updateUser", {"UserId": bob, "username": "ann"}),
        ("users", "/users/updateUser", {"UserId": bob, "username": "bob"}),  # its own name
        ("users", "/users/updateUser", {"UserId": bob, "user_utc_offset": "5:30"}),
        ("users", "/users/updateUser", {"UserId": theirs_user, "full_name": "x"}),
        ("users", "/users/updateUser", {"UserId": "usr_000000000000", "password": "p" * 80}),
        ("groups", "/groups/addUserToGroup", {"group_id": analysts, "UserId": cy}),
        ("groups", "/groups/addUserToGroup", {"group_id": analysts, "UserId": cy}),  # again: no-op
        ("groups", "/groups/addUserToGroup", {"group_id": dirty, "UserId": di}),  # a dirty array
        ("groups", "/groups/addUserToGroup", {"group_id": empty, "UserId": ann}),  # no users field
        ("groups", "/groups/addUserToGroup", {"group_id": analysts, "UserId": theirs_user}),  # 404
        ("groups", "/groups/addUserToGroup", {"group_id": theirs, "UserId": ann}),  # 404
        ("groups", "/groups/addUserToGroup", {"group_id": analysts}),  # 400
        ("groups", "/groups/removeUserFromGroup", {"group_id": analysts, "UserId": ann}),
        (
            "groups",
            "/groups/removeUserFromGroup",
            {"group_id": dirty, "UserId": "usr_00000000dead"},
        ),
        (
            "groups",
            "/groups/removeUserFromGroup",
            {"group_id": analysts, "UserId": "usr_0000000nope"},
        ),
        ("roles", "/roles/assignRole", {"role_id": viewer, "UserId": ann}),
        ("roles", "/roles/assignRole", {"role_id": admin, "UserId": cy}),  # already a member
        ("roles", "/roles/assignRole", {"role_id": their_role, "UserId": ann}),  # 404
        ("roles", "/roles/assignRole", {"role_id": admin, "UserId": "usr_000000000000"}),  # 404
    ]
    for entity, path, body in steps:
        sides.clock[0] += 1.0
        legacy, new = await sides.both("POST", path, tenant, body=body)
        assert_same(legacy, new, entity, f"POST {path} {body}")
    for entity, path in (("users", "/users/getUsers"), ("groups", "/groups/getGroups"),
                         ("roles", "/roles/getRoles")):  # fmt: skip
        legacy, new = await sides.both("GET", path, tenant)
        assert_same(legacy, new, entity, f"GET {path} after the writes")


async def rows_as_owner(pool: asyncpg.Pool, sql: str, *args: Any) -> list[asyncpg.Record]:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL ROLE strangler_sync")
        return list(await conn.fetch(sql, *args))


async def add_users(sides: Sides, tenant: Tenant, count: int) -> list[str]:
    ids = []
    for n in range(count):
        response = await sides.call_new(
            "POST", "/users/addUser", tenant,
            body={"email": f"m{n}@example.com", "username": f"m{n}", "password": "pw"},
        )  # fmt: skip
        assert response.status == 201, response.body
        ids.append(response.json()["data"]["UserId"])
    return ids


async def test_fifty_racing_adds_to_one_group_all_land_on_the_new_side(sides, tenant) -> None:
    users = await add_users(sides, tenant, 50)
    group = await sides.call_new("POST", "/groups/addGroup", tenant, body={"group_name": "Crowd"})
    group_id = group.json()["data"]["group_id"]
    body = [{"group_id": group_id, "UserId": user} for user in users]
    answers = await asyncio.gather(
        *(sides.call_new("POST", "/groups/addUserToGroup", tenant, body=b) for b in body)
    )
    assert [a.status for a in answers] == [201] * 50
    listed = await sides.call_new("GET", "/groups/getGroups", tenant)
    (shown,) = listed.json()["data"]
    assert sorted(shown["users"]) == sorted(users)
    # each answer shows the group as its add left it: every member added before it, and it
    sizes = sorted(len(a.json()["data"]["users"]) for a in answers)
    assert sizes == list(range(1, 51))
    rows = await rows_as_owner(
        sides.pool,
        "SELECT position FROM user_groups WHERE group_id = $1 ORDER BY position",
        group_id,
    )
    assert [r["position"] for r in rows] == list(range(50))


async def test_racing_adds_of_one_name_give_one_row_and_409s(sides, tenant) -> None:
    answers = await asyncio.gather(
        *(sides.call_new("POST", "/groups/addGroup", tenant, body={"group_name": "Same"})
          for _ in range(5)),
        *(sides.call_new("POST", "/users/addUser", tenant,
                         body={"email": f"e{n}@x.io", "username": "same", "password": "pw"})
          for n in range(5)),
    )  # fmt: skip
    statuses = sorted(a.status for a in answers)
    assert statuses == [201, 201, 409, 409, 409, 409, 409, 409, 409, 409]
    messages = {a.json()["message"] for a in answers if a.status == 409}
    assert messages == {"Group name already exists", "Username already exists"}


async def test_another_tenants_group_and_role_are_404_and_unchanged(
    sides, tenant, other_tenant
) -> None:
    seeded = await seed_tenant(sides, tenant, other_tenant)
    theirs = seeded["groups"][3]["group_id"]
    their_role = seeded["roles"][2]["role_id"]
    mine = seeded["users"][0]["UserId"]
    for path, body in (
        ("/groups/addUserToGroup", {"group_id": theirs, "UserId": mine}),
        ("/groups/removeUserFromGroup", {"group_id": theirs, "UserId": mine}),
        ("/roles/assignRole", {"role_id": their_role, "UserId": mine}),
    ):
        answer = await sides.call_new("POST", path, tenant, body=body)
        assert answer.status == 404, answer.body
    listed = await sides.call_new("GET", "/groups/getGroups", other_tenant)
    assert [g["users"] for g in listed.json()["data"]] == [[]]


async def test_a_new_password_is_stored_only_as_a_bcrypt_hash(sides, tenant) -> None:
    answer = await sides.call_new(
        "POST", "/users/addUser", tenant,
        body={"email": "p@example.com", "username": "p", "password": "Corr3ct-Horse"},
    )  # fmt: skip
    assert answer.status == 201 and b"Corr3ct-Horse" not in answer.body
    user_id = answer.json()["data"]["UserId"]
    assert "password" not in answer.json()["data"]
    (row,) = await rows_as_owner(
        sides.pool, "SELECT password_hash FROM users WHERE user_id = $1", user_id
    )
    assert row["password_hash"].startswith("$2b$04$")
    assert check_password("Corr3ct-Horse", row["password_hash"])
    stored = await rows_as_owner(
        sides.pool,
        "SELECT concat(a.previous_data, a.current_data, o.payload) AS text FROM user_activity AS a "
        "JOIN migration_outbox AS o ON o.legacy_id = a.object_id WHERE a.object_id = $1",
        user_id,
    )
    assert stored and all(
        "Corr3ct-Horse" not in r["text"] and "$2b$" not in r["text"] for r in stored
    )
    changed = await sides.call_new(
        "POST", "/users/updateUser", tenant, body={"UserId": user_id, "password": "N3w-one"}
    )
    assert changed.status == 200 and b"N3w-one" not in changed.body
    (row,) = await rows_as_owner(
        sides.pool, "SELECT password_hash FROM users WHERE user_id = $1", user_id
    )
    assert check_password("N3w-one", row["password_hash"])
    assert not check_password("Corr3ct-Horse", row["password_hash"])


async def test_each_write_commits_its_audit_and_outbox_rows(sides, tenant) -> None:
    [user] = await add_users(sides, tenant, 1)
    group = await sides.call_new("POST", "/groups/addGroup", tenant, body={"group_name": "G"})
    group_id = group.json()["data"]["group_id"]
    await sides.call_new(
        "POST", "/groups/addUserToGroup", tenant, body={"group_id": group_id, "UserId": user}
    )
    refused = await sides.call_new("POST", "/groups/addUserToGroup", tenant,
                                   body={"group_id": group_id, "UserId": "usr_000000000000"})  # fmt: skip
    assert refused.status == 404
    outbox = await rows_as_owner(
        sides.pool,
        "SELECT entity, legacy_id, operation, payload FROM migration_outbox "
        "WHERE subscription_id = $1 ORDER BY id",
        tenant.subscription_id,
    )
    assert [(r["entity"], r["legacy_id"], r["operation"]) for r in outbox] == [
        ("users", user, "insert"), ("groups", group_id, "insert"), ("groups", group_id, "update"),
    ]  # fmt: skip
    activity = [json.loads(r["payload"])["activity"] for r in outbox]
    assert [(a["action"], a["object_type"]) for a in activity] == [
        ("created", "user"), ("created", "group"), ("updated", "group"),
    ]  # fmt: skip
    assert activity[2]["current_data"]["users"] == [user]
