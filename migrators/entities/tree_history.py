"""A workflow's history: ``workflow_versions`` and ``workflowBkp`` documents -> rows, and back.

Neither collection gives its documents an id of their own: a row is keyed by the
document's ``_id`` in the form every migrator stage uses for such documents
(:func:`history_id`, the same as ``migrators.backfill.legacy_id_of``): an ObjectId's
hex string, as change events and the sweep name it.

* ``workflow_versions`` -> ``workflow_versions``: the entry's fields. Legacy stores no
  tenant on the entry, and an older backend's snapshot holds only the fields that
  changed: the tenant is that of its workflow, found by the writer
  (:class:`migrators.spec.TenantFrom`); the mapping passes on the snapshot's
  ``subscription_id`` when it has one, for a workflow that is nowhere else. No workflow
  id, or a version number that is no positive integer, cannot make a row: quarantined.
* ``workflowBkp`` -> ``workflow_backups``: a backup is a whole workflow document copied
  before an update, history and not a workflow: one row per copy with the copy kept
  whole (``snapshot``), its workflow, version and the moment it was taken indexed. Its
  tenant is its workflow's too (the copy's own ``subscription_id`` when there is none).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from bson import ObjectId, json_util
from bson.json_util import CANONICAL_JSON_OPTIONS

from migrators.entities.common import (
    Field,
    from_json,
    json_value,
    normalize_fields,
    read_fields,
    to_json,
    write_fields,
)
from migrators.entities.tree_fields import contains_nul, read_int, read_json, write_json
from migrators.spec import Document, Mapped, MappingContext, Quarantined, Row
from schema.keys import ROW_KEY_NAMESPACE, row_key
from strangler.contract import DirtyValue, parse_legacy_datetime
from strangler.jsonfast import encoded_json

__all__ = [
    "VERSION_FIELDS",
    "backup_document",
    "history_id",
    "map_backup",
    "map_version",
    "normalize_backup",
    "normalize_version",
    "version_document",
]

VERSION_FIELDS: tuple[Field, ...] = (
    Field("workflow_id", "workflow_id"),
    Field("change_type", "change_type", "enum", ("check_in", "check_out", "restore")),
    Field("comment", "comment"),
    Field("created_by", "created_by"),
    Field("created_at", "created_at", "datetime"),
)
_HANDLED = ("version_number", "workflow_snapshot")


def history_id(document: Mapping[str, Any]) -> str:
    value = document.get("_id")
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, ObjectId):
        return str(value)
    return "_id:" + json_util.dumps(value, json_options=CANONICAL_JSON_OPTIONS)


def _subscription_of(snapshot: Any) -> str | None:
    value = snapshot.get("subscription_id") if isinstance(snapshot, dict) else None
    return value if isinstance(value, str) and value.strip() else None


def _written(value: Any) -> Any:
    """A snapshot written once as JSON text (staged as it is; no NUL escape in it), or the
    value itself when that cannot be done (``contains_nul`` then looks at it as before)."""
    if value is None:
        return None
    return encoded_json(value) or value


def map_version(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
    version_id = history_id(document)
    snapshot = document.get("workflow_snapshot")
    subscription_id = _subscription_of(snapshot)  # None: the writer takes the workflow's
    workflow_id = document.get("workflow_id")
    if not isinstance(workflow_id, str) or not workflow_id.strip():
        return Quarantined("missing_workflow", f"workflow_id is {workflow_id!r}")
    number, readable = read_int(document.get("version_number"), minimum=1)
    if not readable or number is None:
        return Quarantined("unreadable_version_number", repr(document.get("version_number")))
    columns, extra, notes = read_fields(document, VERSION_FIELDS, handled=_HANDLED)
    row: Row = {
        "id": row_key("workflow_version", version_id),
        "version_id": version_id,
        "subscription_id": subscription_id,
        **columns,
        "version_number": number,
        "workflow_snapshot": _written(read_json(snapshot)),
        "extra": extra,
    }
    if contains_nul([row]) is not None:
        return Quarantined("nul_character", "a value holds a NUL character")
    return Mapped({"workflow_versions": [row]}, tuple(notes))


def version_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
    row = rows["workflow_versions"][0]
    document = write_fields(row, VERSION_FIELDS, json_value(row.get("extra")) or {})
    document["version_number"] = row.get("version_number")
    document["workflow_snapshot"] = write_json(row.get("workflow_snapshot"))
    return document


def normalize_version(document: Document) -> Document:
    normalized = normalize_fields(document, VERSION_FIELDS, handled=_HANDLED)
    normalized["version_number"], _ = read_int(document.get("version_number"), minimum=1)
    snapshot = document.get("workflow_snapshot")
    normalized["workflow_snapshot"] = None if snapshot is None else from_json(to_json(snapshot))
    return normalized


def _backup_key(backup_id: str) -> uuid.UUID:
    return uuid.uuid5(ROW_KEY_NAMESPACE, f"workflow_backup:{backup_id}")


def map_backup(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
    backup_id = history_id(document)
    subscription_id = _subscription_of(document)  # None: the writer takes the workflow's
    workflow_id = document.get("workflow_id")
    version, _ = read_int(document.get("version"), minimum=1)
    try:
        copied_at = parse_legacy_datetime(document.get("updated_at"))
    except DirtyValue:
        copied_at = None
    snapshot = {key: value for key, value in document.items() if key != "_id"}
    row: Row = {
        "id": _backup_key(backup_id),
        "backup_id": backup_id,
        "subscription_id": subscription_id,
        "workflow_id": workflow_id if isinstance(workflow_id, str) else None,
        "version": version,
        "copied_at": copied_at,
        "snapshot": _written(to_json(snapshot)),
        "extra": {},
    }
    if contains_nul([row]) is not None:
        return Quarantined("nul_character", "a value holds a NUL character")
    return Mapped({"workflow_backups": [row]})


def backup_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
    snapshot: Document = write_json(rows["workflow_backups"][0]["snapshot"])
    return snapshot


def normalize_backup(document: Document) -> Document:
    normalized: Document = from_json(to_json({k: v for k, v in document.items() if k != "_id"}))
    return normalized
