"""``connectors`` -> ``connectors``, with the credentials sealed in the application.

``connection_detail`` is split (:func:`migrators.crypto.split_secrets`): the
credential keys (``password`` and the others of ``SECRET_KEYS``) are sealed
together as one JSON object into ``secret_ciphertext`` under ``secret_key_id``,
bound to the connector id; the rest is stored as found, ``port`` stored as a
string included (the API renders ``connection_detail`` as stored). A
``connection_detail`` that is not an object is sealed whole: it may hold
anything. Only top-level keys are inspected.

``d_flag`` becomes ``is_deleted`` (read as the legacy reads it: missing is
false, ``"true"``/``"false"`` strings count). Duplicate live names within a
tenant are resolved by the writer (earliest keeps the name, see
:class:`migrators.spec.UniqueName`); a ``created_by`` user that does not exist
keeps the row and is reported.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from migrators.crypto import SECRET_KEYS, SecretError, associated_data, split_secrets
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
from schema.keys import row_key

__all__ = ["FIELDS", "SPECS", "redact_connector", "seal_connector_document"]

MASKED = "********"
DETAIL = "connection_detail"
_WHOLE = "$whole"  # the sealed payload of a connection_detail that is not an object
_SEALED = "$sealed"

FIELDS: tuple[Field, ...] = (
    Field("connector_id", "connector_id"),
    Field("subscription_id", "subscription_id"),
    Field("connector_name", "connector_name"),
    Field("connector_type", "connector_type"),
    Field("description", "description"),
    Field("is_active", "is_active", "bool"),
    Field("test_status", "test_status", "enum", ("success", "failed", "untested")),
    Field("last_tested_at", "last_tested_at", "datetime"),
    Field("created_by", "created_by"),
    Field("created_at", "created_at", "datetime"),
    Field("updated_at", "updated_at", "datetime"),
    Field("d_flag", "is_deleted", "flag"),
)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(to_json(value), sort_keys=True, separators=(",", ":")).encode()


def _seal(ctx: MappingContext, connector_id: str, payload: Any) -> tuple[bytes, str]:
    if ctx.seal is None:
        raise SecretError("connector secrets cannot be stored: no sealing key was given")
    return ctx.seal(_json_bytes(payload), associated_data(connector_id))


def map_connector(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
    connector_id = document.get("connector_id")
    if not isinstance(connector_id, str) or not connector_id.strip():
        return Quarantined("missing_id", f"connector_id is {connector_id!r}")
    subscription_id = document.get("subscription_id")
    if not isinstance(subscription_id, str) or not subscription_id.strip():
        return Quarantined("missing_subscription", f"subscription_id is {subscription_id!r}")
    columns, extra, notes = read_fields(document, FIELDS, handled=(DETAIL,))
    detail = document.get(DETAIL)
    public: dict[str, Any] = {}
    secret: Any = None
    if isinstance(detail, dict):
        public, found = split_secrets(detail)
        secret = found or None
    elif detail is None:
        extra.setdefault(UNREADABLE, {})[DETAIL] = None
    else:
        secret = {_WHOLE: detail}
        notes.append(Note("unreadable_value", "connection_detail is not an object; sealed whole"))
    ciphertext, key_id = _seal(ctx, connector_id, secret) if secret else (None, None)
    row: Row = {
        "id": row_key("connector", connector_id),
        **columns,
        DETAIL: to_json(public),
        "secret_ciphertext": ciphertext,
        "secret_key_id": key_id,
        "extra": extra,
    }
    return Mapped({"connectors": [row]}, tuple(notes))


def open_secret(row: Mapping[str, Any], ctx: MappingContext) -> Any:
    """The sealed part of a connector row's ``connection_detail`` (None if there is none)."""
    ciphertext = row.get("secret_ciphertext")
    if ciphertext is None:
        return None
    if ctx.open is None:
        raise SecretError("connector secrets cannot be read: no key was given")
    plain = ctx.open(bytes(ciphertext), row["secret_key_id"], associated_data(row["connector_id"]))
    return from_json(json.loads(plain))


def connector_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
    row = rows["connectors"][0]
    extra = json_value(row.get("extra")) or {}
    document = write_fields(row, FIELDS, extra)
    if DETAIL in extra.get(UNREADABLE, {}):
        detail = from_json(extra[UNREADABLE][DETAIL])
    else:
        secret = open_secret(row, ctx)
        public = from_json(json_value(row.get(DETAIL)) or {})
        if isinstance(secret, dict) and _WHOLE in secret:
            detail = secret[_WHOLE]
        else:
            detail = {**public, **(secret or {})}
    return {**document, DETAIL: detail}


def normalize_connector(document: Document) -> Document:
    normalized = normalize_fields(document, FIELDS, handled=(DETAIL,))
    normalized[DETAIL] = from_json(to_json(document.get(DETAIL)))
    return normalized


def _mask(detail: Any) -> Any:
    if not isinstance(detail, dict):
        return MASKED if detail is not None else None
    return {k: (MASKED if k.lower() in SECRET_KEYS else v) for k, v in detail.items()}


def redact_connector(document: Document) -> Document:
    """For reports and verify output: every secret value masked."""
    return {**document, DETAIL: _mask(document.get(DETAIL))}


def seal_connector_document(document: Document, ctx: MappingContext) -> Document:
    """For the quarantine: the original with its secrets sealed (recoverable with the key)."""
    connector_id = document.get("connector_id")
    detail = document.get(DETAIL)
    if detail is None:
        return dict(document)
    public, secret = split_secrets(detail) if isinstance(detail, dict) else ({}, {_WHOLE: detail})
    if not secret:
        return dict(document)
    bound = connector_id if isinstance(connector_id, str) else "?"
    ciphertext, key_id = _seal(ctx, bound, secret)
    sealed = {"ciphertext": base64.b64encode(ciphertext).decode(), "key_id": key_id,
              "bound_to": bound}  # fmt: skip
    return {**document, DETAIL: {**public, _SEALED: sealed}}


SPECS = (
    EntitySpec(
        name="connectors",
        collection="connectors",
        id_field="connector_id",
        tables=("connectors",),
        map_document=map_connector,
        to_document=connector_document,
        depends_on=("subscriptions", "users"),
        key_entity="connector",
        legacy_id_column="connector_id",
        normalize=normalize_connector,
        seal_document=seal_connector_document,
        redact=redact_connector,
        unique_names=(UniqueName("connector_name", live="NOT is_deleted"),),
        references=(
            Reference(
                "subscription_id",
                "subscriptions",
                "subscription_id",
                "unknown_subscription",
                required=True,
            ),
            Reference("created_by", "users", "user_id", "dangling_created_by"),
        ),
    ),
)
