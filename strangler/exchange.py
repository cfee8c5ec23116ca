"""Requests and responses as plain values, shared by the proxy, the new-side handlers and
shadow_compare.

The proxy streams legacy traffic untouched; only what it must give to a new-side
handler or to the shadow comparator is recorded whole into these values.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl

__all__ = [
    "NewSideHandler",
    "RecordedRequest",
    "RecordedResponse",
    "ShadowSink",
    "Side",
]

Side = Literal["legacy", "new"]
Headers = tuple[tuple[str, str], ...]


def _header(headers: Headers, name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query_string: str = ""
    headers: Headers = ()
    body: bytes = b""
    request_id: str = ""

    @property
    def query(self) -> dict[str, str]:
        """Query parameters; a repeated one keeps its last value, as the legacy backend does."""
        return dict(parse_qsl(self.query_string, keep_blank_values=True))

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class RecordedResponse:
    status: int
    headers: Headers = ()
    body: bytes = b""
    # Which side produced it, and how long it took (seconds); filled by whoever called it.
    side: Side | None = None
    elapsed: float = field(default=0.0, compare=False)

    def header(self, name: str) -> str | None:
        return _header(self.headers, name)

    def json(self) -> Any:
        return json.loads(self.body)


# A new-side handler answers one endpoint from PostgreSQL, exactly as legacy would.
# It authenticates the request itself (the 401 envelope is part of the contract).
NewSideHandler = Callable[[RecordedRequest], Awaitable[RecordedResponse]]


class ShadowSink(Protocol):
    """Where the proxy hands a finished exchange for comparison, off the request path."""

    def submit(
        self,
        entity: str,
        endpoint: str,
        request: RecordedRequest,
        primary: RecordedResponse,
        other: Callable[[], Awaitable[RecordedResponse]],
        primary_again: Callable[[], Awaitable[RecordedResponse]] | None = None,
    ) -> bool:
        """Queue a comparison of ``primary`` (already sent to the client) with what ``other``
        returns when called; never blocks. False when the exchange was dropped (queue full).

        ``primary_again`` repeats the read on the side that served the client, so that a
        write landing between the two sides' answers is told apart from a regression."""
        ...
