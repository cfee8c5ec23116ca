"""Groups and roles: each keeps its members as a ``users`` array of ``UserId``.

Adding a member needs the user to exist in the tenant (404 otherwise);
removing one does not, so that a dangling id can be cleaned out. Both are
idempotent. The array is read, changed and written back whole, which also
repairs a missing or ``null`` ``users`` field.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from legacy_emulator.http import ApiError, Call, created, listed, ok
from legacy_emulator.render import GROUP, ROLE, Spec, render
from legacy_emulator.routes import Route
from legacy_emulator.store import find_visible, name_taken, page_of, record_activity
from strangler.contract import new_id
from strangler.mongo import Collection

__all__ = ["ROUTES"]

Document = dict[str, Any]


async def _check_name(call: Call, collection: Collection, field: str, id_field: str) -> str:
    name = call.text(field)
    query = {"subscription_id": call.caller.subscription_id, field: name}
    if await name_taken(collection, query, id_field=id_field):
        raise ApiError(409, f"{field.split('_')[0].capitalize()} name already exists")
    return name


def _members(document: Document) -> list[Any]:
    users = document.get("users")
    return list(users) if isinstance(users, list) else []


async def _change_members(
    call: Call,
    collection: Collection,
    document: Document,
    members: list[Any],
    object_type: str,
    spec: Spec,
    *,
    status: int = 200,
) -> Response:
    previous = render(document, spec)
    await collection.update_one({"_id": document["_id"]}, {"$set": {"users": members}})
    document["users"] = members
    rendered = render(document, spec)
    id_field, name_field = f"{object_type}_id", f"{object_type}_name"
    await record_activity(
        call,
        "updated",
        object_type,
        document[id_field],
        document.get(name_field),
        previous=previous,
        current=rendered,
    )
    message = f"{object_type.capitalize()} updated successfully"
    return created(message, rendered) if status == 201 else ok(message, rendered)


async def _existing_user(call: Call) -> str:
    user = await find_visible(
        call.emulator.users, "UserId", call.text("UserId"), call.caller.subscription_id, "User"
    )
    return str(user["UserId"])


# --- groups -------------------------------------------------------------------------------


async def get_groups(call: Call) -> Response:
    groups, total = await page_of(
        call.emulator.groups,
        {"subscription_id": call.caller.subscription_id},
        id_field="group_id",
        page=call.page(),
    )
    return listed("Groups fetched successfully", [render(g, GROUP) for g in groups], total)


async def add_group(call: Call) -> Response:
    name = await _check_name(call, call.emulator.groups, "group_name", "group_id")
    group: Document = {
        "group_id": new_id("group"),
        "subscription_id": call.caller.subscription_id,
        "group_name": name,
        "description": call.optional_text("description"),
        "users": [],
        "created_by": call.caller.user_id,
        "created_at": call.emulator.clock(),
    }
    await call.emulator.groups.insert_one(group)
    rendered = render(group, GROUP)
    await record_activity(call, "created", "group", group["group_id"], name, current=rendered)
    return created("Group added successfully", rendered)


async def _load_group(call: Call) -> Document:
    return await find_visible(
        call.emulator.groups,
        "group_id",
        call.text("group_id"),
        call.caller.subscription_id,
        "Group",
    )


async def add_user_to_group(call: Call) -> Response:
    group = await _load_group(call)
    user_id = await _existing_user(call)
    members = _members(group)
    if user_id not in members:
        members.append(user_id)
    # An add* endpoint: 201 like every other, though it changes an existing group.
    return await _change_members(
        call, call.emulator.groups, group, members, "group", GROUP, status=201
    )


async def remove_user_from_group(call: Call) -> Response:
    group = await _load_group(call)
    user_id = call.text("UserId")
    members = [member for member in _members(group) if member != user_id]
    return await _change_members(call, call.emulator.groups, group, members, "group", GROUP)


# --- roles --------------------------------------------------------------------------------


async def get_roles(call: Call) -> Response:
    roles, total = await page_of(
        call.emulator.roles,
        {"subscription_id": call.caller.subscription_id},
        id_field="role_id",
        page=call.page(),
    )
    return listed("Roles fetched successfully", [render(r, ROLE) for r in roles], total)


async def add_role(call: Call) -> Response:
    permissions = call.optional_list_of_text("permissions")
    if permissions is None:
        raise ApiError(400, "permissions is required")
    name = await _check_name(call, call.emulator.roles, "role_name", "role_id")
    role: Document = {
        "role_id": new_id("role"),
        "subscription_id": call.caller.subscription_id,
        "role_name": name,
        "description": call.optional_text("description"),
        "permissions": permissions,
        "users": [],
        "created_at": call.emulator.clock(),
    }
    await call.emulator.roles.insert_one(role)
    rendered = render(role, ROLE)
    await record_activity(call, "created", "role", role["role_id"], name, current=rendered)
    return created("Role added successfully", rendered)


async def assign_role(call: Call) -> Response:
    role = await find_visible(
        call.emulator.roles, "role_id", call.text("role_id"), call.caller.subscription_id, "Role"
    )
    user_id = await _existing_user(call)
    members = _members(role)
    if user_id not in members:
        members.append(user_id)
    return await _change_members(call, call.emulator.roles, role, members, "role", ROLE)


ROUTES: list[Route] = [
    ("GET", "/groups/getGroups", get_groups),
    ("POST", "/groups/addGroup", add_group),
    ("POST", "/groups/addUserToGroup", add_user_to_group),
    ("POST", "/groups/removeUserFromGroup", remove_user_from_group),
    ("GET", "/roles/getRoles", get_roles),
    ("POST", "/roles/addRole", add_role),
    ("POST", "/roles/assignRole", assign_role),
]
