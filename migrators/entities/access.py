"""``groups`` and ``roles`` -> their rows, and the rows -> the documents.

Legacy keeps a group's (a role's) members inside its document, as a ``users`` array of
``UserId``; the target keeps one membership row per member (``user_groups``,
``user_roles``) with its index in that array (``position``), so that the array comes
back in legacy's order:

* ``groups`` -> ``groups`` + ``user_groups``; ``roles`` -> ``roles`` + ``user_roles``,
  applied by the writer as a document's child rows (:mod:`migrators.tree_apply`): an edit
  of the members touches only the membership rows that changed;
* members are kept as found, not held to a foreign key on ``users``: a group may name a
  user that does not exist (dirty data) or that the users sync has not brought over yet.
  Such a member is a row like any other, and reported when the group is applied
  (``unknown_member``), never dropped;
* a ``users`` array that is missing, null, not a list, or that repeats ids or holds
  non-text ones: rows for its distinct text ids, and the array as found kept in
  ``extra["$unreadable"]["users"]`` (reported), from where the document takes it back;
* ``permissions`` stored as a string (``"read,write"``, or JSON text of an array): the
  column holds the permissions read from it (split on commas and blanks), the string as
  found is kept for the document; any other non-list value is kept as found, its column
  ``[]``;
* duplicate names in a tenant: the first created keeps the name, the others are stored
  renamed and reported (:class:`migrators.spec.UniqueName`), the document gives the name
  as found;
* string, epoch or missing dates: read by :mod:`migrators.entities.common`, an unreadable
  one kept as found.

Quarantined (never dropped): no usable id, no usable ``subscription_id``, a tenant with no
``Accounts`` row (the foreign key wants one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from migrators.entities.common import (
    UNREADABLE,
    Field,
    from_json,
    json_value,
    normalize_fields,
    read_fields,
    to_json,
    write_fields,
)
from migrators.entities.tree_fields import unreadable
from migrators.spec import (
    Document,
    EntitySpec,
    Mapped,
    MappingContext,
    Note,
    Quarantined,
    Reference,
    Row,
    UniqueName,
)
from migrators.tree_apply import AFTER_APPLY, CHILDREN, AfterApply, ChildTable
from schema.keys import row_key

__all__ = [
    "GROUP_FIELDS",
    "MEMBERS",
    "ROLE_FIELDS",
    "SPECS",
    "Membership",
    "members_of",
    "permissions_from_text",
]

MEMBERS = "users"
PERMISSIONS = "permissions"


@dataclass(frozen=True)
class Membership:
    """How one kind of document keeps its members."""

    kind: str  # "group" / "role": the key entity and the id prefix of the field names
    table: str  # the document's table
    link_table: str  # the membership rows
    id_field: str  # the legacy id field, also the membership's column naming the document

    def after_apply(self) -> AfterApply:
        return _unknown_members(self)


GROUPS = Membership("group", "groups", "user_groups", "group_id")
ROLES = Membership("role", "roles", "user_roles", "role_id")

GROUP_FIELDS: tuple[Field, ...] = (
    Field("group_id", "group_id"),
    Field("subscription_id", "subscription_id"),
    Field("group_name", "group_name"),
    Field("description", "description"),
    Field("created_by", "created_by"),
    Field("created_at", "created_at", "datetime"),
)
ROLE_FIELDS: tuple[Field, ...] = (
    Field("role_id", "role_id"),
    Field("subscription_id", "subscription_id"),
    Field("role_name", "role_name"),
    Field("description", "description"),
    Field("created_at", "created_at", "datetime"),
)
_FIELDS = {"group": GROUP_FIELDS, "role": ROLE_FIELDS}
_HANDLED = {"group": (MEMBERS,), "role": (MEMBERS, PERMISSIONS)}


def members_of(listed: Any) -> list[str]:
    """The distinct text ids of a ``users`` value, in order of first appearance."""
    if not isinstance(listed, list):
        return []
    seen: dict[str, None] = {}
    for member in listed:
        if isinstance(member, str) and member and member not in seen:
            seen[member] = None
    return list(seen)


def _membership_rows(
    document: Mapping[str, Any], membership: Membership, legacy_id: str, subscription_id: str,
    extra: dict[str, Any],
) -> tuple[list[Row], list[Note]]:  # fmt: skip
    listed = document.get(MEMBERS)
    distinct = members_of(listed)
    positions: dict[str, int] = {}
    if isinstance(listed, list):
        for position, member in enumerate(listed):
            if isinstance(member, str):
                positions.setdefault(member, position)
    rows = [
        {membership.id_field: legacy_id, "user_id": member, "subscription_id": subscription_id,
         "position": positions[member]}
        for member in distinct
    ]  # fmt: skip
    if isinstance(listed, list) and len(distinct) == len(listed):
        return rows, []
    unreadable(extra, MEMBERS, listed)
    if listed is None:  # missing or null: nothing to report, the API renders it null
        return rows, []
    detail = f"{MEMBERS} of {legacy_id} is not a list of distinct ids; kept as found"
    return rows, [Note("unreadable_value", f"{detail}: {listed!r:.60}")]


_PERMISSION_TEXT = re.compile(r"[\s,;]+")


def permissions_from_text(text: str) -> list[str]:
    """The permissions a string names: JSON text of a list of strings, or a list separated
    by commas, semicolons or blanks (``"read, write"``)."""
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, list) and all(isinstance(item, str) for item in decoded):
        return list(decoded)
    return [part for part in _PERMISSION_TEXT.split(text) if part]


def _permissions(document: Mapping[str, Any], extra: dict[str, Any]) -> tuple[Any, list[Note]]:
    value = document.get(PERMISSIONS)
    if isinstance(value, list):
        return to_json(value), []
    unreadable(extra, PERMISSIONS, value)
    if value is None:
        return [], []
    read = permissions_from_text(value) if isinstance(value, str) else []
    return read, [Note("unreadable_value", f"{PERMISSIONS} kept as found: {value!r:.60}")]


def _mapper(membership: Membership) -> Any:
    fields, handled = _FIELDS[membership.kind], _HANDLED[membership.kind]

    def map_document(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
        legacy_id = document.get(membership.id_field)
        if not isinstance(legacy_id, str) or not legacy_id.strip():
            return Quarantined("missing_id", f"{membership.id_field} is {legacy_id!r}")
        subscription_id = document.get("subscription_id")
        if not isinstance(subscription_id, str) or not subscription_id.strip():
            return Quarantined("missing_subscription", f"subscription_id is {subscription_id!r}")
        columns, extra, notes = read_fields(document, fields, handled=handled)
        members, found = _membership_rows(document, membership, legacy_id, subscription_id, extra)
        notes += found
        row: Row = {"id": row_key(membership.kind, legacy_id), **columns}
        if membership.kind == "role":
            row[PERMISSIONS], found = _permissions(document, extra)
            notes += found
        row["extra"] = extra
        return Mapped({membership.table: [row], membership.link_table: members}, tuple(notes))

    return map_document


def _rebuilder(membership: Membership) -> Any:
    fields = _FIELDS[membership.kind]

    def to_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
        row = rows[membership.table][0]
        extra = json_value(row.get("extra")) or {}
        document = write_fields(row, fields, extra)
        kept = extra.get(UNREADABLE, {})
        if MEMBERS in kept:
            document[MEMBERS] = from_json(kept[MEMBERS])
        else:
            ordered = sorted(
                rows.get(membership.link_table, ()), key=lambda r: (r["position"], r["user_id"])
            )
            document[MEMBERS] = [r["user_id"] for r in ordered]
        if membership.kind == "role":
            if PERMISSIONS in kept:
                document[PERMISSIONS] = from_json(kept[PERMISSIONS])
            else:
                document[PERMISSIONS] = from_json(json_value(row.get(PERMISSIONS)))
        return document

    return to_document


def _normalizer(membership: Membership) -> Any:
    fields, handled = _FIELDS[membership.kind], _HANDLED[membership.kind]

    def normalize(document: Document) -> Document:
        normalized = normalize_fields(document, fields, handled=handled)
        for name in handled:
            normalized[name] = from_json(to_json(document.get(name)))
        return normalized

    return normalize


def _unknown_members(membership: Membership) -> AfterApply:
    async def check(conn: asyncpg.Connection, legacy_ids: list[str]) -> list[tuple[str, Note]]:
        found = await conn.fetch(
            f"""SELECT m.{membership.id_field} AS owner, m.user_id FROM {membership.link_table} AS m
                WHERE m.{membership.id_field} = ANY($1::text[])
                AND NOT EXISTS (SELECT 1 FROM users AS u WHERE u.user_id = m.user_id)
                ORDER BY 1, 2""",
            legacy_ids,
        )
        return [
            (
                record["owner"],
                Note(
                    "unknown_member",
                    f"{MEMBERS} names {record['user_id']!r}, which matches no users row; "
                    "membership kept",
                ),
            )
            for record in found
        ]

    return check


def _spec(
    membership: Membership, name_column: str, references: tuple[Reference, ...]
) -> EntitySpec:
    return EntitySpec(
        name=membership.table,
        collection=membership.table,
        id_field=membership.id_field,
        tables=(membership.table, membership.link_table),
        map_document=_mapper(membership),
        to_document=_rebuilder(membership),
        depends_on=("subscriptions", "users"),
        key_entity=membership.kind,
        legacy_id_column=membership.id_field,
        normalize=_normalizer(membership),
        unique_names=(UniqueName(name_column, live=f"{name_column} IS NOT NULL"),),
        references=references,
        extra={
            CHILDREN: (
                ChildTable(
                    membership.link_table,
                    parent_column=membership.id_field,
                    key=(membership.id_field, "user_id"),
                    versioned=False,
                ),
            ),
            AFTER_APPLY: membership.after_apply(),
        },
    )


_TENANT = Reference(
    "subscription_id", "subscriptions", "subscription_id", "unknown_subscription", required=True
)

SPECS = (
    _spec(
        GROUPS,
        "group_name",
        (_TENANT, Reference("created_by", "users", "user_id", "dangling_created_by")),
    ),
    _spec(ROLES, "role_name", (_TENANT,)),
)
