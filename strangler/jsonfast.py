"""JSON text of plain values at C speed (orjson), with the standard library as the rule.

The backfill encodes every snapshot and diagram it stages for ``jsonb`` at least once;
``json.dumps`` was a large part of its time. orjson writes the same JSON for the values
mappers produce (dicts with string keys, lists, strings, int64 integers, finite floats,
booleans, null). Whatever it refuses (a key that is no string, an integer past 64
bits, a string with a lone surrogate, a subclass, a datetime) is handed to
``json.dumps``, so such a value is written, or refused, as before.

One difference is accepted: orjson writes a NaN or infinite float as ``null`` where
``json.dumps`` writes ``NaN``, which PostgreSQL refuses anyway; mappers never hand one
over (``to_json`` turns it into ``{"$numberDouble": "NaN"}``).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps_json", "jsonb_text"]

# Subclasses, dataclasses and datetimes go to ``default``, which refuses them: they take
# the standard library's way, where their conversion (or refusal) is defined.
_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _refuse(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is left to json.dumps")


def dumps_json(value: Any) -> bytes:
    """Compact JSON of ``value`` as UTF-8 bytes (control characters as ``\\u00XX``)."""
    try:
        return orjson.dumps(value, default=_refuse, option=_OPTIONS)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def jsonb_text(value: Any) -> str:
    """The text COPY sends for a ``jsonb`` value (jsonb keeps no key order or spacing)."""
    try:
        return orjson.dumps(value, default=_refuse, option=_OPTIONS).decode("utf-8")
    except TypeError:
        return json.dumps(value, separators=(",", ":"))
