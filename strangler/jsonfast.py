"""JSON text of plain values at C speed (orjson), with the standard library as the rule.

The backfill encodes every snapshot and diagram it stages for ``jsonb`` at least once;
``json.dumps`` was a large part of its time. orjson writes the same JSON for the values
mappers produce (dicts with string keys, lists, strings, int64 integers, finite floats,
booleans, null). Whatever it refuses (a key that is no string, an integer past 64
bits, a string with a lone surrogate, a subclass, a datetime) is handed to
``json.dumps``, so such a value is written, or refused, as before.

:class:`JsonText` is JSON text already checked (``checked_json``): it is sent as it is,
and PostgreSQL parses it, without a Python value built in between.

One difference is accepted: orjson writes a NaN or infinite float as ``null`` where
``json.dumps`` writes ``NaN``, which PostgreSQL refuses anyway; mappers never hand one
over (``to_json`` turns it into ``{"$numberDouble": "NaN"}``).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import orjson
import simdjson

__all__ = [
    "JsonText",
    "checked_json",
    "digest_json",
    "dumps_json",
    "encoded_json",
    "jsonb_text",
]


@dataclass(frozen=True, slots=True)
class JsonText:
    """JSON text that jsonb takes as it is: valid (RFC 8259), UTF-8, no NUL escape."""

    text: str

    def value(self) -> Any:
        return json.loads(self.text)


_parsers = threading.local()


def checked_json(text: str) -> JsonText | None:
    """``text`` as :class:`JsonText` when simdjson validates it and PostgreSQL's jsonb
    can store it as written; ``None`` otherwise (the caller reads it the slow way).

    simdjson validates without building Python objects (a parsed diagram is hundreds of
    them, and the garbage collector walks each). It refuses what jsonb would refuse or
    read otherwise than Python: lone surrogate escapes, integers past 64 bits, numbers
    out of double range, nesting past 1,024 levels; a byte order mark and the ``\u0000``
    escape (which jsonb refuses) are looked for before it.
    """
    if "\\u0000" in text or text.startswith("\ufeff"):
        return None
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in the string itself
        return None
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    try:
        parser.parse(data)  # the proxy it returns is dropped at once: the parser is free
    except (ValueError, RuntimeError):
        return None
    return JsonText(text)


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


def encoded_json(value: Any) -> JsonText | None:
    """``value`` written once, as :class:`JsonText` to stage as it is; ``None`` when orjson
    refuses it or the text holds the ``\\u0000`` escape (the caller keeps the value, and
    its usual checks decide)."""
    try:
        data = orjson.dumps(value, default=_refuse, option=_OPTIONS)
    except TypeError:
        return None
    if b"\\u0000" in data:
        return None
    return JsonText(data.decode("utf-8"))


def jsonb_text(value: Any) -> str:
    """The text COPY sends for a ``jsonb`` value (jsonb keeps no key order or spacing)."""
    if isinstance(value, JsonText):
        return value.text
    return dumps_json(value).decode("utf-8")


def digest_json(value: Any) -> bytes:
    """Deterministic JSON of ``value`` to digest: keys sorted, a value JSON has no form for
    (a datetime, a UUID) written as ``str()`` gives it. The same value always gives the
    same bytes; a value orjson refuses is written by ``json.dumps`` (sorted) instead."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS | orjson.OPT_SORT_KEYS)
    except TypeError:
        text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
        return text.encode("utf-8", "surrogatepass")
