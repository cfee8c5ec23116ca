"""Pure helpers of the comparator: JSON types, numbers, datetimes, list identities.

No I/O and no rules: each takes values and returns a fact about them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from strangler.contract import DirtyValue, parse_legacy_datetime

__all__ = [
    "as_datetimes",
    "canonical",
    "datetime_shape",
    "decimals",
    "identity_key",
    "json_type",
    "multiset_minus",
    "preview",
    "rounding_of",
    "same_scalar",
    "same_tree",
    "unique_keys",
]

_PREVIEW_LIMIT = 512  # characters of JSON kept for a container value inside a difference
_DATETIME_SHAPE = re.compile(r"^\s*\d{1,4}[-/]\d{1,2}[-/]\d{1,4}([ T]\d{1,2}:\d{2}.*)?$")
_CONTAINERS = (dict, list)
# The tenant id is shared by every item of a list: never an item's identity (other
# references, such as a workflow's job_id, are skipped by the uniqueness check).
_REFERENCE_KEYS = frozenset({"subscription_id"})


def preview(value: Any) -> Any:
    """Scalars as they are; a container only while small, else a summary (bounds memory)."""
    if isinstance(value, dict | list):
        text = json.dumps(value, default=str)
        if len(text) > _PREVIEW_LIMIT:
            size = f"{len(value)} {'keys' if isinstance(value, dict) else 'items'}"
            return f"<{type(value).__name__} of {size}, {len(text)} characters>"
    return value


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def decimals(number: float) -> int:
    text = repr(number)
    return len(text.split(".", 1)[1]) if "." in text and "e" not in text else 0


def rounding_of(legacy: float, new: float) -> bool:
    """True when one number is the other rounded to fewer decimals (or equal up to 1e-9)."""
    if math.isclose(legacy, new, rel_tol=1e-9, abs_tol=0.0):
        return True
    for coarse, fine in ((legacy, new), (new, legacy)):
        places = decimals(float(coarse))
        if places < decimals(float(fine)) and round(float(fine), places) == coarse:
            return True
    return False


def datetime_shape(text: str) -> str:
    return re.sub(r"\d", "0", text)


def same_scalar(legacy: Any, new: Any) -> bool:
    """Equal scalars of the same JSON type (``type`` tells ``true`` from ``1`` and ``1.0``)."""
    kind = type(legacy)
    return kind is type(new) and kind not in _CONTAINERS and legacy == new


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def same_tree(legacy: Any, new: Any) -> bool:
    """Equal JSON objects, decided by the C encoder rather than a Python walk.

    Canonical JSON (sorted keys) tells ``true`` from ``1`` and ``1`` from ``1.0``, which
    Python's ``==`` does not; equal subtrees are then skipped whole. Only list items and
    the root are checked this way: they are where equal siblings are many, and checking
    every level would serialise the path to a difference once per level.
    """
    return type(legacy) is dict and type(new) is dict and canonical(legacy) == canonical(new)


def as_datetimes(legacy: str, new: str) -> tuple[Any, Any] | None:
    if not (_DATETIME_SHAPE.match(legacy) and _DATETIME_SHAPE.match(new)):
        return None
    try:
        left, right = parse_legacy_datetime(legacy), parse_legacy_datetime(new)
    except DirtyValue:
        return None
    if left is None or right is None:
        return None
    return left, right


def identity_key(legacy: list[Any], new: list[Any]) -> str | None:
    """The id field of a list of objects: a key ending in ``_id`` (or ``UserId``) that every
    item carries as a scalar. Only a key unique on both sides is used (checked by the caller)."""
    sample = legacy[0] if legacy else (new[0] if new else None)
    if not isinstance(sample, dict):
        return None
    for key in sample:
        if not (key.endswith("_id") or key in ("UserId", "id")) or key in _REFERENCE_KEYS:
            continue
        if all(
            isinstance(item, dict) and isinstance(item.get(key), str | int)
            for item in (*legacy, *new)
        ) and unique_keys(legacy, key):
            return key
    return None


def unique_keys(items: list[Any], key: str) -> bool:
    try:
        values = [str(item[key]) for item in items]
    except (KeyError, TypeError):
        return False
    return len(set(values)) == len(values)


def multiset_minus(left: list[str], right: list[str]) -> list[str]:
    remaining: dict[str, int] = {}
    for item in right:
        remaining[item] = remaining.get(item, 0) + 1
    result = []
    for item in left:
        if remaining.get(item, 0):
            remaining[item] -= 1
        else:
            result.append(item)
    return result
