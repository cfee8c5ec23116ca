"""The seed data: reproducible, at the volumes asked for, consistent when clean."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import count
from typing import Any

import bson
import pytest

from legacy_emulator.generator import SCALES, SeedSummary, seed_store
from legacy_emulator.generator_dirt import DIRT_KINDS
from legacy_emulator.generator_plan import COLLECTIONS
from legacy_emulator.generator_tree import SPECS
from strangler.mongo import Database, open_database

ID = re.compile(r"^(ws|fd|jb|wf|cn|run|grp|role|usr|sub)_[0-9a-f]{12}$")
DAYS = 3  # enough history for the assertions, small enough to keep the suite fast
_stores = count()


def fresh_store() -> Database:
    return open_database(f"memory://seed-test-{next(_stores)}")


@dataclass
class Seeded:
    summary: SeedSummary
    docs: dict[str, list[dict[str, Any]]]


async def read_all(db: Database) -> dict[str, list[dict[str, Any]]]:
    return {name: await db[name].find({}).sort("_id", 1).to_list(None) for name in COLLECTIONS}


def seed_and_read(*, dirty: float = 0.0, seed: int = 1, days: int = DAYS) -> Seeded:
    async def run() -> Seeded:
        db = fresh_store()
        summary = await seed_store(db, scale="small", days=days, dirty=dirty, seed=seed)
        return Seeded(summary, await read_all(db))

    return asyncio.run(run())


@pytest.fixture(scope="module")
def clean() -> Seeded:
    return seed_and_read()


@pytest.fixture(scope="module")
def dirty() -> Seeded:
    return seed_and_read(dirty=0.05)


def tree_nodes(workspace: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for folder in workspace.get("folders", []):
        yield "folder", folder
        for job in folder.get("jobs", []):
            yield "job", job


def summaries(docs: dict[str, list[dict[str, Any]]]) -> Iterator[tuple[dict[str, Any], ...]]:
    """(workspace, folder, job, summary) for every workflow entry of every tree."""
    for workspace in docs["workspace"]:
        for folder in workspace["folders"]:
            for job in folder["jobs"]:
                for entry in job["workflows"]:
                    yield workspace, folder, job, entry


def bson_bytes(docs: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    return {name: [bson.encode(doc) for doc in items] for name, items in docs.items()}


# --- determinism ----------------------------------------------------------------------------


def test_same_seed_writes_byte_identical_documents(dirty: Seeded) -> None:
    again = seed_and_read(dirty=0.05)
    assert bson_bytes(again.docs) == bson_bytes(dirty.docs)
    assert again.summary.dirt == dirty.summary.dirt
    assert again.summary.tenants == dirty.summary.tenants


def test_another_seed_writes_other_documents(clean: Seeded) -> None:
    other = seed_and_read(seed=2)
    assert other.summary.tenants[0] != clean.summary.tenants[0]
    ids = {doc["workflow_id"] for doc in clean.docs["workflow"]}
    other_ids = {doc["workflow_id"] for doc in other.docs["workflow"]}
    assert not ids & other_ids


# --- volumes ----------------------------------------------------------------------------------


def test_scale_table_follows_the_growth_targets() -> None:
    targets = {
        "6mo": (1_000, 10_000, 500, 1_000),
        "1y": (5_000, 50_000, 2_000, 10_000),
        "2y": (20_000, 200_000, 10_000, 50_000),
    }
    for name, volumes in targets.items():
        scale = SCALES[name]
        assert (scale.workspaces, scale.workflows, scale.users, scale.job_runs_per_day) == volumes
        assert scale.tenants >= 10 and scale.default_days >= 7
    small = SCALES["small"]
    assert (small.workspaces, small.workflows, small.users, small.job_runs_per_day) == (
        20,
        200,
        30,
        100,
    )


def test_small_scale_writes_its_volumes_and_reports_them(clean: Seeded) -> None:
    small = SCALES["small"]
    expected = {
        "Accounts": small.tenants,
        "users": small.users,
        "connectors": small.connectors,
        "workspace": small.workspaces,
        "workflow": small.workflows,
        "jobRun": small.job_runs_per_day * DAYS,
        "userActivity": small.activity_per_day * DAYS,
    }
    for name, wanted in expected.items():
        assert len(clean.docs[name]) == wanted, name
    assert clean.summary.counts == {name: len(items) for name, items in clean.docs.items()}
    assert clean.docs["workflow_versions"] and clean.docs["workflowBkp"]
    assert any(f"{small.workflows:>10,}" in line for line in clean.summary.lines())


def test_tenants_are_uneven_and_listed_largest_first(clean: Seeded) -> None:
    per_tenant = Counter(doc["subscription_id"] for doc in clean.docs["workflow"])
    sizes = [per_tenant[sub] for sub, _ in clean.summary.tenants]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] > 2 * sizes[-1]
    tenant_of_user = {doc["UserId"]: doc["subscription_id"] for doc in clean.docs["users"]}
    assert all(tenant_of_user[user] == sub for sub, user in clean.summary.tenants)
    assert {doc["subscription_id"] for doc in clean.docs["Accounts"]} == set(per_tenant)


def test_progress_reports_every_collection_up_to_its_total() -> None:
    seen: dict[str, tuple[int, int]] = {}

    async def run() -> SeedSummary:
        return await seed_store(
            fresh_store(),
            scale="small",
            days=1,
            progress=lambda name, done, total: seen.__setitem__(name, (done, total)),
        )

    summary = asyncio.run(run())
    assert seen == {name: (n, n) for name, n in summary.counts.items()}


# --- clean data -------------------------------------------------------------------------------


def test_clean_data_has_no_dirt_and_only_well_typed_values(clean: Seeded) -> None:
    assert clean.summary.dirt == dict.fromkeys(DIRT_KINDS, 0)
    for name, items in clean.docs.items():
        spec = SPECS[name]
        for doc in items:
            for field in spec.datetimes:
                value = doc[field]
                assert value is None or isinstance(value, datetime), (name, field)
                assert value is None or (value.tzinfo is None and value.microsecond % 1000 == 0)
            for field in spec.optional:
                assert field in doc, (name, field)
            if spec.d_flag:
                assert isinstance(doc["d_flag"], bool)
            for path in spec.numbers:
                value = doc
                for part in path.split("."):
                    value = value[part]
                assert value is None or type(value) is int, (name, path)
    for workspace in clean.docs["workspace"]:
        for kind, node in tree_nodes(workspace):
            assert isinstance(node["d_flag"], bool) and isinstance(node["created_at"], datetime)
            assert ID.match(node[f"{kind}_id"])


def test_clean_ids_are_well_formed_and_unique(clean: Seeded) -> None:
    id_fields = {
        "Accounts": "subscription_id",
        "users": "UserId",
        "groups": "group_id",
        "roles": "role_id",
        "connectors": "connector_id",
        "workspace": "workspace_id",
        "workflow": "workflow_id",
        "jobRun": "job_run_id",
    }
    for name, field in id_fields.items():
        values = [doc[field] for doc in clean.docs[name]]
        assert all(ID.match(value) for value in values), name
        assert len(set(values)) == len(values), name
    prefixes = {"workspace_id": "ws_", "folder_id": "fd_", "job_id": "jb_"}
    for doc in clean.docs["workflow"]:
        assert all(doc[key].startswith(prefix) for key, prefix in prefixes.items())


def test_clean_trees_and_workflow_documents_agree(clean: Seeded) -> None:
    workflows = {doc["workflow_id"]: doc for doc in clean.docs["workflow"]}
    placed = set()
    for workspace, folder, job, entry in summaries(clean.docs):
        doc = workflows[entry["workflow_id"]]
        assert (doc["workspace_id"], doc["folder_id"], doc["job_id"]) == (
            workspace["workspace_id"],
            folder["folder_id"],
            job["job_id"],
        )
        assert entry["workflow_name"] == doc["workflow_name"]
        assert entry["d_flag"] == doc["d_flag"]
        assert entry["workFlowDiagram"] == doc["workFlowDiagram"]
        placed.add(entry["workflow_id"])
    assert placed == set(workflows)


def test_clean_diagrams_are_json_graphs_of_dozens_of_nodes(clean: Seeded) -> None:
    sizes = []
    for doc in clean.docs["workflow"]:
        graph = json.loads(doc["workFlowDiagram"])
        node_ids = {node["id"] for node in graph["nodes"]}
        assert all(
            edge["source"] in node_ids and edge["target"] in node_ids for edge in graph["edges"]
        )
        assert {"source", "target"} <= {node["type"] for node in graph["nodes"]}
        assert all({"x", "y"} == set(node["position"]) for node in graph["nodes"])
        sizes.append(len(graph["nodes"]))
    assert min(sizes) >= 12 and max(sizes) >= 36


def test_clean_references_resolve_within_the_tenant(clean: Seeded) -> None:
    docs = clean.docs
    users = {doc["UserId"]: doc["subscription_id"] for doc in docs["users"]}
    connectors = {doc["connector_id"]: doc["subscription_id"] for doc in docs["connectors"]}
    workflows = {doc["workflow_id"]: doc for doc in docs["workflow"]}
    creators = [
        (doc["created_by"], doc["subscription_id"])
        for name in ("groups", "connectors", "workspace", "workflow")
        for doc in docs[name]
    ]
    creators += [
        (node["created_by"], ws["subscription_id"])
        for ws in docs["workspace"]
        for _, node in tree_nodes(ws)
    ]
    assert all(users[user] == sub for user, sub in creators)
    for doc in docs["workflow"]:
        for key in ("source_connectorid", "target_connectorid"):
            assert connectors[doc[key]] == doc["subscription_id"]
    for _, _, job, _ in summaries(docs):
        in_job = {entry["workflow_id"] for entry in job["workflows"]}
        assert set(job["workflow_dependency"]) <= in_job
    for name in ("groups", "roles"):
        for doc in docs[name]:
            assert all(users[member] == doc["subscription_id"] for member in doc["users"])
    for run in docs["jobRun"]:
        workflow = workflows[run["workflow_id"]]
        assert (workflow["job_id"], workflow["subscription_id"]) == (
            run["job_id"],
            run["subscription_id"],
        )
        assert users[run["triggered_by"]] == run["subscription_id"]
    assert all(users[entry["UserId"]] for entry in docs["userActivity"])
    assert all(v["workflow_id"] in workflows for v in docs["workflow_versions"])
    assert all(b["workflow_id"] in workflows for b in docs["workflowBkp"])


def test_clean_names_are_unique_where_the_new_schema_wants_them(clean: Seeded) -> None:
    docs = clean.docs
    connector_names = [(d["subscription_id"], d["connector_name"]) for d in docs["connectors"]]
    workspace_names = [(d["subscription_id"], d["workspace_name"]) for d in docs["workspace"]]
    assert len(set(connector_names)) == len(connector_names)
    assert len(set(workspace_names)) == len(workspace_names)
    for _, _, job, _ in summaries(docs):
        names = [entry["workflow_name"] for entry in job["workflows"]]
        assert len(set(names)) == len(names)


def test_connectors_keep_plaintext_passwords_and_type_specific_keys(clean: Seeded) -> None:
    types = Counter(doc["connector_type"] for doc in clean.docs["connectors"])
    assert len(types) >= 4
    for doc in clean.docs["connectors"]:
        detail = doc["connection_detail"]
        assert {"host", "port", "database", "username", "password"} <= set(detail)
        assert len(detail) > 5 and not detail["password"].startswith("$2")
