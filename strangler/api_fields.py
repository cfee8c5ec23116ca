"""The legacy API's request-field rules and their 400 messages, written once.

The legacy emulator and the new-side handlers must refuse the same requests with the
same messages, byte for byte; reading every query parameter and body field through
these functions makes that true by construction rather than by two copies kept alike.

Everything here is pure: a reader takes the parsed JSON body (a dict) or the query
mapping and a field name, and returns the value or raises :class:`FieldError`. Each
side maps that error to its own error envelope at its endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from strangler.contract import DirtyValue, Page, PagingError, parse_legacy_datetime, parse_paging
from strangler.errors import DataError

__all__ = [
    "DATETIME_EXAMPLE",
    "FieldError",
    "FieldReaders",
    "optional_flag",
    "optional_list_of_text",
    "optional_object",
    "optional_text",
    "paging",
    "query_id",
    "query_moment",
    "query_text",
    "text",
]

# The shape legacy's clients send, quoted in the message so the caller can fix the value.
DATETIME_EXAMPLE = "2024-03-01 12:00:00"

Query = Mapping[str, str]
Body = Mapping[str, Any]


class FieldError(DataError):
    """A request field breaks the contract: the HTTP status to answer and the message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- query parameters ---------------------------------------------------------------------


def paging(query: Query) -> Page:
    """``page`` and ``per_page``: positive integers, defaulted and capped as legacy does."""
    try:
        return parse_paging(query.get("page"), query.get("per_page"))
    except PagingError as exc:
        raise FieldError(str(exc)) from exc


def query_id(query: Query, name: str) -> str:
    """A required, non-blank parameter (stripped)."""
    value = query.get(name, "").strip()
    if not value:
        raise FieldError(f"{name} is required")
    return value


def query_text(query: Query, name: str) -> str | None:
    """An optional parameter (stripped); blank counts as not given."""
    return query.get(name, "").strip() or None


def query_moment(query: Query, name: str) -> datetime | None:
    """An optional datetime parameter in any shape legacy accepts; blank is not given."""
    try:
        return parse_legacy_datetime(query_text(query, name))
    except DirtyValue as exc:
        raise FieldError(f"{name} must be a datetime like {DATETIME_EXAMPLE}") from exc


# --- body fields ------------------------------------------------------------------------------


def text(body: Body, name: str) -> str:
    """A required, non-blank string field (stripped)."""
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise FieldError(f"{name} is required")
    return value.strip()


def optional_text(body: Body, name: str) -> str | None:
    """A string field when given, kept as sent (legacy does not strip these)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(f"{name} must be a string")
    return value


def optional_object(body: Body, name: str) -> dict[str, Any] | None:
    """A JSON object field when given."""
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise FieldError(f"{name} must be an object")
    return value


def optional_list_of_text(body: Body, name: str) -> list[str] | None:
    """A list of strings when given (a copy, so the caller may change it freely)."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise FieldError(f"{name} must be a list of strings")
    return list(value)


def optional_flag(body: Body, name: str) -> bool | None:
    """A JSON boolean when given; 0, 1 and "true" are refused, as legacy refuses them."""
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise FieldError(f"{name} must be true or false")
    return value


class FieldReaders:
    """The readers as methods of a request object, for each side's ``Call`` to inherit.

    The inheriting class supplies ``query`` (the query mapping) and ``body`` (the parsed
    JSON object, empty for a GET); no field or default is declared here, so a dataclass
    may inherit it.
    """

    body: Mapping[str, Any]

    @property
    def query(self) -> Query:
        raise NotImplementedError

    def page(self) -> Page:
        return paging(self.query)

    def query_id(self, name: str) -> str:
        return query_id(self.query, name)

    def query_text(self, name: str) -> str | None:
        return query_text(self.query, name)

    def query_moment(self, name: str) -> datetime | None:
        return query_moment(self.query, name)

    def text(self, name: str) -> str:
        return text(self.body, name)

    def optional_text(self, name: str) -> str | None:
        return optional_text(self.body, name)

    def optional_object(self, name: str) -> dict[str, Any] | None:
        return optional_object(self.body, name)

    def optional_list_of_text(self, name: str) -> list[str] | None:
        return optional_list_of_text(self.body, name)

    def optional_flag(self, name: str) -> bool | None:
        return optional_flag(self.body, name)

    def given(self, name: str) -> bool:
        """Whether the body names the field at all (``null`` included): a PATCH-like update."""
        return name in self.body
