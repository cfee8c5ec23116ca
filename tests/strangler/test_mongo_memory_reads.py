"""The in-process store's faster reads (``strangler.mongo._patch_memory_reads``) give what
mongomock's own code gives: the same documents, in the same order, still copies."""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime
from typing import Any

from bson import Int64, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrators.backfill import ID_TYPES
from strangler.mongo import _MOCK_ORIGINALS, open_database

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)
    ),
    st.binary(max_size=3).map(lambda b: ObjectId(b.ljust(12, b"\0"))),
    st.integers(0, 5).map(Int64),
)
_keys = st.text(alphabet="abé", max_size=3)  # field names MongoDB accepts
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=3)),
    max_leaves=6,
)
_ids = st.one_of(
    st.integers(-50, 50),
    st.text(max_size=3),
    st.binary(min_size=12, max_size=12).map(ObjectId),
    st.booleans(),
    st.dictionaries(_keys, st.integers(0, 3), max_size=2),
)
# a field that is always of one type (the fast sort) beside fields of mixed types
_documents = st.lists(
    st.fixed_dictionaries({"_id": _ids, "n": st.integers(-5, 5), "f": st.floats(), "v": _values}),
    max_size=25,
    # the store keys documents by _id as Python does: 0, 0.0 and False are one key
    unique_by=lambda d: repr(d["_id"]) if isinstance(d["_id"], dict) else d["_id"],
)
_queries = st.one_of(
    st.just({}),
    st.sampled_from(ID_TYPES).map(lambda t: {"_id": {"$type": t}}),
    st.tuples(st.sampled_from(ID_TYPES), _ids).map(lambda p: {"_id": {"$type": p[0], "$gt": p[1]}}),
    st.just({"n": {"$gt": 0}}),
    st.lists(st.binary(min_size=12, max_size=12).map(ObjectId), max_size=4).map(
        lambda ids: {"_id": {"$in": ids}}
    ),
    st.lists(st.text(max_size=3), max_size=4).map(lambda ids: {"_id": {"$in": ids}}),
)
_sorts = st.one_of(
    st.none(),
    st.tuples(st.sampled_from(["_id", "n", "f", "v", "missing"]), st.sampled_from([1, -1])),
)


def _mongomock_answer(collection: Any, query: dict[str, Any], sort: Any) -> list[Any]:
    """What mongomock itself returns: its own dataset over its own filter."""
    patched_iter = type(collection)._iter_documents
    try:
        type(collection)._iter_documents = _MOCK_ORIGINALS["iter_documents"]
        sort_keys = [sort] if sort else None
        return list(_MOCK_ORIGINALS["get_dataset"](collection, query, sort_keys, None, dict))
    finally:
        type(collection)._iter_documents = patched_iter


def _same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN and -0.0 compare by how they print


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents=_documents, query=_queries, sort=_sorts)
def test_reads_give_what_mongomock_gives(
    documents: list[dict[str, Any]], query: Any, sort: Any
) -> None:
    db = open_database(f"memory://reads-{secrets.token_hex(4)}")

    async def run() -> tuple[Any, Any]:
        if documents:
            await db["c"].insert_many([dict(d) for d in documents])
        cursor = db["c"].find(query)
        if sort:
            cursor = cursor.sort(*sort)
        try:
            fast: Any = await cursor.to_list(None)
        except Exception as exc:  # mongomock refuses some comparisons; both must refuse
            fast = type(exc)
        collection = db["c"]._AsyncMongoMockCollection__collection  # type: ignore[attr-defined]
        try:
            slow: Any = _mongomock_answer(collection, query, sort)
        except Exception as exc:
            slow = type(exc)
        return fast, slow

    fast, slow = asyncio.run(run())
    assert _same(fast, slow)


async def test_a_returned_document_is_a_copy() -> None:
    db = open_database(f"memory://copies-{secrets.token_hex(4)}")
    await db["c"].insert_one(
        {"_id": 1, "tree": {"jobs": [{"name": "a", "at": datetime(2024, 1, 1)}]}}
    )

    first = await db["c"].find({"_id": {"$type": "number"}}).sort("_id", 1).to_list(None)
    first[0]["tree"]["jobs"][0]["name"] = "changed"
    first[0]["tree"]["jobs"].append({"name": "b"})

    again = await db["c"].find_one({"_id": 1})
    assert again == {"_id": 1, "tree": {"jobs": [{"name": "a", "at": datetime(2024, 1, 1)}]}}


async def test_a_type_query_still_reads_every_matching_document() -> None:
    db = open_database(f"memory://types-{secrets.token_hex(4)}")
    ids: list[Any] = [3, 1.5, "b", "a", ObjectId(), True, datetime(2024, 1, 1), [7, "x"]]
    await db["c"].insert_many(
        [{"_id": i} if not isinstance(i, list) else {"_id": 9, "l": i} for i in ids]
    )

    read = {
        t: [d["_id"] async for d in db["c"].find({"_id": {"$type": t}}).sort("_id", 1)]
        for t in ID_TYPES
    }

    assert read["number"] == [1.5, 3, 9]
    assert read["string"] == ["a", "b"]
    assert read["bool"] == [True] and len(read["objectId"]) == 1 and len(read["date"]) == 1
