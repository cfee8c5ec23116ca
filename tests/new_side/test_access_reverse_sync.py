"""Users, groups and roles written on the new side, carried back into MongoDB as legacy
writes them: the group's and role's ``users`` arrays rebuilt from their membership rows, a
password's bcrypt hash checkable by legacy after switching back, verify clean."""

from __future__ import annotations

import uuid
from typing import Any

from new_side_support import Sides, Tenant, seed_documents, user_doc

from migrators.origin import ORIGIN_FIELD
from migrators.registry import default_registry
from migrators.reverse import apply_pending
from migrators.spec import MappingContext
from migrators.verify import verify_entity
from strangler.mongo import Database, open_database
from strangler.user_fields import check_password

REGISTRY = default_registry()
ENTITIES = ("users", "groups", "roles")


def comparable(name: str, document: dict[str, Any] | None) -> dict[str, Any]:
    assert document is not None
    spec = REGISTRY.get(name)
    assert spec.normalize is not None
    return spec.normalize({k: v for k, v in document.items() if k not in ("_id", ORIGIN_FIELD)})


async def reverse_all(sides: Sides, target: Database) -> None:
    for name in ENTITIES:
        result = await apply_pending(sides.pool, target, REGISTRY.get(name), MappingContext())
        assert result.failed == 0, result.errors


async def test_new_side_writes_land_in_legacy_as_legacy_writes_them(
    fresh_sides: Sides, tenant: Tenant
) -> None:
    sides = fresh_sides
    users = [user_doc(tenant, name) for name in ("ann", "bob", "cy")]
    await seed_documents(sides, "users", users)
    ann, bob, cy = (u["UserId"] for u in users)
    target = open_database(f"memory://reverse-access-{uuid.uuid4().hex}")
    await target["users"].insert_many([dict(u) for u in users])
    # the same writes on both sides; legacy's own store is what the reverse sync must equal
    created: dict[str, tuple[str, str]] = {}
    for path, body, field in (
        ("/groups/addGroup", {"group_name": "Ops", "description": "on call"}, "group_id"),
        ("/roles/addRole", {"role_name": "Runner", "permissions": ["execute"]}, "role_id"),
    ):
        legacy, new = await sides.both("POST", path, tenant, body=body)
        created[field] = (legacy.json()["data"][field], new.json()["data"][field])
    for path, field, user in (
        ("/groups/addUserToGroup", "group_id", bob),
        ("/groups/addUserToGroup", "group_id", ann),
        ("/groups/addUserToGroup", "group_id", cy),
        ("/groups/removeUserFromGroup", "group_id", ann),
        ("/roles/assignRole", "role_id", cy),
    ):
        sides.clock[0] += 1
        theirs, ours = created[field]
        for side, holder in (("legacy", theirs), ("new", ours)):
            call = sides.call_legacy if side == "legacy" else sides.call_new
            answer = await call("POST", path, tenant, body={field: holder, "UserId": user})
            assert answer.status in (200, 201), answer.body
    update = {"UserId": bob, "full_name": "Robert", "password": "n3w-Secret"}
    legacy, new = await sides.both("POST", "/users/updateUser", tenant, body=update)
    assert (legacy.status, new.status) == (200, 200)
    added = await sides.call_new(
        "POST", "/users/addUser", tenant,
        body={"email": "dee@example.com", "username": "dee", "password": "Dee-pass-1"},
    )  # fmt: skip
    assert added.status == 201

    await reverse_all(sides, target)

    for name, field in (("groups", "group_id"), ("roles", "role_id")):
        theirs, ours = created[field]
        legacy_doc = await sides.db[name].find_one({field: theirs})
        reversed_doc = await target[name].find_one({field: ours})
        assert comparable(name, reversed_doc) == {**comparable(name, legacy_doc), field: ours}
    group = await target["groups"].find_one({"group_id": created["group_id"][1]})
    assert group is not None and group["users"] == [bob, cy]  # legacy's order, ann removed
    robert = await target["users"].find_one({"UserId": bob})
    assert robert is not None and robert["full_name"] == "Robert"
    assert check_password("n3w-Secret", robert["password"])  # legacy's login check passes
    dee = await target["users"].find_one({"UserId": added.json()["data"]["UserId"]})
    assert dee is not None and check_password("Dee-pass-1", dee["password"])
    assert "Dee-pass-1" not in repr(dee)
    async with sides.pool.acquire() as conn:
        for name in ENTITIES:
            report = await verify_entity(target, conn, REGISTRY.get(name), MappingContext())
            assert report.clean, report.lines()
