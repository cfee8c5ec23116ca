"""What one entity's migration is made of: a declarative spec, registered once.

A spec names the legacy collection an entity comes from, the tables it goes
to, and the pure functions between the two. Everything generic (backfill,
the sync workers, verify, the reverse sync) is written once and driven by
specs; adding an entity means adding a spec module and one line in
``migrators.registry.SPEC_MODULES``, never an ``if entity == ...`` elsewhere.

The mapping functions are pure: data in, data out; no clients, no clock, no
``await``. What they need from outside (the connector-secret sealer, "now")
comes in through :class:`MappingContext`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = [
    "Document",
    "EntitySpec",
    "Mapped",
    "MappingContext",
    "Note",
    "Quarantined",
    "Row",
]

Document = dict[str, Any]
Row = dict[str, Any]


@dataclass(frozen=True)
class Note:
    """Something reported about a document that was migrated anyway (a dangling reference,
    a renamed duplicate, an unreadable value kept as found)."""

    kind: str
    detail: str


@dataclass(frozen=True)
class Mapped:
    """A document that becomes rows: table name -> rows, in the spec's table order."""

    rows: Mapping[str, Sequence[Row]]
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True)
class Quarantined:
    """A document that cannot become rows; kept whole with the reason, never dropped."""

    reason: str
    detail: str = ""


@dataclass(frozen=True)
class MappingContext:
    """What a pure mapping may use from outside."""

    # Encrypts a secret: plaintext bytes -> (ciphertext, key id).
    seal: Callable[[bytes], tuple[bytes, str]] | None = None
    # Decrypts for the reverse direction: (ciphertext, key id) -> plaintext bytes.
    open: Callable[[bytes, str], bytes] | None = None
    # The moment the mapping is run, for fields the legacy document lacks.
    now: datetime | None = None


@dataclass(frozen=True)
class EntitySpec:
    """One entity of the migration."""

    name: str  # the flag-table entity name, e.g. "connectors"
    collection: str  # the legacy collection, e.g. "connectors"
    id_field: str  # the legacy id field in the document, e.g. "connector_id"
    tables: tuple[str, ...]  # target tables, parents first
    map_document: Callable[[Document, MappingContext], Mapped | Quarantined]
    # Rows -> the legacy document they stand for (the reverse sync and verify use it).
    to_document: Callable[[Mapping[str, Sequence[Row]], MappingContext], Document] | None = None
    depends_on: tuple[str, ...] = ()  # entities whose rows this one references
    # Legacy fields that verify compares (after normalization); all mapped fields if empty.
    compared_fields: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)
