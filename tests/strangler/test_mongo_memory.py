from __future__ import annotations

import secrets

from strangler.mongo import open_database


async def test_in_process_cursor_reads_like_pymongo() -> None:
    db = open_database(f"memory://cursor-{secrets.token_hex(4)}")
    await db["c"].insert_many([{"i": i, "odd": i % 2} for i in range(100)])

    seen = [doc["i"] async for doc in db["c"].find({"odd": 1}).sort("i", -1).skip(3).limit(5)]
    assert seen == [93, 91, 89, 87, 85]
    assert len(await db["c"].find({}).to_list(7)) == 7
    assert len(await db["c"].find({}).limit(4).to_list(None)) == 4
    assert [d["i"] for d in await db["c"].find({}).skip(98).to_list(None)] == [98, 99]


async def test_the_same_memory_url_shares_one_store() -> None:
    url = f"memory://shared-{secrets.token_hex(4)}"
    await open_database(url)["c"].insert_one({"x": 1})
    assert await open_database(url)["c"].count_documents({}) == 1
