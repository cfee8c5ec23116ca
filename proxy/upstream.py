"""The upstream hop: one small interface, an aiohttp implementation for serving and an httpx
one kept for measurement.

``make bench`` measured both on this machine (docs/proxy.md): the proxy serves several
times more requests per second through aiohttp's connection pool than through
``httpx.AsyncClient`` (encode/httpx#3215: httpx's pool does per-request work that grows with
concurrency), so ``aiohttp`` is the default and the only one used for WebSockets.

Both stream in both directions: the request body is an async iterator handed to the client,
the response body is read chunk by chunk; nothing is held whole unless the caller asks.
Foreign errors are mapped here, at the boundary, to :class:`~proxy.errors.UpstreamFailure`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
from yarl import URL

from proxy.errors import UpstreamFailure

__all__ = [
    "UPSTREAM_CLIENTS",
    "AiohttpUpstream",
    "HttpxUpstream",
    "Timeouts",
    "Upstream",
    "UpstreamResponse",
    "map_aiohttp_error",
]

Body = AsyncIterable[bytes] | bytes | None


@dataclass(frozen=True)
class Timeouts:
    connect: float = 3.0  # to open a connection to legacy
    read: float = 30.0  # between two reads: waiting for the headers, or for the next chunk
    pool_size: int = 256


class UpstreamResponse(Protocol):
    status: int

    @property
    def raw_headers(self) -> Sequence[tuple[bytes, bytes]]: ...

    content_length: int | None

    async def read(self) -> bytes: ...

    def iter_chunks(self) -> AsyncIterator[bytes]: ...

    async def release(self) -> None: ...


class Upstream(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: Body
    ) -> UpstreamResponse:
        """Send a request for ``target`` (raw path and query); raise UpstreamFailure."""
        ...


def map_aiohttp_error(exc: BaseException) -> UpstreamFailure:
    # Timeouts first: aiohttp's connect timeout is also a connection error.
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError | TimeoutError):
        return UpstreamFailure("timeout", str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamFailure("refused", str(exc))
    return UpstreamFailure("broken", str(exc) or type(exc).__name__)


_FOREIGN_AIOHTTP = (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError)


class _AiohttpResponse:
    __slots__ = ("_resp", "content_length", "raw_headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.raw_headers = resp.raw_headers
        self.content_length = resp.content_length

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except _FOREIGN_AIOHTTP as exc:
            raise map_aiohttp_error(exc) from exc

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except _FOREIGN_AIOHTTP as exc:
            raise map_aiohttp_error(exc) from exc

    async def release(self) -> None:
        if self._resp.content.at_eof():
            self._resp.release()  # back to the pool
        else:
            self._resp.close()  # a body left unread: this connection cannot be reused


class AiohttpUpstream:
    """One shared aiohttp session (connection pool) for the whole process."""

    def __init__(self, base_url: str, timeouts: Timeouts) -> None:
        self._base = base_url.rstrip("/")
        self._timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("AiohttpUpstream.start() was not awaited")
        return self._session

    async def start(self) -> None:
        t = self._timeouts
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=t.pool_size, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=t.connect, sock_connect=t.connect, sock_read=t.read
            ),
            # Faithful forwarding: no cookie jar shared between clients, no decompression,
            # no headers the client did not send.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: Body
    ) -> UpstreamResponse:
        try:
            resp = await self.session.request(
                method,
                URL(self._base + target, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
            )
        except _FOREIGN_AIOHTTP as exc:
            raise map_aiohttp_error(exc) from exc
        return _AiohttpResponse(resp)


class _HttpxResponse:
    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status = resp.status_code
        self.raw_headers = resp.headers.raw
        length = resp.headers.get("content-length")
        self.content_length = int(length) if length and length.isdigit() else None

    async def read(self) -> bytes:
        try:
            return await self._resp.aread()
        except httpx.HTTPError as exc:
            raise _map_httpx_error(exc) from exc
        finally:
            await self._resp.aclose()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:
            raise _map_httpx_error(exc) from exc

    async def release(self) -> None:
        await self._resp.aclose()


def _map_httpx_error(exc: httpx.HTTPError) -> UpstreamFailure:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamFailure("timeout", str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamFailure("refused", str(exc))
    return UpstreamFailure("broken", str(exc) or type(exc).__name__)


class HttpxUpstream:
    """The same hop through ``httpx.AsyncClient``: measured by the bench, not the default."""

    def __init__(self, base_url: str, timeouts: Timeouts) -> None:
        self._base = base_url.rstrip("/")
        self._timeouts = timeouts
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        t = self._timeouts
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect),
            limits=httpx.Limits(max_connections=t.pool_size),
            follow_redirects=False,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: Body
    ) -> UpstreamResponse:
        assert self._client is not None, "HttpxUpstream.start() was not awaited"
        content = body if body is not None else None
        request = self._client.build_request(
            method, self._base + target, headers=headers, content=content
        )
        try:
            resp = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _map_httpx_error(exc) from exc
        return _HttpxResponse(resp)


UPSTREAM_CLIENTS: dict[str, type[AiohttpUpstream] | type[HttpxUpstream]] = {
    "aiohttp": AiohttpUpstream,
    "httpx": HttpxUpstream,
}
