"""``--dirty``: every kind of production dirt is injected, visible in the data, and counted."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from itertools import count
from typing import Any

import bson
import pytest

from legacy_emulator.generator import SeedError, SeedSummary, seed_store
from legacy_emulator.generator_dirt import DIRT_KINDS, FieldSpec
from legacy_emulator.generator_plan import COLLECTIONS
from legacy_emulator.generator_tree import SPECS
from strangler.contract import is_deleted, parse_legacy_datetime, to_int
from strangler.mongo import Database, open_database

Docs = dict[str, list[dict[str, Any]]]
_stores = count()


def fresh_store() -> Database:
    return open_database(f"memory://dirt-test-{next(_stores)}")


def seed(dirty: float) -> tuple[SeedSummary, Docs]:
    async def run() -> tuple[SeedSummary, Docs]:
        db = fresh_store()
        summary = await seed_store(db, scale="small", days=2, dirty=dirty, seed=7)
        return summary, {name: await db[name].find({}).to_list(None) for name in COLLECTIONS}

    return asyncio.run(run())


@pytest.fixture(scope="module")
def clean() -> tuple[SeedSummary, Docs]:
    return seed(0.0)


@pytest.fixture(scope="module")
def dirty() -> tuple[SeedSummary, Docs]:
    return seed(0.05)


def documents(docs: Docs) -> Iterator[tuple[str, dict[str, Any]]]:
    """(spec name, document) for every document and every folder and job inside a tree."""
    for name, items in docs.items():
        for doc in items:
            yield name, doc
            if name == "workspace":
                for folder in doc["folders"]:
                    yield "folder", folder
                    for job in folder["jobs"]:
                        yield "job", job


def value_at(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def duplicates(keys: list[tuple[str, str]]) -> int:
    return len(keys) - len(set(keys))


def observe(docs: Docs, known_keys: dict[str, set[str]]) -> Counter[str]:
    """Count, in the stored data itself, each kind of dirt that can be seen exactly."""
    seen: Counter[str] = Counter()
    users = {doc["UserId"] for doc in docs["users"]}
    for name, doc in documents(docs):
        spec: FieldSpec = SPECS[name]
        for field in spec.datetimes:
            value = doc.get(field)
            if isinstance(value, str):
                seen["datetime_as_string"] += 1
            elif isinstance(value, int):
                seen["datetime_as_epoch_ms"] += 1
        seen["optional_field_missing"] += sum(field not in doc for field in spec.optional)
        if spec.d_flag:
            seen["d_flag_missing"] += "d_flag" not in doc
            seen["d_flag_as_string"] += isinstance(doc.get("d_flag"), str)
        seen["number_as_string"] += sum(isinstance(value_at(doc, p), str) for p in spec.numbers)
        creator = doc.get("created_by")
        seen["dangling_created_by"] += (
            spec.created_by and creator is not None and creator not in users
        )
        seen["unknown_field"] += bool(set(doc) - known_keys[name])

    seen["duplicate_connector_name"] = duplicates(
        [(d["subscription_id"], d["connector_name"]) for d in docs["connectors"]]
    )
    seen["duplicate_workspace_name"] = duplicates(
        [(d["subscription_id"], d["workspace_name"]) for d in docs["workspace"]]
    )
    seen["duplicate_workflow_name"] = duplicates(
        [(d["job_id"], d["workflow_name"]) for d in docs["workflow"]]
    )
    connectors = {doc["connector_id"] for doc in docs["connectors"]}
    workflows = {doc["workflow_id"]: doc for doc in docs["workflow"]}
    for doc in docs["workflow"]:
        linked = [doc.get(key) for key in ("source_connectorid", "target_connectorid")]
        seen["dangling_connector"] += any(ref and ref not in connectors for ref in linked)
        diagram = doc["workFlowDiagram"]
        if diagram == "":
            seen["diagram_empty"] += 1
        else:
            try:
                json.loads(diagram)
            except ValueError:
                seen["diagram_invalid_json"] += 1
    in_tree = set()
    for workspace in docs["workspace"]:
        if len(bson.encode(workspace)) > 2_000_000:
            seen["oversized_workspace"] += 1
        for folder in workspace["folders"]:
            for job in folder["jobs"]:
                seen["dangling_dependency"] += sum(
                    ref not in workflows for ref in job["workflow_dependency"]
                )
                for entry in job["workflows"]:
                    in_tree.add(entry["workflow_id"])
                    full = workflows.get(entry["workflow_id"])
                    if full is None:
                        seen["tree_entry_without_workflow"] += 1
                    elif full["workFlowDiagram"] != entry["workFlowDiagram"]:
                        seen["stale_summary"] += 1
    seen["workflow_missing_from_tree"] = len(set(workflows) - in_tree)
    return seen


def known_keys(docs: Docs) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {}
    for name, doc in documents(docs):
        keys.setdefault(name, set()).update(doc)
    return keys


def test_every_kind_of_dirt_is_injected_and_counted_exactly(clean, dirty) -> None:
    summary, docs = dirty
    assert set(summary.dirt) == set(DIRT_KINDS)
    assert all(summary.dirt[kind] > 0 for kind in DIRT_KINDS), summary.dirt
    seen = observe(docs, known_keys(clean[1]))
    exact = {kind: summary.dirt[kind] for kind in DIRT_KINDS if kind != "optional_field_null"}
    assert {kind: seen[kind] for kind in exact} == exact
    assert any("dirt injected" in line for line in summary.lines())


def test_injected_nulls_add_to_the_nulls_clean_data_has(clean, dirty) -> None:
    def nulls(docs: Docs) -> int:
        return sum(
            doc.get(field, 0) is None
            for name, doc in documents(docs)
            for field in SPECS[name].optional
        )

    assert dirty[0].dirt["optional_field_null"] > 0
    per_document_clean = nulls(clean[1]) / sum(1 for _ in documents(clean[1]))
    per_document_dirty = nulls(dirty[1]) / sum(1 for _ in documents(dirty[1]))
    assert per_document_dirty > per_document_clean


def test_rate_zero_injects_nothing_that_can_be_seen(clean) -> None:
    summary, docs = clean
    assert not any(summary.dirt.values())
    assert not +observe(docs, known_keys(docs))


def test_dirty_values_are_the_kinds_the_shared_readers_understand(dirty) -> None:
    _, docs = dirty
    lowest, highest = datetime(2025, 1, 1), datetime(2026, 11, 2)
    strings = 0
    for name, doc in documents(docs):
        spec = SPECS[name]
        for field in spec.datetimes:
            value = doc.get(field)
            if isinstance(value, str | int) and not isinstance(value, bool):
                moment = parse_legacy_datetime(value)
                assert moment is not None
                assert lowest <= moment.replace(tzinfo=None) <= highest, (name, field, value)
                strings += isinstance(value, str)
        for path in spec.numbers:
            if value_at(doc, path) is not None:
                assert isinstance(to_int(value_at(doc, path)), int)
        if spec.d_flag and isinstance(doc.get("d_flag"), str):
            assert doc["d_flag"] in ("true", "false")
            assert isinstance(is_deleted(doc["d_flag"]), bool)
    formats = {
        len(value)
        for _, doc in documents(docs)
        for value in (doc.get("created_at"),)
        if isinstance(value, str)
    }
    assert strings > 0 and len(formats) >= 3  # several formats, not one


def test_oversized_workspaces_are_several_megabytes_but_storable(dirty) -> None:
    summary, docs = dirty
    sizes = sorted(len(bson.encode(doc)) for doc in docs["workspace"])
    assert 2_000_000 < sizes[-1] < 16 * 1024 * 1024
    assert summary.dirt["oversized_workspace"] == sum(size > 2_000_000 for size in sizes)


def test_a_store_that_already_holds_data_is_refused_unless_replaced() -> None:
    async def run() -> tuple[str, int]:
        db = fresh_store()
        first = await seed_store(db, scale="small", days=1)
        with pytest.raises(SeedError) as refused:
            await seed_store(db, scale="small", days=1)
        await seed_store(db, scale="small", days=1, replace=True)
        assert await db["workflow"].count_documents({}) == first.counts["workflow"]
        return str(refused.value), first.counts["workflow"]

    message, _ = asyncio.run(run())
    assert "already holds documents" in message


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"scale": "huge"}, "unknown scale 'huge'"),
        ({"scale": "small", "dirty": 1.5}, "between 0 and 1"),
        ({"scale": "small", "days": -1}, "must not be negative"),
    ],
)
def test_impossible_requests_are_refused_with_what_to_do(
    arguments: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(SeedError, match=complaint):
        asyncio.run(seed_store(fresh_store(), **arguments))
