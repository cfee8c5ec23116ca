"""Field tables shared by the entity specs: read dirty legacy values into columns and back.

An entity declares its legacy fields once, each with a kind; three pure
functions follow from that table:

* :func:`read_fields` -- document -> column values, the ``extra`` jsonb and notes;
* :func:`write_fields` -- column values and ``extra`` -> the legacy fields;
* :func:`normalize_fields` -- the legacy document in normalized form, written
  independently of the two above so that the round-trip tests can hold them to it.

Normalized form: every declared field present (missing is ``None``, as the API
renders it); datetimes as naive UTC ``datetime`` at millisecond precision (what
PyMongo returns for a BSON date), whatever form they were stored in; booleans
stored as strings read as booleans; ``_id`` left out; unknown fields kept.

A value that cannot be read as its kind (a datetime in no known format, a
``plan_type`` outside the schema's list) is never dropped: its column stays
NULL and the value as found goes to ``extra["$unreadable"]``, from where
``write_fields`` gives it back; the document is migrated with a note.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId, json_util
from bson.json_util import DatetimeConversion, JSONMode, JSONOptions

from migrators.spec import Document, Note
from strangler.contract import DirtyValue, is_deleted, parse_legacy_datetime

__all__ = [
    "UNREADABLE",
    "Field",
    "from_json",
    "naive_utc",
    "normalize_fields",
    "read_fields",
    "to_json",
    "write_fields",
]

UNREADABLE = "$unreadable"
RENAMED = "$renamed"
_RESERVED = (UNREADABLE, RENAMED)
_JSON_OPTIONS = JSONOptions(
    json_mode=JSONMode.RELAXED,
    tz_aware=False,
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)


@dataclass(frozen=True)
class Field:
    """A legacy field and the column it goes to.

    kind: ``text``, ``datetime``, ``bool``, ``flag`` (``d_flag``: read with
    ``strangler.contract.is_deleted``, missing is false) or ``enum`` (one of
    ``choices``, else unreadable).
    """

    name: str
    column: str
    kind: str = "text"
    choices: tuple[str, ...] = ()


def _is_plain(value: Any) -> bool:
    """Whether ``value`` is JSON already (and holds nothing Extended JSON would rewrite)."""
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63  # relaxed Extended JSON keeps int64 as numbers
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return all(
            isinstance(k, str) and not k.startswith("$") and _is_plain(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    return False


class _NotFast(Exception):
    """A value the fast conversion leaves to json_util (rare: dirt, BSON-only types)."""


_INT64 = (-(2**63), 2**63)


def _fast_json(value: Any) -> Any:
    """:func:`to_json` for the types documents are made of; raises :class:`_NotFast` on
    anything else. Exact types only (``type(x) is ...``): a subclass, a tuple or a key
    that is no plain string goes the json_util way, where its conversion is defined."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return value
    if kind is dict:
        converted = {}
        for key, item in value.items():
            if type(key) is not str or key[:1] == "$":
                raise _NotFast
            item_kind = type(item)
            converted[key] = (
                item if item_kind is str or item is None or item_kind is bool else _fast_json(item)
            )
        return converted
    if kind is list:
        return [_fast_json(item) for item in value]
    if kind is int:
        if _INT64[0] <= value < _INT64[1]:  # relaxed Extended JSON keeps int64 as numbers
            return value
        raise _NotFast
    if kind is float:
        if value == value and value not in (float("inf"), float("-inf")):
            return value
        raise _NotFast
    if kind is datetime or kind is ObjectId:
        return json_util.default(value, _JSON_OPTIONS)  # {"$date": ...}, {"$oid": ...}
    raise _NotFast


def to_json(value: Any) -> Any:
    """Any BSON value as plain JSON (relaxed Extended JSON: dates and ObjectIds survive).

    Equal to ``json.loads(json_util.dumps(value))`` in relaxed mode, without the text in
    between for the types documents are made of (the backfill maps every snapshot and
    diagram through here); anything else takes that round trip."""
    try:
        return _fast_json(value)
    except _NotFast:
        return json.loads(json_util.dumps(value, json_options=_JSON_OPTIONS))


def from_json(value: Any) -> Any:
    if _is_plain(value):
        return value
    return json_util.loads(json.dumps(value), json_options=_JSON_OPTIONS)


def naive_utc(moment: datetime) -> datetime:
    """An aware (or naive UTC) datetime as PyMongo returns BSON dates: naive UTC, ms."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class _Unreadable(Exception):
    pass


def _read(value: Any, spec: Field) -> Any:
    if spec.kind == "flag":
        return is_deleted(value)
    if value is None:
        return None
    if spec.kind == "datetime":
        try:
            return parse_legacy_datetime(value)
        except DirtyValue:
            raise _Unreadable from None
    if spec.kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _Unreadable
    if spec.kind == "enum":
        if value in spec.choices:
            return value
        raise _Unreadable
    if isinstance(value, str):
        return value
    raise _Unreadable


def read_fields(
    document: Mapping[str, Any], fields: tuple[Field, ...], handled: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any], list[Note]]:
    """Columns, ``extra`` (unknown fields and unreadable values) and notes of a document.

    ``handled`` names fields the entity maps itself: they are left out of ``extra``.
    """
    columns: dict[str, Any] = {}
    unreadable: dict[str, Any] = {}
    notes: list[Note] = []
    for spec in fields:
        value = document.get(spec.name)
        try:
            columns[spec.column] = _read(value, spec)
        except _Unreadable:
            columns[spec.column] = None
            unreadable[spec.name] = to_json(value)
            notes.append(Note("unreadable_value", f"{spec.name} kept as found: {value!r:.60}"))
    declared = {spec.name for spec in fields} | set(handled)
    extra = {k: to_json(v) for k, v in document.items() if k not in declared and k != "_id"}
    for key in _RESERVED:
        extra.pop(key, None)
    if unreadable:
        extra[UNREADABLE] = unreadable
    return columns, extra, notes


def write_fields(
    row: Mapping[str, Any], fields: tuple[Field, ...], extra: Mapping[str, Any]
) -> Document:
    """The legacy fields back from a row (normalized form)."""
    unreadable = extra.get(UNREADABLE, {})
    renamed = extra.get(RENAMED, {})
    document: Document = {}
    for spec in fields:
        if spec.name in unreadable:
            document[spec.name] = from_json(unreadable[spec.name])
            continue
        value = renamed.get(spec.column, row.get(spec.column))
        if isinstance(value, datetime):
            value = naive_utc(value)
        document[spec.name] = value
    for key, value in extra.items():
        if key not in _RESERVED:
            document[key] = from_json(value)
    return document


def normalize_fields(
    document: Mapping[str, Any], fields: tuple[Field, ...], handled: tuple[str, ...] = ()
) -> Document:
    """The normalized form of a legacy document (see the module docstring)."""
    normalized: Document = {}
    for spec in fields:
        value = document.get(spec.name)
        if spec.kind == "flag":
            value = is_deleted(value)
        elif spec.kind == "datetime":
            try:
                moment = parse_legacy_datetime(value)
            except DirtyValue:  # kept as found
                value = from_json(to_json(value))
            else:
                value = None if moment is None else naive_utc(moment)
        elif spec.kind == "bool" and isinstance(value, str):
            lowered = value.strip().lower()
            value = lowered == "true" if lowered in ("true", "false") else value
        normalized[spec.name] = value
    declared = {spec.name for spec in fields} | set(handled)
    for key, value in document.items():
        if key not in declared and key != "_id" and key not in _RESERVED:
            normalized[key] = from_json(to_json(value))
    return normalized


def json_value(value: Any) -> Any:
    """A jsonb column as read back: asyncpg gives JSON text unless a codec decodes it."""
    return json.loads(value) if isinstance(value, str) else value
