"""The one narrow interface through which the project talks to MongoDB.

Production uses PyMongo's ``AsyncMongoClient`` (a ``mongodb://`` URL); the
emulator's in-process store and the tests use ``mongomock-motor`` (a
``memory://`` URL). Both hand out collections with the same async methods;
code in this project calls only the methods of :class:`Collection` below, so
whatever works against one works against the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

from strangler.config import redact_url
from strangler.errors import ConfigError, ServiceUnavailable

__all__ = [
    "Collection",
    "Cursor",
    "Database",
    "close_database",
    "open_database",
    "patch_memory_store",
    "ping",
]

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
    async def index_information(self) -> dict[str, Any]: ...
    async def drop(self) -> None: ...


class Database(Protocol):
    name: str

    def __getitem__(self, name: str) -> Collection: ...
    async def list_collection_names(self) -> list[str]: ...


_memory_clients: dict[str, Any] = {}
_memory_patched = False
# mongomock's own functions that the patches below replace (the tests compare against them)
_MOCK_ORIGINALS: dict[str, Any] = {}


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
    _patch_memory_reads()
    _memory_patched = True


def _patch_memory_reads() -> None:
    """Four more of mongomock's pure-Python costs, each cut only where the answer is the
    same (the backfill reads whole collections through three of them):

    * a query on ``_id`` by ``$in`` tests every document against every value; the store is
      one set lookup per document does (the sweep reads so every round);

    * a query runs its whole filter on every document; a query on ``_id`` by ``$type``
      first keeps the documents whose ``_id`` can match that type;

    * every document it returns is copied value by value with ``copy.copy`` (to keep the
      store apart from what callers do with the result); immutable values need no copy;
    * a sort wraps each value in an object whose ``<`` works out both BSON types on every
      comparison; when every document's value is of one type whose BSON order is Python's
      own (ObjectId, str, datetime, or numbers), the values are sorted as they are.
    """
    import mongomock.collection as mock_collection
    from bson import ObjectId
    from mongomock import filtering

    original_copy = mock_collection._copy_field
    original_dataset = mock_collection.Collection._get_dataset
    original_iter = mock_collection.Collection._iter_documents
    shared = frozenset({str, int, float, bool, type(None), bytes, datetime, ObjectId})
    native_order = ({ObjectId}, {str}, {datetime}, {int}, {float}, {int, float})

    def copy_field(obj: Any, container: Any) -> Any:
        kind = type(obj)
        if kind in shared:
            return obj
        if kind is dict and container is dict:
            return {k: v if type(v) in shared else copy_field(v, container) for k, v in obj.items()}
        if kind is list:
            return [v if type(v) in shared else copy_field(v, container) for v in obj]
        return original_copy(obj, container)

    def get_dataset(self: Any, spec: Any, sort: Any, fields: Any, as_class: Any) -> Any:
        keys = list(sort.items() if isinstance(sort, dict) else sort or ())
        if len(keys) != 1 or keys[0][0].startswith("$"):
            yield from original_dataset(self, spec, sort, fields, as_class)
            return
        key, direction = keys[0]
        documents = list(self._iter_documents(spec))
        values = [filtering.resolve_key(key, document) for document in documents]
        if {type(value) for value in values} not in native_order:
            yield from original_dataset(self, spec, sort, fields, as_class)
            return
        # mongomock compares two values of one BSON type with Python's own ``<``: the
        # same comparisons, so the same order, without the wrapper
        order = sorted(range(len(documents)), key=values.__getitem__, reverse=direction < 0)
        for index in order:
            yield self._copy_only_fields(documents[index], fields, as_class)

    def iter_documents(self: Any, spec: Any) -> Any:
        condition = spec.get("_id") if isinstance(spec, dict) and len(spec) == 1 else None
        single = isinstance(condition, dict) and len(condition) == 1
        wanted = condition.get("$in") if single else None  # type: ignore[union-attr]
        if isinstance(wanted, list | tuple) and wanted and _one_plain_type(wanted):
            # {"_id": {"$in": [...]}} (the sweep's and the feeds' reads by id): one set
            # lookup per document instead of a scan of the list for each (N x k), in the
            # store's order as before
            keys = set(wanted)
            found = [d for d in list(self._store.documents) if _hashable_in(d.get("_id"), keys)]
            return (d for d in found if filtering.filter_applies(spec, d))
        # {"_id": {"$type": T, ...}} (the backfill's query, one per _id type) only matches a
        # document whose _id passes T's test (or is an array): mongomock's whole filter runs
        # on those alone instead of on every document
        alias = condition.get("$type") if isinstance(condition, dict) else None
        test = filtering.TYPE_MAP.get(alias) if isinstance(alias, str) else None
        if test is None or self._store.is_empty:
            return original_iter(self, spec)
        candidates = [
            document
            for document in list(self._store.documents)
            if test(document.get("_id")) or isinstance(document.get("_id"), list | tuple)
        ]
        return (d for d in candidates if filtering.filter_applies(spec, d))

    _MOCK_ORIGINALS.update(
        copy_field=original_copy, get_dataset=original_dataset, iter_documents=original_iter
    )
    setattr(mock_collection, "_copy_field", copy_field)  # noqa: B010
    setattr(mock_collection.Collection, "_iter_documents", iter_documents)  # noqa: B010
    setattr(mock_collection.Collection, "_get_dataset", get_dataset)  # noqa: B010


def _one_plain_type(values: Any) -> bool:
    """All ObjectIds or all str: hashable, keyed as they are, ordered as BSON orders them."""
    from bson import ObjectId

    kinds = {type(v) for v in values}
    return kinds == {ObjectId} or kinds == {str}


def _hashable_in(value: Any, keys: set[Any]) -> bool:
    try:
        return value in keys
    except TypeError:  # an unhashable _id (a dict, a list): the filter decides
        return True


def patch_memory_store() -> None:
    """Apply the in-process store's fixes to mongomock (once), for any user of mongomock:
    the ``memory://`` store, and the wire-protocol test server's engine."""
    _patch_memory_cursor()


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


async def close_database(db: Database) -> None:
    """Close the client behind a ``mongodb://`` database (the in-process store stays: it is
    shared by every user of its URL in this process)."""
    client = getattr(db, "client", None)
    try:
        from pymongo import AsyncMongoClient
    except ImportError:  # pragma: no cover - pymongo is a dependency
        return
    if isinstance(client, AsyncMongoClient):
        await client.close()


async def ping(db: Database, url: str) -> None:
    """Fail with one clear line when the server behind ``url`` does not answer."""
    command = getattr(db, "command", None)
    if command is None:  # the in-process store is always there
        return
    try:
        await command("ping")
    except Exception as exc:  # pymongo raises many kinds; all mean "not reachable"
        raise ServiceUnavailable("MONGO_URL", redact_url(url), type(exc).__name__) from exc
