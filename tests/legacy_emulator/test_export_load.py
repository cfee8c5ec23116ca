"""Production exports: loaded exactly as found, problems named by file and line, never dropped."""

from __future__ import annotations

import json
import pathlib
import re
from datetime import datetime
from itertools import count

import bson
import pytest
from bson import Binary, Decimal128, Int64, ObjectId
from bson.datetime_ms import DatetimeMS

from legacy_emulator.export_load import ExportError, dump_export, load_export
from legacy_emulator.generator import seed_store
from legacy_emulator.generator_plan import COLLECTIONS
from strangler.mongo import Database, open_database

_stores = count()


def fresh_store() -> Database:
    return open_database(f"memory://export-test-{next(_stores)}")


async def stored_bytes(db: Database, name: str) -> list[bytes]:
    """Each document's exact BSON: values, types and key order."""
    return [bson.encode(doc) for doc in await db[name].find({}).sort("_id", 1).to_list(None)]


def write(path: pathlib.Path, *lines: str) -> pathlib.Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("mode", ["relaxed", "canonical"])
async def test_dirty_seed_survives_dump_and_load_byte_for_byte(
    tmp_path: pathlib.Path, mode: str
) -> None:
    source = fresh_store()
    await seed_store(source, scale="small", days=1, dirty=0.05, seed=3)
    written = await dump_export(source, tmp_path, mode=mode)  # type: ignore[arg-type]
    assert set(written) == set(COLLECTIONS)

    target = fresh_store()
    summary = await load_export(target, tmp_path)

    assert summary.problems == []
    assert summary.counts == written
    for name in COLLECTIONS:
        assert await stored_bytes(target, name) == await stored_bytes(source, name), name
    workspace = await target["workspace"].find_one({})
    assert workspace is not None
    assert isinstance(workspace["_id"], ObjectId) and isinstance(workspace["created_at"], datetime)


async def test_canonical_export_keeps_every_bson_type(tmp_path: pathlib.Path) -> None:
    source = fresh_store()
    document = {
        "_id": ObjectId("65f0c0ffee0000000000abcd"),
        "long": Int64(7),
        "int": 7,
        "decimal": Decimal128("12.50"),
        "blob": Binary(b"\x00\x01", 0),
        "ancient": DatetimeMS(-62_198_755_200_001),  # before year 1: not a Python datetime
        "when": datetime(2026, 3, 1, 12, 30, 15, 123000),
        "nested": {"list": [1, "two", None, {"three": 3.5}]},
    }
    await source["workflow"].insert_one(document)
    await dump_export(source, tmp_path, ["workflow"], mode="canonical")

    target = fresh_store()
    summary = await load_export(target, tmp_path)

    assert summary.ok and summary.counts == {"workflow": 1}
    assert await stored_bytes(target, "workflow") == await stored_bytes(source, "workflow")


async def test_mongoexport_lines_decode_to_bson_types(tmp_path: pathlib.Path) -> None:
    write(
        tmp_path / "jobRun.json",
        '{"_id":{"$oid":"65f0c0ffee0000000000a001"},"job_run_id":"run_00000000000a",'
        '"created_at":{"$date":"2026-10-01T08:00:00.250Z"},"rows_processed":{"$numberLong":"42"},'
        '"cost":{"$numberDecimal":"0.10"}}',
        '{"_id":{"$oid":"65f0c0ffee0000000000a002"},'
        '"created_at":{"$date":{"$numberLong":"1759305600000"}},"duration_ms":{"$numberInt":"9"}}',
    )
    db = fresh_store()
    summary = await load_export(db, tmp_path)

    assert summary.ok
    first, second = await db["jobRun"].find({}).sort("_id", 1).to_list(None)
    assert first["created_at"] == datetime(2026, 10, 1, 8, 0, 0, 250000)
    assert first["rows_processed"] == 42 and isinstance(first["rows_processed"], Int64)
    assert first["cost"] == Decimal128("0.10")
    assert second["created_at"] == datetime(2025, 10, 1, 8, 0)
    assert second["duration_ms"] == 9


async def test_a_bad_line_is_reported_with_its_number_and_the_rest_still_loads(
    tmp_path: pathlib.Path,
) -> None:
    write(
        tmp_path / "users.jsonl",
        '{"UserId":"usr_000000000001"}',
        '{"UserId":"usr_000000000002"}',
        '{"UserId":"usr_000000000003",',  # line 3: cut short
        "",
        '["not", "a", "document"]',  # line 5
        '{"UserId":"usr_000000000006","created_at":{"$date":"yesterday"}}',  # line 6
        '{"UserId":"usr_000000000007"}',
    )
    db = fresh_store()
    summary = await load_export(db, tmp_path)

    assert [(p.file, p.line) for p in summary.problems] == [
        ("users.jsonl", 3),
        ("users.jsonl", 5),
        ("users.jsonl", 6),
    ]
    assert "not Extended JSON" in summary.problems[0].reason
    assert "not a document" in summary.problems[1].reason
    assert summary.counts == {"users": 3}
    loaded = sorted(doc["UserId"] for doc in await db["users"].find({}).to_list(None))
    assert loaded == ["usr_000000000001", "usr_000000000002", "usr_000000000007"]
    assert any("users.jsonl:3" in line for line in summary.lines())


async def test_a_document_the_store_refuses_is_reported_and_the_batch_goes_on(
    tmp_path: pathlib.Path,
) -> None:
    write(
        tmp_path / "connectors.ndjson",
        '{"_id":1,"connector_id":"cn_000000000001"}',
        '{"_id":2,"connector_id":"cn_000000000002"}',
        '{"_id":1,"connector_id":"cn_00000000000f"}',  # line 3: the same _id again
        '{"_id":3,"connector_id":"cn_000000000003"}',
    )
    db = fresh_store()
    summary = await load_export(db, tmp_path)

    assert [(p.file, p.line) for p in summary.problems] == [("connectors.ndjson", 3)]
    assert "refused by the store" in summary.problems[0].reason
    stored = await db["connectors"].find({}).sort("_id", 1).to_list(None)
    assert [doc["connector_id"] for doc in stored] == [
        "cn_000000000001",
        "cn_000000000002",
        "cn_000000000003",
    ]
    assert summary.counts == {"connectors": 3}


@pytest.mark.parametrize("indent", [None, 2])
async def test_a_json_array_export_loads_and_a_bad_element_is_named(
    tmp_path: pathlib.Path, indent: int | None
) -> None:
    rows = [
        {"group_id": f"grp_00000000000{n}", "users": [{"id": n}], "when": {"$date": 0}}
        for n in range(4)
    ]
    text = json.dumps(rows, indent=indent)
    if indent is None:  # mongoexport --jsonArray: one element per line
        text = text.replace("}}, {", "}},\n{")
    text = text.replace('"grp_000000000002"', '"grp_000000000002" "broken"')
    (tmp_path / "groups.json").write_text(text, encoding="utf-8")
    broken_line = 1 + text[: text.index('"broken"')].count("\n")
    db = fresh_store()
    summary = await load_export(db, tmp_path)

    assert [(p.file, p.line) for p in summary.problems] == [("groups.json", broken_line)]
    stored = {doc["group_id"] for doc in await db["groups"].find({}).to_list(None)}
    assert stored == {"grp_000000000000", "grp_000000000001", "grp_000000000003"}


async def test_a_clean_json_array_export_has_no_problems(tmp_path: pathlib.Path) -> None:
    rows = [
        {"role_id": f"role_00000000000{n}", "created_at": {"$date": f"2026-01-0{n}T00:00:00Z"}}
        for n in range(1, 4)
    ]
    (tmp_path / "roles.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    db = fresh_store()
    summary = await load_export(db, tmp_path)

    assert summary.ok and summary.counts == {"roles": 3}
    stored = await db["roles"].find({}).to_list(None)
    assert {doc["created_at"] for doc in stored} == {datetime(2026, 1, n) for n in (1, 2, 3)}


async def test_files_that_are_not_legacy_collections_are_reported_not_loaded(
    tmp_path: pathlib.Path,
) -> None:
    write(tmp_path / "workflow.json", '{"workflow_id":"wf_000000000001"}')
    write(tmp_path / "workflow.jsonl", '{"workflow_id":"wf_000000000002"}')
    write(tmp_path / "sessions.json", '{"token":"abc"}')
    write(tmp_path / "README.txt", "exported on Monday")
    db = fresh_store()
    summary = await load_export(db, tmp_path)

    reported = {problem.file: problem.reason for problem in summary.problems}
    assert set(reported) == {"workflow.jsonl", "sessions.json", "README.txt"}
    assert "not a legacy collection" in reported["sessions.json"]
    assert "already holds workflow" in reported["workflow.jsonl"]
    assert summary.counts == {"workflow": 1}
    assert "sessions" not in await db.list_collection_names()


async def test_progress_counts_lines_up_to_the_file_length(tmp_path: pathlib.Path) -> None:
    write(tmp_path / "userActivity.json", *(f'{{"n":{n}}}' for n in range(2500)))
    seen: list[tuple[str, int, int]] = []
    summary = await load_export(fresh_store(), tmp_path, progress=lambda *a: seen.append(a))

    assert summary.counts == {"userActivity": 2500}
    assert seen == [
        ("userActivity", 1000, 2500),
        ("userActivity", 2000, 2500),
        ("userActivity", 2500, 2500),
    ]


async def test_loading_over_existing_documents_is_refused_unless_replaced(
    tmp_path: pathlib.Path,
) -> None:
    write(tmp_path / "roles.json", '{"_id":1,"role_id":"role_000000000001"}')
    db = fresh_store()
    await db["roles"].insert_one({"_id": 9, "role_id": "role_000000000009"})
    with pytest.raises(ExportError, match="'roles' already holds documents"):
        await load_export(db, tmp_path)

    summary = await load_export(db, tmp_path, replace=True)

    assert summary.ok
    assert [doc["_id"] for doc in await db["roles"].find({}).to_list(None)] == [1]


async def test_a_missing_directory_is_one_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ExportError, match=re.escape(str(tmp_path / "nope"))):
        await load_export(fresh_store(), tmp_path / "nope")
