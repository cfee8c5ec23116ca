"""``strangler legacy mongod``: what PyMongo's real async client gets from the test server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from bson import ObjectId
from bson.timestamp import Timestamp
from pymongo import AsyncMongoClient, InsertOne, UpdateOne
from pymongo.errors import DuplicateKeyError, OperationFailure

from legacy_emulator.wire import CommandEngine, WireServer


@pytest.fixture
async def small_history() -> AsyncIterator[AsyncMongoClient]:
    """A server of its own whose change log keeps only 5 writes."""
    server = WireServer(CommandEngine(history=5))
    server.run()
    client: AsyncMongoClient = AsyncMongoClient(server.url, tz_aware=True)
    try:
        yield client
    finally:
        await client.close()
        server.stop()


@pytest.fixture
async def client(wire_mongod: str) -> AsyncIterator[AsyncMongoClient]:
    mongo: AsyncMongoClient = AsyncMongoClient(wire_mongod, tz_aware=True)
    try:
        yield mongo
    finally:
        await mongo.close()


async def test_crud_bulk_upsert_and_cursors(client: AsyncMongoClient, wire_mongo_url: str) -> None:
    db = client[wire_mongo_url.rsplit("/", 1)[1]]
    items = db["items"]
    await items.insert_many([{"n": n, "even": n % 2 == 0} for n in range(250)])
    # A find bigger than one batch comes back through getMore.
    got = [doc["n"] async for doc in items.find({}, batch_size=40).sort("n", -1)]
    assert got == list(range(249, -1, -1))
    assert await items.count_documents({"even": True}) == 125
    assert sorted(await items.distinct("even")) == [False, True]
    result = await items.bulk_write(
        [
            InsertOne({"n": 1000}),
            UpdateOne({"n": 1}, {"$set": {"tag": "one"}}),
            UpdateOne({"n": 5000}, {"$set": {"tag": "new"}}, upsert=True),
        ]
    )
    assert (result.inserted_count, result.modified_count, result.upserted_count) == (1, 1, 1)
    assert (await items.find_one({"n": 5000}))["tag"] == "new"
    before = await items.find_one_and_update({"n": 2}, {"$inc": {"n": 100}})
    assert before is not None and before["n"] == 2
    assert await items.find_one({"n": 102}) is not None
    grouped = [
        doc
        async for doc in await items.aggregate(
            [{"$match": {"n": {"$lt": 10}}}, {"$group": {"_id": "$even", "c": {"$sum": 1}}}]
        )
    ]
    assert {doc["_id"]: doc["c"] for doc in grouped} == {True: 4, False: 5}
    deleted = await items.delete_many({"n": {"$gte": 200}})
    assert deleted.deleted_count == 50 + 2  # 200..249, 1000 and 5000
    assert "items" in await db.list_collection_names()
    await items.drop()
    assert "items" not in await db.list_collection_names()


async def test_unique_index_refuses_a_duplicate(
    client: AsyncMongoClient, wire_mongo_url: str
) -> None:
    users = client[wire_mongo_url.rsplit("/", 1)[1]]["users"]
    await users.create_index([("email", 1)], unique=True, name="email_unique")
    await users.insert_one({"email": "a@example.com"})
    with pytest.raises(DuplicateKeyError):
        await users.insert_one({"email": "a@example.com"})
    names = [index["name"] async for index in await users.list_indexes()]
    assert "email_unique" in names


async def test_change_stream_in_the_documented_format(
    client: AsyncMongoClient, wire_mongo_url: str
) -> None:
    coll = client[wire_mongo_url.rsplit("/", 1)[1]]["connectors"]
    stream = await coll.watch(full_document="updateLookup", max_await_time_ms=50)
    start = stream.resume_token
    assert start is not None  # where it stands before any event (postBatchResumeToken)
    key = (await coll.insert_one({"connector_id": "cn_1", "v": 1})).inserted_id
    await coll.update_one({"_id": key}, {"$set": {"v": 2}})
    await coll.replace_one({"_id": key}, {"connector_id": "cn_1", "v": 3})
    await coll.delete_one({"_id": key})
    events = []
    while len(events) < 4:
        change = await stream.try_next()
        if change is not None:
            events.append(change)
    await stream.close()
    assert [e["operationType"] for e in events] == ["insert", "update", "replace", "delete"]
    inserted, updated, _replaced, deleted = events
    assert inserted["fullDocument"] == {"_id": key, "connector_id": "cn_1", "v": 1}
    assert updated["updateDescription"]["updatedFields"] == {"v": 2}
    # updateLookup: the document as it is when the event is read (already gone here).
    assert updated["fullDocument"] is None
    assert deleted["documentKey"] == {"_id": key}
    assert all(isinstance(e["clusterTime"], Timestamp) for e in events)
    assert [e["clusterTime"] for e in events] == sorted(e["clusterTime"] for e in events)
    assert all(e["ns"]["coll"] == "connectors" for e in events)
    # Resuming after the first event gives the rest again, from the same token.
    resumed = await coll.watch(resume_after=inserted["_id"], max_await_time_ms=50)
    again = [await resumed.try_next() for _ in range(3)]
    await resumed.close()
    assert [e["operationType"] for e in again if e] == ["update", "replace", "delete"]
    # A stream opened before the writes, from its starting token, sees them all too.
    from_start = await coll.watch(resume_after=start, max_await_time_ms=50)
    first = await from_start.try_next()
    await from_start.close()
    assert first is not None and first["operationType"] == "insert"


async def test_token_older_than_the_log_is_change_stream_history_lost(
    small_history: AsyncMongoClient,
) -> None:
    coll = small_history["uzo"]["connectors"]
    stream = await coll.watch(max_await_time_ms=50)
    await coll.insert_one({"n": 0})
    first = await stream.try_next()
    await stream.close()
    assert first is not None
    for n in range(1, 10):  # the log keeps 5: the first event's token falls out
        await coll.insert_one({"n": n})
    with pytest.raises(OperationFailure) as lost:
        stream = await coll.watch(resume_after=first["_id"], max_await_time_ms=50)
        await stream.try_next()
    assert lost.value.code == 286
    assert "ChangeStreamHistoryLost" in str(lost.value.details)


async def test_an_open_stream_that_falls_behind_the_log_gets_286(
    small_history: AsyncMongoClient,
) -> None:
    coll = small_history["uzo"]["connectors"]
    stream = await coll.watch(max_await_time_ms=50)
    await coll.insert_many([{"n": n} for n in range(20)])  # more than the log keeps
    with pytest.raises(OperationFailure) as lost:
        for _ in range(25):
            await stream.try_next()
    await stream.close()
    assert lost.value.code == 286


def test_legacy_mongod_command_serves_seeded_data_until_stopped(tmp_path: object) -> None:
    """The command as a user starts it: seeded, reachable by MONGO_URL, stopped by SIGTERM."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "strangler.cli",
            "legacy",
            "mongod",
            "--port",
            "0",
            "--with-data",
            "small",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        url = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "MONGO_URL=" in line:
                url = line.split("MONGO_URL=", 1)[1].split(";", 1)[0]
                break
        assert url, "".join(lines)
        assert "test double" in lines[-1]

        async def count() -> int:
            mongo: AsyncMongoClient = AsyncMongoClient(url)
            try:
                return await mongo.get_default_database()["connectors"].count_documents({})
            finally:
                await mongo.close()

        assert asyncio.run(count()) > 0
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert "its data is gone" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_in_use_is_a_clear_error() -> None:
    server = WireServer(CommandEngine())
    server.run()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "strangler.cli",
                "legacy",
                "mongod",
                "--port",
                str(server.port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "--port" in done.stderr + done.stdout


def test_ids_round_trip(wire_mongod: str) -> None:
    async def run() -> None:
        mongo: AsyncMongoClient = AsyncMongoClient(wire_mongod)
        try:
            coll = mongo["ids"]["c"]
            key = ObjectId()
            await coll.insert_one({"_id": key, "x": 1})
            assert (await coll.find_one({"_id": key}))["x"] == 1
        finally:
            await mongo.close()

    asyncio.run(run())
