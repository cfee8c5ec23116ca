"""The time series: ``jobRun`` -> ``job_runs`` and ``userActivity`` -> ``user_activity``.

Both tables are range-partitioned by month on ``created_at`` (schema 0004,
:mod:`schema.partitions`), which is therefore never NULL in a row:

* a ``created_at`` the document gives (a BSON date, a string, epoch milliseconds)
  places the row in its month's partition, which the writer creates on demand;
* a document whose ``created_at`` is missing or unreadable gets
  :data:`schema.partitions.NO_DATE` (the year 1): its row lands in the DEFAULT
  partition, reported as ``no_valid_date``, the value as found kept
  (``extra["$unreadable"]``), so ``to_document`` gives the document back as it was.
  Legacy lists such entries as the oldest, and so does ``created_at DESC`` here; a
  from/to filter leaves them out on both sides.

``jobRun`` documents have an id of their own (``job_run_id``); ``userActivity``
entries have none: their row is keyed by the ``_id``'s hex string, the form every
migrator stage gives such documents (as ``workflow_versions``). Entries the new side
writes (its audit rows) carry the ``_id`` the reverse sync gives them, so an entry
carried back and read again is the same row.

``logs``, ``previous_data`` and ``current_data`` are kept whole as jsonb (dates in
Extended JSON, ``{"$date": ...}``). ``duration_ms`` and ``rows_processed`` stored as
strings are read as numbers; a negative or non-numeric one is kept as found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

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
from migrators.entities.tree_fields import contains_nul, read_int, read_json, write_json
from migrators.entities.tree_history import history_id
from migrators.spec import (
    Document,
    EntitySpec,
    Mapped,
    MappingContext,
    Note,
    Quarantined,
    Reference,
    Row,
)
from schema.keys import row_key
from schema.partitions import NO_DATE, is_no_date
from strangler.contract import DirtyValue, parse_legacy_datetime

__all__ = ["ACTIVITY_FIELDS", "RUN_FIELDS", "SPECS", "creation_moment", "row_moment"]

STATUSES = ("queued", "running", "completed", "failed")
TRIGGER_TYPES = ("manual", "scheduled", "webhook")
ACTIONS = ("created", "updated", "deleted", "viewed", "executed")

RUN_FIELDS: tuple[Field, ...] = (
    Field("job_run_id", "job_run_id"),
    Field("workflow_id", "workflow_id"),
    Field("job_id", "job_id"),
    Field("workspace_id", "workspace_id"),
    Field("subscription_id", "subscription_id"),
    Field("status", "status", "enum", STATUSES),
    Field("created_at", "created_at", "datetime"),
    Field("completed_at", "completed_at", "datetime"),
    Field("triggered_by", "triggered_by"),
    Field("trigger_type", "trigger_type", "enum", TRIGGER_TYPES),
    Field("error_message", "error_message"),
)
_RUN_NUMBERS = (("duration_ms", "duration_ms"), ("rows_processed", "rows_processed"))
_RUN_JSON = (("logs", "logs"),)

ACTIVITY_FIELDS: tuple[Field, ...] = (
    Field("subscription_id", "subscription_id"),
    Field("UserId", "user_id"),
    Field("action", "action", "enum", ACTIONS),
    Field("object_type", "object_type"),
    Field("object_id", "object_id"),
    Field("object_name", "object_name"),
    Field("ip_address", "ip_address"),
    Field("user_agent", "user_agent"),
    Field("created_at", "created_at", "datetime"),
)
_ACTIVITY_JSON = (("previous_data", "previous_data"), ("current_data", "current_data"))


def creation_moment(read: datetime | None) -> tuple[datetime, Note | None]:
    """The row's ``created_at``: the one read, else NO_DATE (the default partition)."""
    if read is not None:
        return read, None
    return NO_DATE, Note("no_valid_date", "no readable created_at: the default partition")


def row_moment(document: Document) -> datetime:
    """The ``created_at`` the document's row is partitioned by (verify's time windows)."""
    try:
        read = parse_legacy_datetime(document.get("created_at"))
    except DirtyValue:
        read = None
    return creation_moment(read)[0]


def _read_count(value: Any) -> tuple[int | None, bool]:
    return read_int(value, minimum=0, bits=64)  # the columns are bigint, never negative


def _map(
    document: Document,
    fields: tuple[Field, ...],
    numbers: tuple[tuple[str, str], ...],
    json_fields: tuple[tuple[str, str], ...],
) -> tuple[Row, list[Note]]:
    handled = tuple(name for name, _ in (*numbers, *json_fields))
    columns, extra, notes = read_fields(document, fields, handled=handled)
    for name, column in numbers:
        number, readable = _read_count(document.get(name))
        columns[column] = number
        if not readable:
            extra.setdefault(UNREADABLE, {})[name] = to_json(document.get(name))
            notes.append(
                Note("unreadable_value", f"{name} kept as found: {document.get(name)!r:.60}")
            )
    for name, column in json_fields:
        columns[column] = read_json(document.get(name))
    columns["created_at"], note = creation_moment(columns["created_at"])
    if note is not None:
        notes.append(note)
    return {**columns, "extra": extra}, notes


def _document(
    row: Row,
    fields: tuple[Field, ...],
    numbers: tuple[tuple[str, str], ...],
    json_fields: tuple[tuple[str, str], ...],
) -> Document:
    extra = json_value(row.get("extra")) or {}
    document = write_fields(row, fields, extra)
    unreadable = extra.get(UNREADABLE, {})
    for name, column in numbers:
        document[name] = from_json(unreadable[name]) if name in unreadable else row.get(column)
    for name, column in json_fields:
        document[name] = write_json(row.get(column))
    if is_no_date(row.get("created_at")) and "created_at" not in unreadable:
        document["created_at"] = None  # missing, null or empty: the stand-in never leaks
    return document


def _normalize(
    document: Document,
    fields: tuple[Field, ...],
    numbers: tuple[tuple[str, str], ...],
    json_fields: tuple[tuple[str, str], ...],
) -> Document:
    handled = tuple(name for name, _ in (*numbers, *json_fields))
    normalized = normalize_fields(document, fields, handled=handled)
    for name, _ in numbers:
        value = document.get(name)
        number, readable = _read_count(value)
        normalized[name] = number if readable else from_json(to_json(value))
    for name, _ in json_fields:
        value = document.get(name)
        normalized[name] = None if value is None else from_json(to_json(value))
    return normalized


def _tenant(document: Document) -> str | None:
    value = document.get("subscription_id")
    return value if isinstance(value, str) and value.strip() else None


def map_run(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
    run_id = document.get("job_run_id")
    if not isinstance(run_id, str) or not run_id.strip():
        return Quarantined("missing_id", f"job_run_id is {run_id!r}")
    if _tenant(document) is None:
        return Quarantined(
            "missing_subscription", f"subscription_id is {document.get('subscription_id')!r}"
        )
    row, notes = _map(document, RUN_FIELDS, _RUN_NUMBERS, _RUN_JSON)
    if contains_nul([row]) is not None:
        return Quarantined("nul_character", "a value holds a NUL character")
    return Mapped({"job_runs": [{"id": row_key("job_run", run_id), **row}]}, tuple(notes))


def run_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
    return _document(rows["job_runs"][0], RUN_FIELDS, _RUN_NUMBERS, _RUN_JSON)


def normalize_run(document: Document) -> Document:
    return _normalize(document, RUN_FIELDS, _RUN_NUMBERS, _RUN_JSON)


def map_activity(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
    activity_id = history_id(document)
    if _tenant(document) is None:
        return Quarantined(
            "missing_subscription", f"subscription_id is {document.get('subscription_id')!r}"
        )
    row, notes = _map(document, ACTIVITY_FIELDS, (), _ACTIVITY_JSON)
    row = {"id": row_key("user_activity", activity_id), "activity_id": activity_id, **row}
    if contains_nul([row]) is not None:
        return Quarantined("nul_character", "a value holds a NUL character")
    return Mapped({"user_activity": [row]}, tuple(notes))


def activity_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
    return _document(rows["user_activity"][0], ACTIVITY_FIELDS, (), _ACTIVITY_JSON)


def normalize_activity(document: Document) -> Document:
    return _normalize(document, ACTIVITY_FIELDS, (), _ACTIVITY_JSON)


def _subscription_reference() -> Reference:
    return Reference(
        "subscription_id", "subscriptions", "subscription_id", "unknown_subscription", required=True
    )


SPECS = (
    EntitySpec(
        name="job_runs",
        collection="jobRun",
        id_field="job_run_id",
        tables=("job_runs",),
        map_document=map_run,
        to_document=run_document,
        depends_on=("subscriptions", "workflows"),
        key_entity="job_run",
        legacy_id_column="job_run_id",
        normalize=normalize_run,
        moment=row_moment,
        revisit="status IN ('queued', 'running')",
        references=(
            _subscription_reference(),
            Reference("workflow_id", "workflows", "workflow_id", "dangling_workflow"),
        ),
    ),
    EntitySpec(
        name="activity",
        collection="userActivity",
        id_field="_id",
        tables=("user_activity",),
        map_document=map_activity,
        to_document=activity_document,
        depends_on=("subscriptions", "users"),
        key_entity="user_activity",
        legacy_id_column="activity_id",
        normalize=normalize_activity,
        moment=row_moment,
        append_only=True,
        carried_as="activity",
        references=(
            _subscription_reference(),
            Reference("user_id", "users", "user_id", "dangling_user"),
        ),
    ),
)
