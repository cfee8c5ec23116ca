"""Users, groups and roles from PostgreSQL, answering their endpoints exactly as legacy does.

Legacy's answers (messages, statuses, field order, the 400/404/409 cases, the order of the
checks) are those of ``legacy_emulator/routes/users.py`` and ``groups_roles.py``. As for
connectors, rows and legacy documents convert through the entities' specs
(:mod:`migrators.entities.users`, :mod:`migrators.entities.access`), the mapping backfill,
sync, verify and the reverse sync use: a handler reads the rows, sees the legacy document
they stand for, applies legacy's change to it and stores what the mapping makes of it. A
row written here is the row a backfill of legacy's document would have written; dirty
values and renamed duplicates stay as found.

What the new side fixes, by design:

- each write is one transaction with its audit row and its outbox row, run as
  ``strangler_app`` with the caller's subscription set: row-level security keeps tenants
  apart (another tenant's group is a 404);
- a member is added under a lock on its group's (role's) row and stored as one membership
  row, so two racing adds of different users both land (legacy reads the ``users`` array,
  changes it and writes it back whole: one of two racing adds is lost), and adding a
  member twice is a no-op;
- a duplicate email, username, group or role name is decided by a unique index, so two
  racing adds cannot both win (legacy checks, then inserts);
- a password is hashed with bcrypt before the transaction (off the event loop) and only
  its hash is stored; neither is rendered, logged, audited or queued for the reverse sync
  (which reads the hash from the row, so legacy checks logins against the same hash).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from migrators.entities.access import GROUPS, MEMBERS, ROLES, Membership
from migrators.entities.access import SPECS as ACCESS_SPECS
from migrators.entities.common import RENAMED
from migrators.entities.users import SPECS as USER_SPECS
from migrators.spec import Document, EntitySpec, MappingContext, Quarantined, Row
from proxy.handlers._pg import (
    LISTED_TOTAL,
    ApiError,
    Call,
    created,
    decoded_row,
    listed,
    listed_total,
    ok,
    record_activity,
    record_outbox,
    tenant_transaction,
)
from schema.tenancy import ensure_subscription
from strangler.contract import DirtyValue, is_deleted, json_safe, new_id, render_datetime, to_int
from strangler.exchange import RecordedResponse
from strangler.user_fields import UTC_OFFSET, check_email, hash_password

__all__ = ["MemberHandlers", "UserHandlers", "render_fields"]

USERS_SPEC = USER_SPECS[0]
SPEC_OF: dict[str, EntitySpec] = {spec.name: spec for spec in ACCESS_SPECS}
_CONTEXT = MappingContext()

# Rendered fields in legacy's order (legacy_emulator.render USER, GROUP, ROLE).
Rendered = tuple[tuple[str, str], ...]
USER: Rendered = (
    ("UserId", "raw"), ("subscription_id", "raw"), ("email", "raw"), ("username", "raw"),
    ("full_name", "raw"), ("photo_url", "raw"), ("user_utc_offset", "raw"),
    ("is_active", "bool"), ("is_email_verified", "bool"), ("last_login_at", "datetime"),
    ("created_at", "datetime"), ("updated_at", "datetime"),
)  # fmt: skip
GROUP: Rendered = (
    ("group_id", "raw"), ("subscription_id", "raw"), ("group_name", "raw"),
    ("description", "raw"), ("users", "raw"), ("created_by", "raw"), ("created_at", "datetime"),
)  # fmt: skip
ROLE: Rendered = (
    ("role_id", "raw"), ("subscription_id", "raw"), ("role_name", "raw"),
    ("description", "raw"), ("permissions", "raw"), ("users", "raw"), ("created_at", "datetime"),
)  # fmt: skip


def render_fields(document: Mapping[str, Any], fields: Rendered) -> dict[str, Any]:
    """A legacy document as the API renders it: fixed fields and order, missing ones null."""
    rendered: dict[str, Any] = {}
    for name, kind in fields:
        value = document.get(name)
        if kind == "datetime":
            rendered[name] = render_datetime(value)
        elif kind == "bool":
            rendered[name] = None if value is None else is_deleted(value)
        elif kind == "int":  # a number stored as a string reads as one; dirt as found
            try:
                rendered[name] = to_int(value)
            except DirtyValue:
                rendered[name] = json_safe(value)
        else:
            rendered[name] = json_safe(value)
    return rendered


# --- rows in and out --------------------------------------------------------------------------


def _kept_names(row: Row, document: Document, stored: Row | None, columns: Sequence[str]) -> Row:
    """A legacy duplicate stored renamed keeps its stored name while the document still
    gives the name as found (the write did not rename it)."""
    if stored is None:
        return row
    found = (stored.get("extra") or {}).get(RENAMED) or {}
    extra = dict(row.get("extra") or {})
    for column in columns:
        if column in found and document.get(column) == found[column]:
            row[column] = stored[column]
            extra[RENAMED] = {**extra.get(RENAMED, {}), column: found[column]}
    row["extra"] = extra
    return row


def _mapped(spec: EntitySpec, document: Document) -> dict[str, list[Row]]:
    mapped = spec.map_document(document, _CONTEXT)
    if isinstance(mapped, Quarantined):  # the handler built it: a bug, answered 500
        raise RuntimeError(f"{spec.name} document not mappable: {mapped.reason}")
    return {table: [dict(row) for row in rows] for table, rows in mapped.rows.items()}


@dataclass(frozen=True)
class _Table:
    name: str
    keys: tuple[str, ...]  # never changed by a write: id, legacy id, subscription_id
    writable: tuple[str, ...]
    jsonb: tuple[str, ...]
    unique: Mapping[str, str]  # index name -> the 409's message

    @property
    def selected(self) -> str:
        return ", ".join((*self.keys, *self.writable))

    async def save(self, conn: asyncpg.Connection, row: Row, *, insert: bool) -> None:
        values = [json.dumps(row[c]) if c in self.jsonb else row[c] for c in self.writable]
        first = len(self.keys) + 1
        casts = [
            f"${i}::jsonb" if c in self.jsonb else f"${i}"
            for i, c in enumerate(self.writable, first)
        ]
        keys = [row[c] for c in self.keys]
        try:
            if insert:
                names = ", ".join((*self.keys, *self.writable))
                places = ", ".join([*(f"${i}" for i in range(1, first)), *casts])
                await conn.execute(
                    f"INSERT INTO {self.name} ({names}, synced_at) VALUES ({places}, now())",
                    *keys,
                    *values,
                )
            else:
                sets = ", ".join(f"{c} = {v}" for c, v in zip(self.writable, casts, strict=True))
                where = " AND ".join(f"{c} = ${i}" for i, c in enumerate(self.keys, 1))
                await conn.execute(
                    f"UPDATE {self.name} SET {sets}, synced_at = now() WHERE {where}",
                    *keys,
                    *values,
                )
        except asyncpg.UniqueViolationError as exc:  # lost a race for a unique value
            message = self.unique.get(exc.constraint_name or "")
            if message is None:
                raise
            raise ApiError(409, message) from exc


async def _taken(
    conn: asyncpg.Connection, table: str, column: str, value: str, id_column: str,
    except_id: str | None,
) -> bool:  # fmt: skip
    """Whether another row of the tenant holds ``value`` as legacy sees it (a renamed
    duplicate by the name it had in legacy), compared exactly, as legacy compares."""
    taken: bool = await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {table} WHERE "
        f"coalesce(extra -> $3 ->> '{column}', {column}) = $1 "
        f"AND {id_column} IS DISTINCT FROM $2)",
        value,
        except_id,
        RENAMED,
    )
    return taken


async def _audit(
    conn: asyncpg.Connection, call: Call, entity: str, operation: str, action: str,
    object_type: str, object_id: str, name: Any, *, previous: Any = None, current: Any = None,
) -> None:  # fmt: skip
    """The write's audit row and outbox row, in the write's transaction."""
    activity = await record_activity(
        conn, call, action, object_type, object_id, name, previous=previous, current=current
    )
    await record_outbox(
        conn, call.caller.subscription_id, entity, object_id, operation, {"activity": activity}
    )


# --- users --------------------------------------------------------------------------------------

_USERS = _Table(
    "users",
    keys=("id", "user_id", "subscription_id"),
    writable=(
        "email",
        "username",
        "full_name",
        "password_hash",
        "photo_url",
        "user_utc_offset",
        "is_active",
        "is_email_verified",
        "last_login_at",
        "created_at",
        "updated_at",
        "extra",
    ),
    jsonb=("extra",),
    unique={
        "users_email_unique": "Email already exists",
        "users_username_unique": "Username already exists",
    },
)


class UserHandlers:
    entity = "users"

    def __init__(self, pool: asyncpg.Pool, password_rounds: int) -> None:
        self._pool = pool
        self._rounds = password_rounds

    @staticmethod
    def document_of(record: Mapping[str, Any]) -> Document:
        assert USERS_SPEC.to_document is not None
        return USERS_SPEC.to_document({"users": [decoded_row(record, _USERS.jsonb)]}, _CONTEXT)

    @staticmethod
    def row_of(document: Document, stored: Mapping[str, Any] | None) -> Row:
        row = _mapped(USERS_SPEC, document)["users"][0]
        kept = None if stored is None else decoded_row(stored, _USERS.jsonb)
        return _kept_names(row, document, kept, ("email", "username"))

    @staticmethod
    async def _load(conn: asyncpg.Connection, user_id: str, *, lock: bool) -> asyncpg.Record:
        row = await conn.fetchrow(
            f"SELECT {_USERS.selected} FROM users WHERE user_id = $1"
            + (" FOR UPDATE" if lock else ""),
            user_id,
        )
        if row is None:
            raise ApiError(404, "User not found")
        return row

    @staticmethod
    async def _check_unique(
        conn: asyncpg.Connection, field: str, value: str, except_id: str | None
    ) -> None:
        if await _taken(conn, "users", field, value, "user_id", except_id):
            raise ApiError(409, f"{field.capitalize()} already exists")

    async def get_users(self, call: Call) -> RecordedResponse:
        page = call.page()
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            rows = await conn.fetch(
                f"SELECT {_USERS.selected}, {LISTED_TOTAL} FROM users "
                "ORDER BY created_at DESC NULLS LAST, user_id LIMIT $1 OFFSET $2",
                page.per_page,
                page.skip,
            )
            total = await listed_total(conn, rows, page.skip, "SELECT count(*) FROM users")
        items = [render_fields(self.document_of(row), USER) for row in rows]
        return listed("Users fetched successfully", items, total)

    async def get_user(self, call: Call) -> RecordedResponse:
        user_id = call.query_id("UserId")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            row = await self._load(conn, user_id, lock=False)
        return ok("User fetched successfully", render_fields(self.document_of(row), USER))

    async def add_user(self, call: Call) -> RecordedResponse:
        email = check_email(call.text("email"))
        username = call.text("username")
        full_name = call.optional_text("full_name")
        password = call.text("password")
        caller = call.caller
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            await self._check_unique(conn, "email", email, None)
            await self._check_unique(conn, "username", username, None)
        # bcrypt takes its time: outside the transaction, off the event loop; the unique
        # indexes decide a race won meanwhile
        hashed = await hash_password(password, self._rounds)
        document: Document = {
            "UserId": new_id("user"),
            "subscription_id": caller.subscription_id,
            "email": email,
            "username": username,
            "full_name": full_name,
            "password": hashed,
            "photo_url": None,
            "user_utc_offset": None,
            "is_active": True,
            "is_email_verified": False,
            "last_login_at": None,
            "created_at": call.now,
            "updated_at": call.now,
        }
        rendered = render_fields(document, USER)
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            await ensure_subscription(conn, caller.subscription_id)
            await _USERS.save(conn, self.row_of(document, None), insert=True)
            await _audit(conn, call, self.entity, "insert", "created", "user",
                         document["UserId"], username, current=rendered)  # fmt: skip
        return created("User added successfully", rendered)

    async def update_user(self, call: Call) -> RecordedResponse:
        user_id = call.text("UserId")
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            stored = await self._load(conn, user_id, lock=True)
            document = self.document_of(stored)
            previous = render_fields(document, USER)
            # legacy's checks in legacy's order: the first failing one answers
            if call.given("email"):
                document["email"] = check_email(call.text("email"))
                await self._check_unique(conn, "email", document["email"], user_id)
            if call.given("username"):
                document["username"] = call.text("username")
                await self._check_unique(conn, "username", document["username"], user_id)
            for field in ("full_name", "photo_url"):
                if call.given(field):
                    document[field] = call.optional_text(field)
            if call.given("user_utc_offset"):
                offset = call.optional_text("user_utc_offset")
                if offset is not None and not UTC_OFFSET.match(offset):
                    raise ApiError(400, "user_utc_offset must look like +05:30")
                document["user_utc_offset"] = offset
            if call.given("is_active"):
                document["is_active"] = call.optional_flag("is_active")
            if call.given("password"):
                # hashed here, where legacy hashes it, so its 400 comes in legacy's turn;
                # only this user's row waits meanwhile
                document["password"] = await hash_password(call.text("password"), self._rounds)
            document["updated_at"] = call.now
            await _USERS.save(conn, self.row_of(document, stored), insert=False)
            rendered = render_fields(document, USER)
            await _audit(conn, call, self.entity, "update", "updated", "user", user_id,
                         document.get("username"), previous=previous, current=rendered)  # fmt: skip
        return ok("User updated successfully", rendered)


# --- groups and roles -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    membership: Membership
    table: _Table
    rendered: Rendered
    name_column: str
    label: str  # "Group" / "Role": the messages' word

    @property
    def spec(self) -> EntitySpec:
        return SPEC_OF[self.membership.table]


_GROUP_KIND = _Kind(
    GROUPS,
    _Table(
        "groups",
        keys=("id", "group_id", "subscription_id"),
        writable=("group_name", "description", "created_by", "created_at", "extra"),
        jsonb=("extra",),
        unique={"groups_name_unique": "Group name already exists"},
    ),
    GROUP,
    "group_name",
    "Group",
)
_ROLE_KIND = _Kind(
    ROLES,
    _Table(
        "roles",
        keys=("id", "role_id", "subscription_id"),
        writable=("role_name", "description", "permissions", "created_at", "extra"),
        jsonb=("permissions", "extra"),
        unique={"roles_name_unique": "Role name already exists"},
    ),
    ROLE,
    "role_name",
    "Role",
)


class MemberHandlers:
    """Groups or roles: documents whose members are rows of their own."""

    def __init__(self, pool: asyncpg.Pool, kind: str) -> None:
        self._pool = pool
        self._kind = _GROUP_KIND if kind == "groups" else _ROLE_KIND
        self.entity = self._kind.membership.table

    # rows <-> documents

    def _members_sql(self, alias: str) -> str:
        m = self._kind.membership
        return (
            f"ARRAY(SELECT l.user_id FROM {m.link_table} AS l WHERE l.{m.id_field} = "
            f"{alias}.{m.id_field} ORDER BY l.position, l.user_id) AS members"
        )

    def document_of(self, record: Mapping[str, Any]) -> Document:
        kind = self._kind
        row = decoded_row(record, kind.table.jsonb)
        members = row.pop("members")
        links = [{"user_id": user, "position": i} for i, user in enumerate(members)]
        assert kind.spec.to_document is not None
        return kind.spec.to_document(
            {kind.membership.table: [row], kind.membership.link_table: links}, _CONTEXT
        )

    async def _load(self, conn: asyncpg.Connection, legacy_id: str) -> asyncpg.Record:
        """The document's row, locked: its member changes queue behind one another."""
        kind = self._kind
        id_column = kind.membership.id_field
        # Lock first, read after: a statement sees the rows as they were when it began, so
        # reading the members in the statement that waited for the lock would miss those
        # the holder of the lock added (read committed: the next statement sees them).
        locked = await conn.fetchval(
            f"SELECT true FROM {kind.table.name} WHERE {id_column} = $1 FOR UPDATE", legacy_id
        )
        row = None
        if locked:
            row = await conn.fetchrow(
                f"SELECT {kind.table.selected}, {self._members_sql('d')} "
                f"FROM {kind.table.name} AS d WHERE {id_column} = $1",
                legacy_id,
            )
        if row is None:
            raise ApiError(404, f"{kind.label} not found")
        return row

    async def _save(
        self, conn: asyncpg.Connection, call: Call, document: Document, stored: Any, *,
        insert: bool,
    ) -> None:  # fmt: skip
        kind, m = self._kind, self._kind.membership
        mapped = _mapped(kind.spec, document)
        kept = None if stored is None else decoded_row(stored, kind.table.jsonb)
        row = _kept_names(mapped[m.table][0], document, kept, (kind.name_column,))
        await kind.table.save(conn, row, insert=insert)
        links = mapped[m.link_table]
        users = [link["user_id"] for link in links]
        if not insert:
            await conn.execute(
                f"DELETE FROM {m.link_table} WHERE {m.id_field} = $1 "
                "AND NOT (user_id = ANY($2::text[]))",
                row[m.id_field],
                users,
            )
        if links:
            # a new member is a new row (added now); a kept one moves only if its index did
            await conn.execute(
                f"""INSERT INTO {m.link_table} AS t
                        ({m.id_field}, user_id, subscription_id, position, added_at, synced_at)
                    SELECT $1, u, $2, p, $3, now()
                    FROM unnest($4::text[], $5::int[]) AS x(u, p)
                    ON CONFLICT ({m.id_field}, user_id) DO UPDATE
                    SET position = EXCLUDED.position, synced_at = now()
                    WHERE t.position IS DISTINCT FROM EXCLUDED.position""",
                row[m.id_field],
                row["subscription_id"],
                call.now,
                users,
                [link["position"] for link in links],
            )

    # endpoints

    async def get_list(self, call: Call) -> RecordedResponse:
        kind = self._kind
        page = call.page()
        table, id_column = kind.table.name, kind.membership.id_field
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            rows = await conn.fetch(
                f"SELECT {kind.table.selected}, {self._members_sql('d')}, {LISTED_TOTAL} "
                f"FROM {table} AS d ORDER BY created_at DESC NULLS LAST, {id_column} "
                "LIMIT $1 OFFSET $2",
                page.per_page,
                page.skip,
            )
            total = await listed_total(conn, rows, page.skip, f"SELECT count(*) FROM {table}")
        items = [render_fields(self.document_of(row), kind.rendered) for row in rows]
        return listed(f"{kind.label}s fetched successfully", items, total)

    async def _check_name(self, conn: asyncpg.Connection, name: str) -> None:
        kind = self._kind
        column, id_column = kind.name_column, kind.membership.id_field
        if await _taken(conn, kind.table.name, column, name, id_column, None):
            raise ApiError(409, f"{kind.label} name already exists")

    async def add(self, call: Call) -> RecordedResponse:
        kind, caller = self._kind, call.caller
        permissions = None
        if kind is _ROLE_KIND:
            permissions = call.optional_list_of_text("permissions")
            if permissions is None:
                raise ApiError(400, "permissions is required")
        name = call.text(kind.name_column)
        legacy_id = new_id(kind.membership.kind)
        document: Document = {
            kind.membership.id_field: legacy_id,
            "subscription_id": caller.subscription_id,
            kind.name_column: name,
            "description": None,
        }
        async with tenant_transaction(self._pool, caller.subscription_id) as conn:
            await self._check_name(conn, name)
            document["description"] = call.optional_text("description")
            if kind is _ROLE_KIND:
                document["permissions"] = permissions
                document[MEMBERS] = []
            else:
                document[MEMBERS] = []
                document["created_by"] = caller.user_id
            document["created_at"] = call.now
            rendered = render_fields(document, kind.rendered)
            await ensure_subscription(conn, caller.subscription_id)
            await self._save(conn, call, document, None, insert=True)
            await _audit(conn, call, self.entity, "insert", "created", kind.membership.kind,
                         legacy_id, name, current=rendered)  # fmt: skip
        return created(f"{kind.label} added successfully", rendered)

    async def _change_members(self, call: Call, *, add: bool, status: int) -> RecordedResponse:
        kind = self._kind
        legacy_id = call.text(kind.membership.id_field)
        async with tenant_transaction(self._pool, call.caller.subscription_id) as conn:
            stored = await self._load(conn, legacy_id)
            user_id = call.text("UserId")
            if add and not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1)", user_id
            ):
                raise ApiError(404, "User not found")
            document = self.document_of(stored)
            previous = render_fields(document, kind.rendered)
            # legacy's change of the array as found (a dirty one stays as dirty as it was)
            listed = document.get(MEMBERS)
            members = list(listed) if isinstance(listed, list) else []
            if add:
                if user_id not in members:
                    members.append(user_id)
            else:
                members = [member for member in members if member != user_id]
            document[MEMBERS] = members
            await self._save(conn, call, document, stored, insert=False)
            rendered = render_fields(document, kind.rendered)
            await _audit(conn, call, self.entity, "update", "updated", kind.membership.kind,
                         legacy_id, document.get(kind.name_column), previous=previous,
                         current=rendered)  # fmt: skip
        message = f"{kind.label} updated successfully"
        return created(message, rendered) if status == 201 else ok(message, rendered)

    async def add_member(self, call: Call) -> RecordedResponse:
        # addUserToGroup answers 201, as legacy's add* endpoints do; assignRole 200
        return await self._change_members(
            call, add=True, status=201 if self._kind is _GROUP_KIND else 200
        )

    async def remove_member(self, call: Call) -> RecordedResponse:
        return await self._change_members(call, add=False, status=200)
