"""The fast engine's byte-level header rules give what the ASGI engine's rules give."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.headers import (
    BODY_CHUNKED,
    BODY_LENGTH,
    BODY_NONE,
    downstream_head,
    downstream_headers,
    upstream_head,
    upstream_headers,
)

UPSTREAM = b"legacy.internal:8080"


def _parsed_head(head: bytes) -> tuple[bytes, list[tuple[str, str]]]:
    request_line, *lines = head.split(b"\r\n")
    assert lines[-2:] == [b"", b""], "the head ends with one blank line"
    pairs = [line.split(b": ", 1) for line in lines[:-2]]
    return request_line, [(k.decode("latin-1"), v.decode("latin-1")) for k, v in pairs]


CASES = {
    "plain get": [(b"Host", b"proxy:8000"), (b"Accept", b"*/*"), (b"Cookie", b"a=1; b=2")],
    "hop-by-hop and named": [
        (b"Host", b"proxy:8000"),
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"X-Secret-Hop", b"no"),
        (b"Keep-Alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Expect", b"100-continue"),
        (b"Content-Length", b"10"),
    ],
    "forwarded by a proxy in front": [
        (b"host", b"api.example"),
        (b"X-Forwarded-For", b"203.0.113.9"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"front.example"),
        (b"X-Request-Id", b"req-42"),
    ],
    "chunked upload, insane request id": [
        (b"Host", b"proxy"),
        (b"Transfer-Encoding", b"chunked"),
        (b"X-Request-Id", b"has space"),
    ],
}


@pytest.mark.parametrize("name", CASES)
def test_upstream_head_matches_the_asgi_rules(name: str) -> None:
    raw = CASES[name]
    head, request_id, body = upstream_head(
        b"POST", b"/echo/a%2Fb?x=1", raw, "127.0.0.1", b"http", UPSTREAM
    )
    reference = upstream_headers([(k.lower(), v) for k, v in raw], "127.0.0.1", "http")
    request_line, headers = _parsed_head(head)
    assert request_line == b"POST /echo/a%2Fb?x=1 HTTP/1.1"
    assert headers[0] == ("Host", UPSTREAM.decode())
    expected = [(k.lower(), v) for k, v in reference.headers]
    if reference.request_id != request_id:  # both created one: compare everything else
        expected = [(k, v) for k, v in expected if k != "x-request-id"]
        headers = [(k, v) for k, v in headers if k.lower() != "x-request-id"]
    chunked = ("Transfer-Encoding", "chunked")
    assert [(k.lower(), v) for k, v in headers[1:] if (k, v) != chunked] == expected
    assert body == (
        BODY_CHUNKED if chunked in headers else BODY_LENGTH if reference.has_body else BODY_NONE
    )
    assert reference.has_body == (body != BODY_NONE)


def test_created_request_ids_are_32_hex_and_distinct() -> None:
    ids = {upstream_head(b"GET", b"/", [], None, b"http", UPSTREAM)[1] for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_upgrade_keeps_the_handshake_for_a_tunnel() -> None:
    raw = [
        (b"Host", b"proxy"),
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    head, _, body = upstream_head(b"GET", b"/ws/activity", raw, "10.0.0.1", b"http", UPSTREAM, True)
    _, headers = _parsed_head(head)
    names = {k.lower(): v for k, v in headers}
    assert names["upgrade"] == "websocket" and names["connection"] == "Upgrade"
    assert names["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="
    assert names["x-forwarded-for"] == "10.0.0.1" and body == BODY_NONE


header_names = st.sampled_from(
    [b"Content-Type", b"Set-Cookie", b"Connection", b"Keep-Alive", b"X-Request-Id",
     b"Transfer-Encoding", b"Content-Length", b"X-Trace", b"Upgrade", b"Server"]
)  # fmt: skip
header_values = st.sampled_from(
    [b"application/json", b"a=1; Path=/", b"close", b"x-trace", b"chunked", b"12", b"abc-1"]
)


@given(st.lists(st.tuples(header_names, header_values), max_size=8))
def test_downstream_head_matches_the_asgi_rules(raw: list[tuple[bytes, bytes]]) -> None:
    lines, length, chunked = downstream_head(raw, "rid-1")
    reference = downstream_headers(raw, "rid-1")
    assert lines == [k + b": " + v + b"\r\n" for k, v in reference]
    lengths = [v for k, v in reference if k.lower() == b"content-length"]
    assert length == (int(lengths[-1]) if lengths and lengths[-1].isdigit() else None)
    assert chunked == any(
        k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in raw
    )
