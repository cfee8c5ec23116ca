"""``Accounts`` -> ``subscriptions``: one row per tenant.

A document without a usable ``subscription_id`` (missing, empty or not a
string) cannot become a tenant: it is quarantined. Every other value is kept,
unreadable ones in ``extra`` (see :mod:`migrators.entities.common`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from migrators.entities.common import Field, json_value, normalize_fields, read_fields, write_fields
from migrators.spec import Document, EntitySpec, Mapped, MappingContext, Quarantined, Row
from schema.keys import row_key
from schema.tenancy import PLACEHOLDER

__all__ = ["FIELDS", "SPECS"]

FIELDS: tuple[Field, ...] = (
    Field("subscription_id", "subscription_id"),
    Field("company_name", "company_name"),
    Field("plan_type", "plan_type", "enum", ("free", "team", "enterprise")),
    Field("status", "status", "enum", ("active", "suspended")),
    Field("created_at", "created_at", "datetime"),
)


def map_account(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
    subscription_id = document.get("subscription_id")
    if not isinstance(subscription_id, str) or not subscription_id.strip():
        return Quarantined("missing_id", f"subscription_id is {subscription_id!r}")
    columns, extra, notes = read_fields(document, FIELDS)
    row: Row = {"id": row_key("subscription", subscription_id), **columns, "extra": extra}
    return Mapped({"subscriptions": [row]}, tuple(notes))


def account_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
    row = rows["subscriptions"][0]
    return write_fields(row, FIELDS, json_value(row.get("extra")) or {})


def normalize_account(document: Document) -> Document:
    return normalize_fields(document, FIELDS)


SPECS = (
    EntitySpec(
        name="subscriptions",
        collection="Accounts",
        id_field="subscription_id",
        tables=("subscriptions",),
        map_document=map_account,
        to_document=account_document,
        key_entity="subscription",
        legacy_id_column="subscription_id",
        normalize=normalize_account,
        placeholder=f"extra ? '{PLACEHOLDER}'",
    ),
)
