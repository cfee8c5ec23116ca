"""Users of a tenant. Passwords are stored as bcrypt hashes and never returned.

Email and username are unique within a tenant (409), checked on add and on
change; the check reads then inserts, so two racing adds can still both pass,
which is how duplicates got into production.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from legacy_emulator.http import ApiError, Call, created, listed, ok
from legacy_emulator.render import USER, render
from legacy_emulator.routes import Route
from legacy_emulator.store import find_visible, name_taken, page_of, record_activity
from strangler.contract import new_id
from strangler.user_fields import UTC_OFFSET, check_email, hash_password

__all__ = ["ROUTES"]

Document = dict[str, Any]


def _email(call: Call) -> str:
    return check_email(call.text("email"))


async def _check_unique(call: Call, field: str, value: str, except_id: str | None) -> None:
    query = {"subscription_id": call.caller.subscription_id, field: value}
    if await name_taken(call.emulator.users, query, id_field="UserId", except_id=except_id):
        raise ApiError(409, f"{field.capitalize()} already exists")


async def get_users(call: Call) -> Response:
    users, total = await page_of(
        call.emulator.users,
        {"subscription_id": call.caller.subscription_id},
        id_field="UserId",
        page=call.page(),
        leave_out=("password",),
    )
    return listed("Users fetched successfully", [render(user, USER) for user in users], total)


async def get_user(call: Call) -> Response:
    user = await find_visible(
        call.emulator.users, "UserId", call.query_id("UserId"), call.caller.subscription_id, "User"
    )
    return ok("User fetched successfully", render(user, USER))


async def add_user(call: Call) -> Response:
    email = _email(call)
    username = call.text("username")
    full_name = call.optional_text("full_name")
    password = call.text("password")
    await _check_unique(call, "email", email, None)
    await _check_unique(call, "username", username, None)
    now = call.emulator.clock()
    user: Document = {
        "UserId": new_id("user"),
        "subscription_id": call.caller.subscription_id,
        "email": email,
        "username": username,
        "full_name": full_name,
        "password": await hash_password(password, call.emulator.password_rounds),
        "photo_url": None,
        "user_utc_offset": None,
        "is_active": True,
        "is_email_verified": False,
        "last_login_at": None,
        "created_at": now,
        "updated_at": now,
    }
    await call.emulator.users.insert_one(user)
    rendered = render(user, USER)
    await record_activity(call, "created", "user", user["UserId"], username, current=rendered)
    return created("User added successfully", rendered)


async def update_user(call: Call) -> Response:
    user = await find_visible(
        call.emulator.users, "UserId", call.text("UserId"), call.caller.subscription_id, "User"
    )
    previous = render(user, USER)
    changes: Document = {}
    if call.given("email"):
        changes["email"] = _email(call)
        await _check_unique(call, "email", changes["email"], user["UserId"])
    if call.given("username"):
        changes["username"] = call.text("username")
        await _check_unique(call, "username", changes["username"], user["UserId"])
    for field in ("full_name", "photo_url"):
        if call.given(field):
            changes[field] = call.optional_text(field)
    if call.given("user_utc_offset"):
        offset = call.optional_text("user_utc_offset")
        if offset is not None and not UTC_OFFSET.match(offset):
            raise ApiError(400, "user_utc_offset must look like +05:30")
        changes["user_utc_offset"] = offset
    if call.given("is_active"):
        changes["is_active"] = call.optional_flag("is_active")
    if call.given("password"):
        changes["password"] = await hash_password(
            call.text("password"), call.emulator.password_rounds
        )
    changes["updated_at"] = call.emulator.clock()
    await call.emulator.users.update_one({"_id": user["_id"]}, {"$set": changes})
    user.update(changes)
    rendered = render(user, USER)
    await record_activity(
        call,
        "updated",
        "user",
        user["UserId"],
        user.get("username"),
        previous=previous,
        current=rendered,
    )
    return ok("User updated successfully", rendered)


ROUTES: list[Route] = [
    ("GET", "/users/getUsers", get_users),
    ("GET", "/users/getUser", get_user),
    ("POST", "/users/addUser", add_user),
    ("POST", "/users/updateUser", update_user),
]
