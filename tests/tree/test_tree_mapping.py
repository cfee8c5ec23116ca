"""The tree's mappings, table-driven and property-based: document -> rows -> document gives
the normalized document back, in memory and through PostgreSQL."""

from __future__ import annotations

import asyncio
import copy
import json

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from tree_strategies import workspaces
from tree_support import WORKFLOWS, WORKSPACES, apply, rows_of, with_tenant, workspace_doc

from migrators.entities.tree_workflows import diagram_columns
from migrators.spec import Mapped, MappingContext, Quarantined
from strangler.jsonfast import JsonText

CTX = MappingContext()


@settings(max_examples=300, deadline=None)
@given(workspaces)
def test_any_workspace_document_round_trips_to_its_normalized_form(document):
    original = copy.deepcopy(document)
    mapped = WORKSPACES.map_document(document, CTX)
    assert document == original  # the mapping never changes its input
    if isinstance(mapped, Quarantined):
        assert mapped.reason in ("malformed_tree", "nul_character")
        return
    assert WORKSPACES.to_document(mapped.rows, CTX) == WORKSPACES.normalize(document)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(document=workspaces)
def test_any_workspace_document_round_trips_through_postgresql(database_url, document):
    async def round_trip() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            # each example on its own: generated ids repeat across examples, and a folder
            # id claimed by two workspace documents is another test's matter
            await conn.execute(f"TRUNCATE {', '.join(WORKSPACES.tables)} CASCADE")
            await with_tenant(conn)
            mapped = WORKSPACES.map_document(document, CTX)
            if not isinstance(mapped, Mapped):
                return
            await apply(conn, CTX, [document])
            rows = await rows_of(conn, document["workspace_id"])
            assert WORKSPACES.to_document(rows, CTX) == WORKSPACES.normalize(document)
        finally:
            await conn.close()

    asyncio.run(round_trip())


def _with(change):
    document = workspace_doc()
    change(document)
    return document


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({**workspace_doc(), "workspace_id": None}, "missing_id"),
        ({**workspace_doc(), "subscription_id": ""}, "missing_subscription"),
        (_with(lambda d: d["folders"].append("not a folder")), "malformed_tree"),
        (_with(lambda d: d["folders"][0]["jobs"][0].pop("job_id")), "missing_tree_id"),
        (_with(lambda d: d["folders"].append(copy.deepcopy(d["folders"][0]))), "duplicate_tree_id"),
        (_with(lambda d: d["folders"][0].update(folder_name="a\x00b")), "nul_character"),
    ],
)
def test_documents_that_cannot_become_rows_are_quarantined_with_their_reason(document, reason):
    outcome = WORKSPACES.map_document(document, CTX)
    assert isinstance(outcome, Quarantined) and outcome.reason == reason


def test_a_tree_becomes_rows_in_every_table_in_tree_order():
    document = workspace_doc(folders=2, jobs=2, workflows=3)
    mapped = WORKSPACES.map_document(document, CTX)
    assert isinstance(mapped, Mapped)
    counts = {table: len(rows) for table, rows in mapped.rows.items()}
    assert counts == {
        "workspaces": 1,
        "folders": 2,
        "jobs": 4,
        "workflow_dependencies": 12,
        "workflow_tree_entries": 12,
    }
    job = document["folders"][1]["jobs"][0]
    deps = [d for d in mapped.rows["workflow_dependencies"] if d["job_id"] == job["job_id"]]
    assert [d["workflow_id"] for d in deps] == job["workflow_dependency"]
    assert [d["position"] for d in deps] == [0, 1, 2]
    jobs = [j for j in mapped.rows["jobs"] if j["folder_id"] == document["folders"][1]["folder_id"]]
    assert [j["tree_position"] for j in jobs] == [0, 1]


def test_duplicate_live_names_are_renamed_and_come_back_as_found():
    def same_names(d):
        d["folders"][1]["folder_name"] = d["folders"][0]["folder_name"]
        d["folders"][0]["jobs"][1]["job_name"] = d["folders"][0]["jobs"][0]["job_name"]

    document = _with(same_names)
    mapped = WORKSPACES.map_document(document, CTX)
    assert isinstance(mapped, Mapped)
    names = sorted(f["folder_name"] for f in mapped.rows["folders"])
    assert names == ["Daily 0", f"Daily 0 [{document['folders'][1]['folder_id']}]"]
    assert [n.kind for n in mapped.notes].count("renamed_duplicate") == 2
    assert WORKSPACES.to_document(mapped.rows, CTX) == document


@pytest.mark.parametrize(
    ("text", "parsed", "note"),
    [
        ('{"nodes":[],"edges":[]}', {"nodes": [], "edges": []}, None),
        ('{ "b" : 1, "a":[1, 2.5] }', {"b": 1, "a": [1, 2.5]}, None),
        ('{"nodes": [', None, "diagram_invalid_json"),
        ("", None, "diagram_empty"),
        ('{"x": NaN}', None, "diagram_invalid_json"),
        ('{"x": 1e999}', None, "diagram_not_storable"),
        ('{"x": "\\ud800"}', None, "diagram_not_storable"),
        ('{"x": "\\u0000"}', None, "diagram_not_storable"),
        (None, None, None),
    ],
)
def test_diagram_strings_are_kept_exactly_and_parsed_when_jsonb_can_hold_them(text, parsed, note):
    columns, found = diagram_columns(text)
    kept = columns["workflow_diagram"]  # valid text is kept as such, for jsonb to parse
    assert columns["workflow_diagram_text"] == text
    assert (kept.value() if isinstance(kept, JsonText) else kept) == parsed
    assert (found.kind if found else None) == note


def test_a_workflow_with_dirty_values_comes_back_in_normalized_form():
    document = {
        "workflow_id": "wf_00000000000a",
        "subscription_id": "sub_0000000000aa",
        "workflow_name": "Load",
        "workFlowDiagram": '{"nodes": [',
        "version": "3",
        "parameters": {"batch": 500},
        "tags": ["etl"],
        "is_active": "true",
        "created_at": "2025-03-01 10:00:00",
        "d_flag": "false",
        "legacyNotes": "by hand",
    }
    mapped = WORKFLOWS.map_document(document, CTX)
    assert isinstance(mapped, Mapped)
    row = mapped.rows["workflows"][0]
    assert (row["version"], row["is_active"], row["is_deleted"]) == (3, True, False)
    assert row["workflow_diagram_text"] == '{"nodes": [' and row["workflow_diagram"] is None
    assert [n.kind for n in mapped.notes] == ["diagram_invalid_json"]
    rebuilt = WORKFLOWS.to_document(mapped.rows, CTX)
    assert rebuilt == WORKFLOWS.normalize(document)
    assert rebuilt["version"] == 3 and rebuilt["legacyNotes"] == "by hand"
    assert json.loads(json.dumps(row["extra"])) == {"legacyNotes": "by hand"}


async def test_unreadable_version_is_kept_as_found(pg, ctx):
    await with_tenant(pg)
    document = {
        "workflow_id": "wf_00000000000b",
        "subscription_id": "sub_0000000000aa",
        "version": "v2",
        "workFlowDiagram": "{}",
    }
    await apply(pg, ctx, [document], spec=WORKFLOWS)
    stored = await pg.fetchrow("SELECT version, extra FROM workflows")
    assert stored["version"] is None
    assert json.loads(stored["extra"]) == {"$unreadable": {"version": "v2"}}
