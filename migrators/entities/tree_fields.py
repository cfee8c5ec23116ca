"""Field tables of the workspace tree and the value readers the tree needs beyond
:mod:`migrators.entities.common`: JSON-valued fields, integers stored as strings,
the diagram string, and duplicate names inside one document.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from migrators.entities.common import RENAMED, UNREADABLE, Field, from_json, to_json
from migrators.spec import Note, Row
from strangler.contract import DirtyValue, parse_legacy_datetime, to_int
from strangler.jsonfast import JsonText, checked_json, dumps_json

__all__ = [
    "FOLDER_FIELDS",
    "JOB_FIELDS",
    "SUMMARY_FIELDS",
    "WORKFLOW_FIELDS",
    "WORKFLOW_JSON_FIELDS",
    "WORKSPACE_FIELDS",
    "contains_nul",
    "parse_diagram",
    "read_int",
    "read_json",
    "rename_duplicates",
    "write_json",
]

WORKSPACE_FIELDS: tuple[Field, ...] = (
    Field("workspace_id", "workspace_id"),
    Field("workspace_name", "workspace_name"),
    Field("description", "description"),
    Field("subscription_id", "subscription_id"),
    Field("owner_id", "owner_id"),
    Field("created_by", "created_by"),
    Field("created_at", "created_at", "datetime"),
    Field("updated_by", "updated_by"),
    Field("updated_at", "updated_at", "datetime"),
    Field("d_flag", "is_deleted", "flag"),
    Field("reason_to_delete", "reason_to_delete"),
)
FOLDER_FIELDS: tuple[Field, ...] = (
    Field("folder_id", "folder_id"),
    Field("folder_name", "folder_name"),
    Field("description", "description"),
    Field("created_by", "created_by"),
    Field("created_at", "created_at", "datetime"),
    Field("d_flag", "is_deleted", "flag"),
)
JOB_FIELDS: tuple[Field, ...] = (
    Field("job_id", "job_id"),
    Field("job_name", "job_name"),
    Field("description", "description"),
    Field("environment", "environment"),
    Field("created_by", "created_by"),
    Field("created_at", "created_at", "datetime"),
    Field("d_flag", "is_deleted", "flag"),
    Field("reason_to_delete", "reason_to_delete"),
)
# A job's summary copy of one of its workflows. The diagram is kept as the string found.
SUMMARY_FIELDS: tuple[Field, ...] = (
    Field("workflow_id", "workflow_id"),
    Field("workflow_name", "workflow_name"),
    Field("d_flag", "is_deleted", "flag"),
    Field("workFlowDiagram", "summary_diagram"),
)
WORKFLOW_FIELDS: tuple[Field, ...] = (
    Field("workflow_id", "workflow_id"),
    Field("workspace_id", "workspace_id"),
    Field("folder_id", "folder_id"),
    Field("job_id", "job_id"),
    Field("subscription_id", "subscription_id"),
    Field("workflow_name", "workflow_name"),
    Field("description", "description"),
    Field("environment", "environment"),
    # Kept exactly as stored (getWorkflow answers the stored string); parsed beside it.
    Field("workFlowDiagram", "workflow_diagram_text"),
    Field("is_active", "is_active", "bool"),
    Field("is_checked_out", "is_checked_out", "bool"),
    Field("checked_out_by", "checked_out_by"),
    Field("checked_out_at", "checked_out_at", "datetime"),
    Field("source_connectorid", "source_connector_id"),
    Field("target_connectorid", "target_connector_id"),
    Field("created_by", "created_by"),
    Field("created_at", "created_at", "datetime"),
    Field("updated_by", "updated_by"),
    Field("updated_at", "updated_at", "datetime"),
    Field("d_flag", "is_deleted", "flag"),
)
# Legacy field -> jsonb column; any JSON value is kept (relaxed Extended JSON).
WORKFLOW_JSON_FIELDS: dict[str, str] = {
    "parameters": "parameters",
    "notification": "notification",
    "tags": "tags",
}


def read_json(value: Any) -> Any:
    """A JSON-valued field as its jsonb column holds it (``None`` stays SQL NULL)."""
    return None if value is None else to_json(value)


def write_json(value: Any) -> Any:
    """A jsonb column's value as the legacy document holds it.

    Rows reach ``to_document`` with jsonb decoded (``migrators.tree_apply.load_rows``), so
    a ``str`` here is a JSON string value, never JSON text: ``tags`` stored by older
    backends as ``"finance, pii"`` is that string, not text to parse."""
    if isinstance(value, JsonText):  # a mapped row, not yet stored
        value = value.value()
    return None if value is None else from_json(value)


def read_int(value: Any, minimum: int | None = None, bits: int = 32) -> tuple[int | None, bool]:
    """(the integer, readable?) of a number that may be stored as a string; it must fit
    the column, a PostgreSQL integer (``bits`` 32) or bigint (64)."""
    try:
        number = to_int(value)
    except DirtyValue:
        return None, False
    if number is not None and minimum is not None and number < minimum:
        return None, False
    if number is not None and not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        return None, False
    return number, True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _OutOfRange(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: valid JSON, but no float we could send to jsonb
        raise _OutOfRange(f"{text} is out of range")
    return value


# The only ways a parsed string can hold what jsonb refuses (NUL, a lone surrogate) are
# these escapes (raw control characters are not JSON): walk the value only when one is there.
_NOT_STORABLE = object()
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _storable(value: Any) -> bool:
    """Whether jsonb can hold ``value``: no NUL, no lone surrogate, finite numbers."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    return True


def parse_diagram(text: Any) -> tuple[Any, Note | None]:
    """The jsonb value of a ``workFlowDiagram`` string, or ``None`` with the note saying why.

    Usually the string itself as :class:`strangler.jsonfast.JsonText` (checked, not parsed:
    PostgreSQL parses it, numbers as written); a text simdjson refuses is read by the
    standard library, whose value (or refusal) decides.

    The string itself is always kept (``workflow_diagram_text``); this only decides
    whether a parsed copy exists beside it.
    """
    if text is None:
        return None, None
    if not isinstance(text, str):
        return None, None  # kept in extra as an unreadable value by the field table
    if not text.strip():
        return None, Note("diagram_empty", "workFlowDiagram is empty; kept as found")
    checked = checked_json(text)
    if checked is not None:  # the common case: valid, storable, left for jsonb to parse
        return checked, None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except _OutOfRange:
        value = _NOT_STORABLE
    except (ValueError, RecursionError) as exc:
        return None, Note("diagram_invalid_json", f"workFlowDiagram kept as found: {exc}"[:120])
    if value is _NOT_STORABLE or (_SUSPECT_ESCAPE.search(text) and not _storable(value)):
        detail = "workFlowDiagram holds a value jsonb cannot store; kept as text only"
        return None, Note("diagram_not_storable", detail)
    return value, None


# A NUL in JSON text: ``\u0000`` after an even run of backslashes (``\\u0000`` is a
# backslash, then the letters u0000, which PostgreSQL stores).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def contains_nul(rows: Iterable[Row]) -> str | None:
    """The first column of ``rows`` whose text PostgreSQL cannot store (a NUL character)."""
    for row in rows:
        for column, value in row.items():
            if isinstance(value, str) and "\x00" in value:
                return column
            if isinstance(value, dict | list):
                text = dumps_json(value)
                if b"\\u0000" in text and _NUL_ESCAPE.search(text):
                    return column
    return None


def _rank(row: Mapping[str, Any], id_column: str) -> tuple[float, str]:
    created = row.get("created_at")
    if isinstance(created, datetime):
        return (created.timestamp(), str(row[id_column]))
    try:
        moment = parse_legacy_datetime(created)
    except DirtyValue:
        moment = None
    return (moment.timestamp() if moment else math.inf, str(row[id_column]))


def rename_duplicates(
    rows: list[Row], name_column: str, id_column: str, scope_column: str
) -> list[Note]:
    """Resolve duplicate live names within one document, as the writer does across documents.

    Among live rows (``is_deleted`` false) of one scope (``folder_id`` for jobs, ...) with
    the same name, the row created first (then the smaller id) keeps it; the others
    are stored as ``name [id]`` with the name as found in ``extra["$renamed"]``, from
    where the rebuilt document takes it back.
    """
    notes: list[Note] = []
    groups: dict[tuple[Any, Any], list[Row]] = {}
    for row in rows:
        if row.get("is_deleted") or row.get(name_column) is None:
            continue
        groups.setdefault((row.get(scope_column), row[name_column]), []).append(row)
    for (_scope, name), clash in groups.items():
        if len(clash) < 2:
            continue
        for loser in sorted(clash, key=lambda r: _rank(r, id_column))[1:]:
            loser["extra"] = {
                **loser["extra"],
                RENAMED: {**loser["extra"].get(RENAMED, {}), name_column: name},
            }
            loser[name_column] = f"{name} [{loser[id_column]}]"
            notes.append(
                Note("renamed_duplicate", f"{name_column} {name!r} is taken by an older row")
            )
    return notes


def unreadable(extra: dict[str, Any], field_name: str, value: Any) -> None:
    """Keep ``value`` as found under ``extra["$unreadable"][field_name]``."""
    extra.setdefault(UNREADABLE, {})[field_name] = to_json(value)
