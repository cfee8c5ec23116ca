"""Pure header transformations between the client and the upstream (RFC 9110 section 7.6.1).

Hop-by-hop headers (and any header the client's ``Connection`` names) are not forwarded in
either direction; ``Host`` becomes the upstream's; ``X-Forwarded-For`` gets the client's
address appended; ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are set unless a proxy in
front already set them; ``X-Request-Id`` is passed through (when sane) or created, and is
returned to the client.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "BODY_CHUNKED",
    "BODY_LENGTH",
    "BODY_NONE",
    "HOP_BY_HOP",
    "REQUEST_ID",
    "UpstreamHeaders",
    "downstream_head",
    "downstream_headers",
    "new_request_id",
    "upstream_head",
    "upstream_headers",
]

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Answered by this proxy's server already (it sent the client its "100 Continue"); passing
# it on would make legacy send an interim response the upstream client did not ask for.
_HANDLED_HERE = frozenset({b"expect"})
# Set by the WebSocket handshake on each hop; the upstream client makes its own.
_WEBSOCKET_HANDSHAKE = frozenset(
    {
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-accept",
    }
)
REQUEST_ID = b"x-request-id"
_HTTP_SCHEME = {"ws": "http", "wss": "https"}
_SANE_REQUEST_ID = re.compile(rb"^[\x21-\x7e]{1,200}$")
RawHeaders = Iterable[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class UpstreamHeaders:
    headers: list[tuple[str, str]]
    request_id: str
    has_body: bool
    host: str


def _connection_tokens(raw: RawHeaders) -> frozenset[bytes]:
    named: set[bytes] = set()
    for key, value in raw:
        if key.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


def upstream_headers(
    raw: list[tuple[bytes, bytes]],
    client_ip: str | None,
    scheme: str,
    websocket: bool = False,
) -> UpstreamHeaders:
    """The headers to send upstream for a client request's raw (ASGI) headers."""
    drop = HOP_BY_HOP | _HANDLED_HERE | _connection_tokens(raw)
    if websocket:
        drop = drop | _WEBSOCKET_HANDSHAKE | {b"sec-websocket-protocol"}
    out: list[tuple[str, str]] = []
    request_id = ""
    host = ""
    forwarded_for = ""
    has_proto = has_host = has_body = False
    for key, value in raw:
        # ASGI servers give lowercase names; HTTP/2 or other servers may not.
        name = key.lower()
        if name in drop:
            if name == b"transfer-encoding":
                has_body = True
            continue
        if name == b"host":
            host = value.decode("latin-1")
            continue
        if name == REQUEST_ID:
            if _SANE_REQUEST_ID.match(value):
                request_id = value.decode("ascii")
            continue
        if name == b"x-forwarded-for":
            forwarded_for = value.decode("latin-1")
            continue
        if name == b"content-length":
            has_body = value.strip() not in (b"", b"0")
        elif name == b"x-forwarded-proto":
            has_proto = True
        elif name == b"x-forwarded-host":
            has_host = True
        out.append((key.decode("latin-1"), value.decode("latin-1")))
    if client_ip:
        forwarded_for = f"{forwarded_for}, {client_ip}" if forwarded_for else client_ip
    if forwarded_for:
        out.append(("X-Forwarded-For", forwarded_for))
    if not has_proto:
        # The scheme the client used for the HTTP request (a WebSocket upgrade included).
        out.append(("X-Forwarded-Proto", _HTTP_SCHEME.get(scheme, scheme)))
    if not has_host and host:
        out.append(("X-Forwarded-Host", host))
    request_id = request_id or new_request_id()
    out.append(("X-Request-Id", request_id))
    return UpstreamHeaders(out, request_id, has_body, host)


def downstream_headers(raw: RawHeaders, request_id: str) -> list[tuple[bytes, bytes]]:
    """The upstream response's headers as sent to the client (duplicates such as several
    ``Set-Cookie`` kept, in order)."""
    out: list[tuple[bytes, bytes]] = []
    named = _connection_tokens(raw)
    has_request_id = False
    for key, value in raw:
        name = key.lower()
        if name in HOP_BY_HOP or name in named:
            continue
        if name == REQUEST_ID:
            has_request_id = True
        out.append((key, value))
    if not has_request_id:
        out.append((REQUEST_ID, request_id.encode("ascii")))
    return out


# --- the same rules on raw bytes, for the fast engine (proxy/fastpath.py) ----------------------

BODY_NONE, BODY_LENGTH, BODY_CHUNKED = 0, 1, 2
_REQUEST_ID_PREFIX = secrets.token_hex(8)
_request_ids = itertools.count(secrets.randbits(40))
_SKIP_UP = HOP_BY_HOP | _HANDLED_HERE | {b"host", REQUEST_ID, b"x-forwarded-for"}
_PROTO = {b"http": b"http", b"https": b"https", b"ws": b"http", b"wss": b"https"}


def new_request_id() -> str:
    """32 hex digits: a random per-process prefix and a counter (no system call each)."""
    return f"{_REQUEST_ID_PREFIX}{next(_request_ids) & 0xFFFFFFFFFFFFFFFF:016x}"


def upstream_head(
    method: bytes,
    target: bytes,
    raw: list[tuple[bytes, bytes]],
    client_ip: str | None,
    scheme: bytes,
    upstream_host: bytes,
    upgrade: bool = False,
) -> tuple[bytes, str, int]:
    """The request head to write upstream (request line to blank line), the request id, and
    how the body is framed (BODY_NONE, BODY_LENGTH, or BODY_CHUNKED: re-framed by the
    caller). Same rules as :func:`upstream_headers`; ``upgrade`` keeps the client's
    ``Upgrade`` for a tunnel (a WebSocket handshake passes through untouched)."""
    lines = [method, b" ", target, b" HTTP/1.1\r\nHost: ", upstream_host, b"\r\n"]
    named: list[bytes] = []
    request_id = host = forwarded_for = b""
    upgrade_value = b""
    has_proto = has_host = False
    body = BODY_NONE
    start = len(lines)
    for key, value in raw:
        name = key.lower()
        if name in _SKIP_UP:
            if name == b"transfer-encoding":
                body = BODY_CHUNKED
            elif name == b"host":
                host = value
            elif name == REQUEST_ID:
                if _SANE_REQUEST_ID.match(value):
                    request_id = value
            elif name == b"x-forwarded-for":
                forwarded_for = value
            elif name == b"connection":
                named.extend(token.strip().lower() for token in value.split(b","))
            elif name == b"upgrade":
                upgrade_value = value
            continue
        if name == b"content-length":
            if body != BODY_CHUNKED:
                body = BODY_LENGTH if value.strip() not in (b"", b"0") else BODY_NONE
        elif name == b"x-forwarded-proto":
            has_proto = True
        elif name == b"x-forwarded-host":
            has_host = True
        lines += (key, b": ", value, b"\r\n")
    if named:
        kept = lines[:start]
        for i in range(start, len(lines), 4):
            if lines[i].lower() not in named:
                kept += lines[i : i + 4]
        lines = kept
    if client_ip:
        ip = client_ip.encode("ascii")
        forwarded_for = forwarded_for + b", " + ip if forwarded_for else ip
    if forwarded_for:
        lines += (b"X-Forwarded-For: ", forwarded_for, b"\r\n")
    if not has_proto:
        lines += (b"X-Forwarded-Proto: ", _PROTO.get(scheme, scheme), b"\r\n")
    if not has_host and host:
        lines += (b"X-Forwarded-Host: ", host, b"\r\n")
    rid = request_id.decode("ascii") if request_id else new_request_id()
    lines += (b"X-Request-Id: ", rid.encode("ascii"), b"\r\n")
    if upgrade and upgrade_value:
        lines += (b"Connection: Upgrade\r\nUpgrade: ", upgrade_value, b"\r\n")
    if body == BODY_CHUNKED:
        lines.append(b"Transfer-Encoding: chunked\r\n")
    lines.append(b"\r\n")
    return b"".join(lines), rid, body


def downstream_head(
    raw: list[tuple[bytes, bytes]], request_id: str
) -> tuple[list[bytes], int | None, bool]:
    """The response header lines for the client (each ``name: value\\r\\n``), the body's
    Content-Length if legacy gave one, and whether legacy sent it chunked. Same rules as
    :func:`downstream_headers`."""
    lines: list[bytes] = []
    named: frozenset[bytes] | None = None
    length: int | None = None
    chunked = False
    has_request_id = False
    for key, value in raw:
        name = key.lower()
        if name in HOP_BY_HOP:
            if name == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
            elif name == b"connection":
                named = _connection_tokens(raw)
            continue
        if name == b"content-length":
            length = int(value) if value.strip().isdigit() else None
        elif name == REQUEST_ID:
            has_request_id = True
        lines.append(b"".join((key, b": ", value, b"\r\n")))
    if named:
        lines = [line for line in lines if line.split(b":", 1)[0].lower() not in named]
    if not has_request_id:
        lines.append(b"x-request-id: " + request_id.encode("ascii") + b"\r\n")
    return lines, length, chunked
