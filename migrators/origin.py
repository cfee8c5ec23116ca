"""The origin marker: how a write made by the reverse sync is told apart in MongoDB.

The reverse sync (PostgreSQL -> MongoDB, in mode ``new``) sets
:data:`ORIGIN_FIELD` in the same update that carries an outbox row into a
legacy document, with a value from :func:`origin_marker` naming that outbox
row. The forward sync must not take such a write for a new legacy change:
applying it back could overwrite a newer PostgreSQL row with an older outbox
state, and a sync that answered it with another write would loop forever.

How each feed recognizes an echo:

* change streams: an ``update`` event whose ``updateDescription.updatedFields``
  contains :data:`ORIGIN_FIELD` (the marker changes with every reverse write,
  since it names a new outbox row), or an ``insert``/``replace`` whose
  document carries it. A later legacy update leaves the old marker in the
  document but not among its updated fields, so it is still applied;
* polling: the touched-ids stream only ever holds writes made through the
  proxy's legacy path, never the reverse sync's; and the worker holds back any
  document that still has outbox rows waiting (PostgreSQL is ahead there).

The forward sync writes no outbox row, whatever it applies, so nothing it does
can travel back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ORIGIN_FIELD",
    "REVERSE_SYNC",
    "is_reverse_sync_change",
    "mark_reverse",
    "origin_marker",
    "strip_origin",
]

ORIGIN_FIELD = "_strangler_origin"
REVERSE_SYNC = "reverse-sync"


def origin_marker(outbox_id: int) -> dict[str, Any]:
    """The value the reverse sync sets in :data:`ORIGIN_FIELD` when it applies ``outbox_id``."""
    return {"by": REVERSE_SYNC, "outbox_id": int(outbox_id)}


def mark_reverse(document: Mapping[str, Any], outbox_id: int) -> dict[str, Any]:
    """A copy of ``document`` carrying the marker of the reverse write of ``outbox_id``."""
    return {**document, ORIGIN_FIELD: origin_marker(outbox_id)}


def strip_origin(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document without the marker: it is bookkeeping, never data to migrate or compare."""
    return {key: value for key, value in document.items() if key != ORIGIN_FIELD}


def _is_marker(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("by") == REVERSE_SYNC


def is_reverse_sync_change(event: Mapping[str, Any]) -> bool:
    """Whether a change event (MongoDB's documented format) was made by the reverse sync."""
    operation = event.get("operationType")
    if operation == "update":
        description = event.get("updateDescription") or {}
        updated = description.get("updatedFields") or {}
        return ORIGIN_FIELD in updated and _is_marker(updated[ORIGIN_FIELD])
    if operation in ("insert", "replace"):
        document = event.get("fullDocument") or {}
        return _is_marker(document.get(ORIGIN_FIELD))
    return False
