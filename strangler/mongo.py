"""The one narrow interface through which the project talks to MongoDB.

Production uses PyMongo's ``AsyncMongoClient`` (a ``mongodb://`` URL); the
emulator's in-process store and the tests use ``mongomock-motor`` (a
``memory://`` URL). Both hand out collections with the same async methods;
code in this project calls only the methods of :class:`Collection` below, so
whatever works against one works against the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from strangler.config import redact_url
from strangler.errors import ConfigError, ServiceUnavailable

__all__ = ["Collection", "Cursor", "Database", "open_database"]

Document = dict[str, Any]
Filter = Mapping[str, Any]


class Cursor(Protocol):
    def __aiter__(self) -> AsyncIterator[Document]: ...
    def sort(self, key_or_list: Any, direction: Any = ...) -> Cursor: ...
    def skip(self, skip: int) -> Cursor: ...
    def limit(self, limit: int) -> Cursor: ...
    def batch_size(self, batch_size: int) -> Cursor: ...
    async def to_list(self, length: int | None = ...) -> list[Document]: ...


class Collection(Protocol):
    name: str

    def find(self, filter: Filter | None = ..., projection: Any = ..., **kwargs: Any) -> Cursor: ...
    async def find_one(
        self, filter: Filter | None = ..., projection: Any = ..., **kwargs: Any
    ) -> Document | None: ...
    async def insert_one(self, document: Document, **kwargs: Any) -> Any: ...
    async def insert_many(self, documents: Sequence[Document], **kwargs: Any) -> Any: ...
    async def update_one(self, filter: Filter, update: Any, **kwargs: Any) -> Any: ...
    async def update_many(self, filter: Filter, update: Any, **kwargs: Any) -> Any: ...
    async def replace_one(self, filter: Filter, replacement: Document, **kwargs: Any) -> Any: ...
    async def delete_one(self, filter: Filter, **kwargs: Any) -> Any: ...
    async def delete_many(self, filter: Filter, **kwargs: Any) -> Any: ...
    async def count_documents(self, filter: Filter, **kwargs: Any) -> int: ...
    async def create_index(self, keys: Any, **kwargs: Any) -> Any: ...
    async def drop(self) -> None: ...


class Database(Protocol):
    name: str

    def __getitem__(self, name: str) -> Collection: ...
    async def list_collection_names(self) -> list[str]: ...


_memory_clients: dict[str, Any] = {}
_memory_patched = False


def _patch_memory_cursor() -> None:
    """Make the in-process store's cursors behave like PyMongo's, at PyMongo's cost.

    mongomock slices its whole result list on every ``next()`` (quadratic in the
    result size: a 70k-document read took tens of seconds), and mongomock-motor's
    ``to_list`` ignores its ``length``. Both are fixed here, once, for the
    in-process store only; the production path (PyMongo) is untouched.
    """
    global _memory_patched
    if _memory_patched:
        return
    from mongomock.collection import Cursor as MockCursor
    from mongomock_motor import AsyncCursor

    def next_document(self: Any) -> Any:
        results = self._compute_results(with_limit_and_skip=False)
        position = self._skip + self._emitted
        limit = abs(self._limit) if self._limit else None
        if position >= len(results) or (limit is not None and self._emitted >= limit):
            raise StopIteration
        self._emitted += 1
        return results[position]

    async def to_list(self: Any, length: int | None = None, *args: Any, **kwargs: Any) -> list[Any]:
        cursor = self._AsyncCursor__cursor
        documents = []
        for document in cursor:
            documents.append(document)
            if length is not None and len(documents) >= length:
                break
        return documents

    setattr(MockCursor, "__next__", next_document)  # noqa: B010 - patching a test double
    setattr(MockCursor, "next", next_document)  # noqa: B010
    setattr(AsyncCursor, "to_list", to_list)  # noqa: B010
    _memory_patched = True


def open_database(url: str, default_name: str = "uzo") -> Database:
    """The database a ``MONGO_URL`` names.

    ``memory://[name]`` returns an in-process mongomock store; every call with
    the same URL in one process shares the same store (it cannot be shared
    between processes). ``mongodb://host/name`` returns PyMongo's async client.
    """
    parts = urlsplit(url)
    name = (
        (parts.path.lstrip("/") or parts.netloc or default_name)
        if parts.scheme == "memory"
        else (parts.path.lstrip("/").split("?")[0] or default_name)
    )
    if parts.scheme == "memory":
        from mongomock_motor import AsyncMongoMockClient

        _patch_memory_cursor()
        client = _memory_clients.get(name)
        if client is None:
            client = _memory_clients[name] = AsyncMongoMockClient()
        memory_db: Any = client[name]
        return memory_db  # type: ignore[no-any-return,unused-ignore]
    if parts.scheme in ("mongodb", "mongodb+srv"):
        try:
            from pymongo import AsyncMongoClient
            from pymongo.errors import ConfigurationError
        except ImportError as exc:  # pragma: no cover - pymongo is a dependency
            raise ConfigError(
                "MONGO_URL", "PyMongo is not installed", "run 'make install'"
            ) from exc
        try:
            async_client: Any = AsyncMongoClient(url, serverSelectionTimeoutMS=5000, tz_aware=True)
        except ConfigurationError as exc:
            raise ConfigError("MONGO_URL", f"{redact_url(url)}: {exc}", "fix the URL") from exc
        mongo_db: Database = async_client[name]
        return mongo_db
    raise ConfigError(
        "MONGO_URL", f"unsupported scheme {parts.scheme!r}", "use mongodb:// or memory://"
    )


async def ping(db: Database, url: str) -> None:
    """Fail with one clear line when the server behind ``url`` does not answer."""
    command = getattr(db, "command", None)
    if command is None:  # the in-process store is always there
        return
    try:
        await command("ping")
    except Exception as exc:  # pymongo raises many kinds; all mean "not reachable"
        raise ServiceUnavailable("MONGO_URL", redact_url(url), type(exc).__name__) from exc
