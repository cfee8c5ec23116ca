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
    "TenantFrom",
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
class TenantFrom:
    """Where the tenant of a history document comes from: the row its ``column`` names.

    Legacy gives history entries (``workflow_versions``, ``workflowBkp``) no tenant they
    can be trusted to carry: a version names its workflow and its snapshot may hold only
    the fields that changed. The tenant of such a document is that of the row its
    ``column`` names in ``table`` (``target_column``); when that row is not there, the
    tenant of the document of ``entity`` kept in the open quarantine, then the tenant the
    mapping found in the document itself. Only a document none of these name is
    quarantined, with ``kind`` as the reason. The writer resolves it inside the batch's
    transaction (``migrators.writer``); the mapping leaves ``subscription_id`` as the
    document gives it (possibly ``None``)."""

    column: str  # e.g. "workflow_id" in the document's row
    table: str  # e.g. "workflows"
    target_column: str  # e.g. "workflow_id"
    entity: str  # the migration entity of those rows, e.g. "workflows"
    kind: str  # the quarantine reason when nothing names the tenant, e.g. "unknown_workflow"


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
    # A history entity whose tenant is its parent's (single-table specs only).
    tenant_from: TenantFrom | None = None
    # Time series (rows partitioned by month): the created_at a document's row gets, so
    # that verify can compare a time window (and leave out what retention dropped).
    moment: Callable[[Document], datetime] | None = None
    # Entries are only ever added, each with an id of its own, on either side (activity):
    # the forward sync never rests for it, in no mode. An entry the reverse sync carried to
    # MongoDB comes back as the same row, and no entry changes, so the hazard that makes
    # the forward sync rest in new (an older state read back over a newer row) cannot be.
    append_only: bool = False
    # Its entries also travel in other entities' outbox rows (activity: a write on the new
    # side queues its audit entry with it, at payload[carried_as][legacy_id_column]). Until
    # that row is applied MongoDB lacks the entry on purpose, so the forward sync holds the
    # row back, as for the entity's own waiting outbox rows: a sweep reading the entry as
    # absent must not delete the row the reverse sync is about to carry across.
    carried_as: str = ""
    # Rows whose documents legacy changes without a client's write (no touched id names
    # them): an SQL predicate over the first table's columns. The polling feed reads those
    # documents again every second or so, instead of leaving them to the sweep. Job runs:
    # legacy's simulator moves a run queued -> running -> final in MongoDB itself.
    revisit: str = ""
    # Rows no legacy document made: an SQL predicate over the first table's columns. The
    # new side makes a subscriptions row for a tenant only a token named (LEGACY.md trusts
    # tokens as issued; every tenant table references the row). Sweep and verify leave
    # them out: the document's absence is not a deletion, and no document is missing.
    placeholder: str = ""
    # No client write names its documents (history: versions, backups): only the polling
    # feed's sweep finds them, so its forward watermark is the start of the last full
    # sweep pass, not the moment its touched stream was empty (a canary pin released on
    # the latter would send a read to the new side before the sweep carried the write).
    sweep_only: bool = False

    def __post_init__(self) -> None:
        if self.tenant_from is not None and len(self.tables) != 1:
            raise ValueError(f"entity {self.name!r}: tenant_from needs a single-table spec")

    @property
    def routing_entity(self) -> str:
        return self.flag_entity or self.name
