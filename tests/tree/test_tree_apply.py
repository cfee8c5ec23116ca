"""Applying changed workspace documents: only the rows that changed are written, vanished
entries go, stale documents change nothing, and a document of several MB applies."""

from __future__ import annotations

import bson
from tree_support import (
    SUBSCRIPTION,
    WORKFLOWS,
    WORKSPACES,
    apply,
    edited,
    row_versions,
    rows_of,
    with_tenant,
    workspace_doc,
)

from migrators.backfill import read_version


def _changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


async def test_an_edit_of_one_job_rewrites_that_job_row_and_the_workspace_row_only(pg, ctx):
    await with_tenant(pg)
    document = workspace_doc(folders=3, jobs=3, workflows=3)
    first = await apply(pg, ctx, [document])
    assert first.written == 1 + 3 + 9 + 27 + 27  # workspace, folders, jobs, deps, entries
    before = await row_versions(pg, document["workspace_id"])
    job = document["folders"][1]["jobs"][2]

    def rename(doc):
        doc["folders"][1]["jobs"][2]["job_name"] = "Renamed job"

    result = await apply(pg, ctx, [edited(document, rename)])
    after = await row_versions(pg, document["workspace_id"])
    assert _changed(before, after) == {
        f"jobs:{job['job_id']}",
        f"workspaces:{document['workspace_id']}",
    }
    assert result.written == 2
    rebuilt = WORKSPACES.to_document(await rows_of(pg, document["workspace_id"]), ctx)
    assert rebuilt["folders"][1]["jobs"][2]["job_name"] == "Renamed job"


async def test_entries_that_vanish_from_the_document_are_removed_and_the_rest_left_alone(pg, ctx):
    await with_tenant(pg)
    document = workspace_doc(folders=2, jobs=2, workflows=2)
    await apply(pg, ctx, [document])
    before = await row_versions(pg, document["workspace_id"])
    gone = document["folders"][0]["jobs"][1]

    def drop_job(doc):
        del doc["folders"][0]["jobs"][1]

    changed = edited(document, drop_job)
    await apply(pg, ctx, [changed])
    after = await row_versions(pg, document["workspace_id"])
    removed = {k for k in before if k not in after}
    assert f"jobs:{gone['job_id']}" in removed
    assert {k.split(":")[0] for k in removed} == {"jobs", "deps", "entries"}
    assert len(removed) == 1 + 2 + 2
    # nothing else was rewritten but the workspace row
    assert _changed({k: v for k, v in before.items() if k in after}, after) == {
        f"workspaces:{document['workspace_id']}"
    }
    rows = await rows_of(pg, document["workspace_id"])
    assert WORKSPACES.to_document(rows, ctx) == changed


async def test_a_stale_or_repeated_document_changes_no_row(pg, ctx):
    await with_tenant(pg)
    document = workspace_doc()
    version = read_version()
    await apply(pg, ctx, [document], version=version)

    def rename(doc):
        doc["folders"][0]["folder_name"] = "Renamed"

    newer = edited(document, rename)
    await apply(pg, ctx, [newer], version=version + 10)
    before = await row_versions(pg, document["workspace_id"])
    stale = await apply(pg, ctx, [document], version=version + 5)
    repeated = await apply(pg, ctx, [newer], version=version + 10)
    assert (stale.written, repeated.written) == (0, 0)
    assert await row_versions(pg, document["workspace_id"]) == before
    assert WORKSPACES.to_document(await rows_of(pg, document["workspace_id"]), ctx) == newer


async def test_a_workspace_of_several_megabytes_applies_and_an_edit_in_it_stays_small(pg, ctx):
    await with_tenant(pg)
    document = workspace_doc(n=9, folders=4, jobs=8, workflows=10, filler=3_700)
    size = len(bson.encode(document))
    assert 4_500_000 < size < 16_000_000
    await apply(pg, ctx, [document])
    rows = await rows_of(pg, document["workspace_id"])
    assert len(rows["workflow_tree_entries"]) == 320
    assert WORKSPACES.to_document(rows, ctx) == document
    before = await row_versions(pg, document["workspace_id"])

    def describe(doc):
        doc["folders"][3]["jobs"][7]["description"] = "edited in a big tree"

    result = await apply(pg, ctx, [edited(document, describe)])
    assert result.written == 2
    assert len(_changed(before, await row_versions(pg, document["workspace_id"]))) == 2


async def test_a_workspace_gone_from_mongodb_takes_its_whole_tree_along(pg, ctx):
    await with_tenant(pg)
    kept, gone = workspace_doc(n=1), workspace_doc(n=2)
    await apply(pg, ctx, [kept, gone])
    result = await apply(pg, ctx, [(gone["workspace_id"], None)])
    assert result.deleted == 1
    assert await rows_of(pg, gone["workspace_id"]) == {}
    left = await pg.fetchval(
        "SELECT count(*) FROM jobs WHERE workspace_id = $1", gone["workspace_id"]
    )
    assert left == 0
    assert await pg.fetchval("SELECT count(*) FROM workflow_tree_entries") == 8
    assert (
        await pg.fetchval("SELECT count(*) FROM folders WHERE subscription_id = $1", SUBSCRIPTION)
        == 2
    )


async def test_names_swapped_or_taken_over_within_one_document_apply(pg, ctx):
    await with_tenant(pg)
    document = workspace_doc(folders=3, jobs=2)
    await apply(pg, ctx, [document])

    def swap_and_replace(doc):
        first, second, third = doc["folders"]
        first["folder_name"], second["folder_name"] = second["folder_name"], first["folder_name"]
        jobs = first["jobs"]
        jobs[0]["job_name"], jobs[1]["job_name"] = jobs[1]["job_name"], jobs[0]["job_name"]
        # the third folder goes and a new one takes its name
        doc["folders"][2] = {**third, "folder_id": "fd_new000000001", "jobs": []}

    changed = edited(document, swap_and_replace)
    await apply(pg, ctx, [changed])
    assert WORKSPACES.to_document(await rows_of(pg, document["workspace_id"]), ctx) == changed


async def test_every_disagreement_between_tree_and_workflow_documents_is_reported(pg, ctx):
    await with_tenant(pg)
    document = workspace_doc(n=5, folders=1, jobs=1, workflows=4)
    job = document["folders"][0]["jobs"][0]
    job["workflow_dependency"].append("wf_gone00000000")
    entries = job["workflows"]

    def workflow(entry, **changes):
        return {"workflow_id": entry["workflow_id"], "subscription_id": SUBSCRIPTION,
                "workspace_id": document["workspace_id"],
                "folder_id": document["folders"][0]["folder_id"], "job_id": job["job_id"],
                "workflow_name": entry["workflow_name"], "d_flag": False,
                "workFlowDiagram": entry["workFlowDiagram"], **changes}  # fmt: skip

    documents = [
        workflow(entries[0]),  # agrees with its entry
        workflow(entries[1], workflow_name="Renamed since"),
        workflow(entries[2], job_id="jb_elsewhere0000"),
        # entries[3] has no workflow document
        workflow({**entries[0], "workflow_id": "wf_unlisted00000"}, workflow_name="Unlisted"),
    ]
    await apply(pg, ctx, documents, spec=WORKFLOWS)
    result = await apply(pg, ctx, [document])
    tree_kinds = {"dangling_dependency", "placement_differs", "stale_summary",
                  "tree_entry_without_workflow", "workflow_not_in_tree"}  # fmt: skip
    reported = {
        (note.kind, next(w for w in ids if w in note.detail))
        for ids in [[e["workflow_id"] for e in entries] + ["wf_gone00000000", "wf_unlisted00000"]]
        for _, note in result.notes
        if note.kind in tree_kinds
    }
    assert reported == {
        ("dangling_dependency", "wf_gone00000000"),
        ("dangling_dependency", entries[3]["workflow_id"]),  # the job runs it, too
        ("stale_summary", entries[1]["workflow_id"]),
        ("placement_differs", entries[2]["workflow_id"]),
        ("tree_entry_without_workflow", entries[3]["workflow_id"]),
        ("workflow_not_in_tree", "wf_unlisted00000"),
    }
    assert sum(note.kind in tree_kinds for _, note in result.notes) == 6
    assert {workspace for workspace, _ in result.notes} == {document["workspace_id"]}


async def test_a_folder_listed_by_two_workspace_documents_stays_with_its_first(pg, ctx):
    await with_tenant(pg)
    owner = workspace_doc(2, folders=1, jobs=1, workflows=0)
    await apply(pg, ctx, [owner])
    folder = owner["folders"][0]
    claimant = workspace_doc(1, folders=1, jobs=1, workflows=0)
    claimant["folders"].append({**folder, "jobs": []})  # dirt: the owner's folder id again

    claimed = await apply(pg, ctx, [claimant])

    assert ("ws_000000000001", "tree_id_elsewhere") in {(i, n.kind) for i, n in claimed.notes}
    owned = await rows_of(pg, owner["workspace_id"])
    assert [r["folder_id"] for r in owned["folders"]] == [folder["folder_id"]]
    assert [r["job_id"] for r in owned["jobs"]] == [folder["jobs"][0]["job_id"]]
    kept = await rows_of(pg, claimant["workspace_id"])
    assert folder["folder_id"] not in {r["folder_id"] for r in kept["folders"]}
    # the claimant lets it go, then the owner does: each apply goes through (it failed the
    # whole batch on a foreign key when the folder had moved to the claimant)
    claimant["folders"].pop()
    assert not (await apply(pg, ctx, [claimant])).quarantined
    owner["folders"] = []
    await apply(pg, ctx, [owner])
    assert (await rows_of(pg, owner["workspace_id"]))["folders"] == []


async def test_two_documents_of_one_batch_listing_one_folder_apply(pg, ctx):
    await with_tenant(pg)
    owner = workspace_doc(1, folders=1, jobs=1, workflows=0)
    claimant = workspace_doc(2, folders=0)
    claimant["folders"] = [{**owner["folders"][0], "jobs": []}]

    result = await apply(pg, ctx, [owner, claimant])  # one batch, one transaction

    assert ("ws_000000000002", "tree_id_elsewhere") in {(i, n.kind) for i, n in result.notes}
    owned = await rows_of(pg, owner["workspace_id"])
    assert [r["folder_id"] for r in owned["folders"]] == [owner["folders"][0]["folder_id"]]
    assert (await rows_of(pg, claimant["workspace_id"]))["folders"] == []
