"""The conventions of the legacy API (LEGACY.md section 1) and the readers of its dirty data.

Pure functions only: the emulator, the new-side handlers and the migrators all
render and read legacy values through here, so that they agree by construction.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "ID_PREFIXES",
    "LEGACY_DATETIME_FORMAT",
    "DirtyValue",
    "Page",
    "PagingError",
    "error_body",
    "is_deleted",
    "json_safe",
    "list_body",
    "new_id",
    "parse_legacy_datetime",
    "parse_paging",
    "render_datetime",
    "success_body",
    "to_int",
]

LEGACY_DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100

ID_PREFIXES = {
    "workspace": "ws_",
    "folder": "fd_",
    "job": "jb_",
    "workflow": "wf_",
    "connector": "cn_",
    "job_run": "run_",
    "group": "grp_",
    "role": "role_",
    "user": "usr_",
    "subscription": "sub_",
}
ID_PATTERN = re.compile(r"^(ws|fd|jb|wf|cn|run|grp|role|usr|sub)_[0-9a-f]{12}$")


def new_id(kind: str) -> str:
    """A fresh legacy id: the kind's prefix plus 12 lowercase hex characters."""
    return ID_PREFIXES[kind] + secrets.token_hex(6)


# --- envelope -----------------------------------------------------------------------------


def success_body(message: str, data: Any) -> dict[str, Any]:
    return {"status": True, "message": message, "data": data}


def list_body(message: str, items: list[Any], total: int) -> dict[str, Any]:
    return {"status": True, "message": message, "data": items, "total": total}


def error_body(message: str) -> dict[str, Any]:
    return {"status": False, "message": message}


# --- paging -------------------------------------------------------------------------------


class PagingError(ValueError):
    """``page`` or ``per_page`` is not a positive integer (the API answers 400)."""


@dataclass(frozen=True)
class Page:
    page: int
    per_page: int

    @property
    def skip(self) -> int:
        return (self.page - 1) * self.per_page


def parse_paging(page: str | None, per_page: str | None) -> Page:
    """``page`` (1-based, default 1) and ``per_page`` (default 20, clamped to 100)."""

    def parse(name: str, raw: str | None, default: int) -> int:
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise PagingError(f"{name} must be a positive integer") from None
        if value <= 0:
            raise PagingError(f"{name} must be a positive integer")
        return value

    return Page(
        parse("page", page, 1), min(parse("per_page", per_page, DEFAULT_PER_PAGE), MAX_PER_PAGE)
    )


# --- datetimes ----------------------------------------------------------------------------

_STRING_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%dT%H:%M:%S.%fZ",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S.%f%z",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %I:%M:%S %p",
    "%a %b %d %Y %H:%M:%S",
    "%Y-%m-%d",
)


class DirtyValue(ValueError):
    """A stored value that cannot be read as the type its field wants."""


def parse_legacy_datetime(value: Any) -> datetime | None:
    """Read a stored datetime as an aware UTC datetime, millisecond precision.

    Accepts what production holds: BSON dates (naive, meaning UTC, or aware),
    strings in several formats, epoch milliseconds (int, float or digit
    string), and ``{"$date": ...}`` left over from a careless import. ``None``
    and ``""`` are ``None``; anything else raises :class:`DirtyValue`.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    elif isinstance(value, bool):
        raise DirtyValue(f"boolean {value!r} is not a datetime")
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise DirtyValue(f"{value!r} is not a datetime")
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(value))
    elif isinstance(value, dict) and "$date" in value:
        return parse_legacy_datetime(value["$date"])
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d{10,14}", text):
            return parse_legacy_datetime(int(text))
        for fmt in _STRING_FORMATS:
            try:
                parsed = datetime.strptime(text, fmt)
            except ValueError:
                continue
            moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            moment = moment.astimezone(UTC)
            break
        else:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise DirtyValue(f"{value!r} is not a datetime in any known format") from None
            moment = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    else:
        raise DirtyValue(f"{type(value).__name__} {value!r} is not a datetime")
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def json_safe(value: Any) -> Any:
    """A stored value as the legacy serializer writes it: datetimes rendered, ``_id``
    dropped, other BSON types (ObjectId, Decimal128, bytes) as text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return render_datetime(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items() if key != "_id"}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return str(value)


def render_datetime(value: Any) -> str | None:
    """A stored datetime as the API renders it: ``"YYYY-MM-DD HH:MM:SS"`` UTC, or ``None``.

    A value that cannot be read is rendered as found (as a string), the way the
    legacy backend passes through what it does not understand.
    """
    try:
        moment = parse_legacy_datetime(value)
    except DirtyValue:
        return str(value)
    return None if moment is None else moment.strftime(LEGACY_DATETIME_FORMAT)


# --- other dirty values -------------------------------------------------------------------


def is_deleted(d_flag: Any) -> bool:
    """``d_flag`` as stored: missing or ``None`` is false; ``"true"``/``"false"`` strings count."""
    if isinstance(d_flag, str):
        return d_flag.strip().lower() in ("true", "1", "yes")
    return bool(d_flag)


def to_int(value: Any) -> int | None:
    """An integer stored as a number or a string; ``None``/``""`` is ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise DirtyValue(f"boolean {value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            number = float(value.strip())
        except ValueError:
            raise DirtyValue(f"{value!r} is not an integer") from None
        if number.is_integer():
            return int(number)
    raise DirtyValue(f"{value!r} is not an integer")
