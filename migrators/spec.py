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
    "Reference",
    "Row",
    "UniqueName",
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
    """What a pure mapping may use from outside.

    ``seal`` and ``open`` take the associated data that binds a ciphertext to
    its row (``migrators.crypto.associated_data``), so that a ciphertext copied
    onto another row no longer opens; ``migrators.crypto.SecretBox.context()``
    builds a context with both.
    """

    # Encrypts a secret: (plaintext, associated data) -> (ciphertext, key id).
    seal: Callable[[bytes, bytes], tuple[bytes, str]] | None = None
    # Decrypts for the reverse direction: (ciphertext, key id, associated data) -> plaintext.
    open: Callable[[bytes, str, bytes], bytes] | None = None
    # The moment the mapping is run, for fields the legacy document lacks.
    now: datetime | None = None


@dataclass(frozen=True)
class UniqueName:
    """A column the target keeps unique among live rows (a partial unique index) where
    legacy holds duplicates. The writer resolves a clash the same way whatever order the
    rows arrive in: the row created first (then the smaller legacy id) keeps the value; the
    others get ``value [legacy id]`` and the value as found is kept in
    ``extra["$renamed"][column]`` so that ``to_document`` still gives the legacy value."""

    column: str  # e.g. "connector_name"
    scope: tuple[str, ...] = ("subscription_id",)
    fold_case: bool = False  # the index is on lower(column)
    live: str = "TRUE"  # SQL predicate of the partial index over the table's columns
    order_by: str = "created_at"  # the earliest keeps the value


@dataclass(frozen=True)
class Reference:
    """A column that names a row of another table which may be missing (kept, reported)."""

    column: str  # e.g. "created_by"
    table: str  # e.g. "users"
    target_column: str  # e.g. "user_id"
    kind: str  # the Note kind reported, e.g. "dangling_created_by"
    # A required reference that matches nothing cannot be kept (a foreign key wants it):
    # the document is quarantined with ``kind`` as the reason instead of noted.
    required: bool = False


@dataclass(frozen=True)
class EntitySpec:
    """One entity of the migration."""

    name: str  # the migration entity's name, e.g. "connectors" or "workflows"
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
    # The schema.keys entity whose row_key() names the first table's rows ("connector").
    key_entity: str = ""
    # The first table's column holding the legacy id ("connector_id").
    legacy_id_column: str = ""
    # The legacy document in normalized form: what to_document(map_document(doc)) gives.
    # Verify compares MongoDB documents through it; the round-trip tests check both agree.
    normalize: Callable[[Document], Document] | None = None
    # The document as it may be stored outside MongoDB (the quarantine): secrets sealed.
    seal_document: Callable[[Document, MappingContext], Document] | None = None
    # The document as it may be shown (reports, verify output): secrets and hashes masked.
    redact: Callable[[Document], Document] | None = None
    unique_names: tuple[UniqueName, ...] = ()
    references: tuple[Reference, ...] = ()
    # The routing_rules.yaml entity this one switches with (default: its own name). The
    # workspace tree is one flag entity made of several collections: they are backfilled,
    # synced, verified and gated together.
    flag_entity: str = ""

    @property
    def routing_entity(self) -> str:
        return self.flag_entity or self.name
