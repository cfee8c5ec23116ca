"""``users`` -> ``users``. The bcrypt hash moves as it is (``password_hash``): it is
already a one-way hash, the new side checks logins against it, and it is never
rendered by the API nor shown in reports (:func:`redact_user`).

Emails (case-insensitively) and usernames are unique per tenant in the target;
duplicates found in legacy data are resolved by the writer
(:class:`migrators.spec.UniqueName`): the earliest-created user keeps the address or
name, the others are stored renamed and reported, ``to_document`` still gives the
value as found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from migrators.entities.common import Field, json_value, normalize_fields, read_fields, write_fields
from migrators.spec import (
    Document,
    EntitySpec,
    Mapped,
    MappingContext,
    Quarantined,
    Reference,
    Row,
    UniqueName,
)
from schema.keys import row_key

__all__ = ["FIELDS", "SPECS", "redact_user"]

MASKED_HASH = "<bcrypt hash>"

FIELDS: tuple[Field, ...] = (
    Field("UserId", "user_id"),
    Field("subscription_id", "subscription_id"),
    Field("email", "email"),
    Field("username", "username"),
    Field("full_name", "full_name"),
    Field("password", "password_hash"),
    Field("photo_url", "photo_url"),
    Field("user_utc_offset", "user_utc_offset"),
    Field("is_active", "is_active", "bool"),
    Field("is_email_verified", "is_email_verified", "bool"),
    Field("last_login_at", "last_login_at", "datetime"),
    Field("created_at", "created_at", "datetime"),
    Field("updated_at", "updated_at", "datetime"),
)


def map_user(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
    user_id = document.get("UserId")
    if not isinstance(user_id, str) or not user_id.strip():
        return Quarantined("missing_id", f"UserId is {user_id!r}")
    subscription_id = document.get("subscription_id")
    if not isinstance(subscription_id, str) or not subscription_id.strip():
        return Quarantined("missing_subscription", f"subscription_id is {subscription_id!r}")
    columns, extra, notes = read_fields(document, FIELDS)
    row: Row = {"id": row_key("user", user_id), **columns, "extra": extra}
    return Mapped({"users": [row]}, tuple(notes))


def user_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
    row = rows["users"][0]
    return write_fields(row, FIELDS, json_value(row.get("extra")) or {})


def normalize_user(document: Document) -> Document:
    return normalize_fields(document, FIELDS)


def redact_user(document: Document) -> Document:
    shown = dict(document)
    if shown.get("password") is not None:
        shown["password"] = MASKED_HASH
    return shown


SPECS = (
    EntitySpec(
        name="users",
        collection="users",
        id_field="UserId",
        tables=("users",),
        map_document=map_user,
        to_document=user_document,
        depends_on=("subscriptions",),
        key_entity="user",
        legacy_id_column="user_id",
        normalize=normalize_user,
        redact=redact_user,
        unique_names=(
            UniqueName("email", fold_case=True, live="email IS NOT NULL"),
            UniqueName("username", live="username IS NOT NULL"),
        ),
        references=(
            Reference(
                "subscription_id",
                "subscriptions",
                "subscription_id",
                "unknown_subscription",
                required=True,
            ),
        ),
    ),
)
