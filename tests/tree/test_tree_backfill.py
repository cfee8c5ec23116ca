"""Backfill and verify of the workspace tree on seeded stores, and the round trip through
PostgreSQL: every legacy document rebuilt from its rows as legacy holds it."""

from __future__ import annotations

from collections import Counter

from tree_support import backfill_tree

from legacy_emulator.generator import seed_store
from migrators.backfill import legacy_id_of
from migrators.registry import default_registry
from migrators.tree_apply import load_rows
from migrators.verify import verify_entity
from schema.tenancy import enter_sync
from strangler.contract import is_deleted

TREE = ("workflows", "workspaces", "workflow_versions", "workflow_backups")


async def _differing_summaries(legacy_db) -> int:
    workflows = {d["workflow_id"]: d for d in await legacy_db["workflow"].find({}).to_list(None)}
    differing = 0
    for workspace in await legacy_db["workspace"].find({}).to_list(None):
        for folder in workspace.get("folders") or []:
            for job in folder.get("jobs") or []:
                for entry in job.get("workflows") or []:
                    document = workflows.get(entry.get("workflow_id"))
                    if document is not None and (
                        entry.get("workFlowDiagram") != document.get("workFlowDiagram")
                        or entry.get("workflow_name") != document.get("workflow_name")
                        or is_deleted(entry.get("d_flag")) != is_deleted(document.get("d_flag"))
                    ):
                        differing += 1
    return differing


async def _backfill_all(legacy_db, pg, ctx):
    return await backfill_tree(legacy_db, pg, ctx)


async def test_clean_seed_round_trips_every_document_exactly(legacy_db, pg, ctx):
    await seed_store(legacy_db, scale="small", dirty=0.0, seed=3)
    summaries = await _backfill_all(legacy_db, pg, ctx)
    registry = default_registry()
    for name in TREE:
        spec = registry.get(name)
        assert not summaries[name].result.quarantined, name
        async with pg.transaction():
            await enter_sync(pg)
            rows = await load_rows(pg, spec)
        documents = await legacy_db[spec.collection].find({}).to_list(None)
        assert len(rows) == len(documents) > 0
        for document in documents:
            rebuilt = spec.to_document(rows[legacy_id_of(spec, document)], ctx)
            assert rebuilt == {k: v for k, v in document.items() if k != "_id"}, name
        report = await verify_entity(legacy_db, pg, spec, ctx)
        assert report.clean, report.lines()


async def test_a_second_backfill_changes_no_row(legacy_db, pg, ctx):
    await seed_store(legacy_db, scale="small", dirty=0.2, seed=5)
    await _backfill_all(legacy_db, pg, ctx)
    again = await _backfill_all(legacy_db, pg, ctx)
    assert {name: again[name].result.written for name in TREE} == dict.fromkeys(TREE, 0)


async def test_dirty_seed_every_document_migrated_or_quarantined_and_disagreements_reported(
    legacy_db, pg, ctx
):
    seeded = await seed_store(legacy_db, scale="small", dirty=0.2, seed=7)
    summaries = await _backfill_all(legacy_db, pg, ctx)
    registry = default_registry()
    for name in TREE:
        spec = registry.get(name)
        total = await legacy_db[spec.collection].count_documents({})
        async with pg.transaction():
            await enter_sync(pg)
            migrated = len(await load_rows(pg, spec))
        quarantined = sum(summaries[name].result.quarantined.values())
        assert migrated + quarantined == total, name
        report = await verify_entity(legacy_db, pg, spec, ctx)
        assert report.clean, report.lines()
    notes = Counter(note.kind for _, note in summaries["workspaces"].result.notes)
    notes.update(note.kind for _, note in summaries["workflows"].result.notes)
    dirt = seeded.dirt
    assert notes["tree_entry_without_workflow"] == dirt["tree_entry_without_workflow"]
    assert notes["workflow_not_in_tree"] == dirt["workflow_missing_from_tree"]
    assert notes["dangling_dependency"] >= dirt["dangling_dependency"]
    assert notes["dangling_connector"] == dirt["dangling_connector"]
    # every summary that differs from its document, counted straight from the legacy data
    assert notes["stale_summary"] == await _differing_summaries(legacy_db) > 0
    assert notes["diagram_invalid_json"] == dirt["diagram_invalid_json"]
    assert notes["diagram_empty"] == dirt["diagram_empty"]


async def test_verify_finds_a_changed_job_row_and_repair_puts_the_tree_back(legacy_db, pg, ctx):
    await seed_store(legacy_db, scale="small", dirty=0.0, seed=3)
    await _backfill_all(legacy_db, pg, ctx)
    spec = default_registry().get("workspaces")
    job = await pg.fetchrow("SELECT job_id, workspace_id FROM jobs ORDER BY job_id LIMIT 1")
    await pg.execute("UPDATE jobs SET job_name = 'tampered' WHERE job_id = $1", job["job_id"])
    await pg.execute(
        "DELETE FROM workflow_tree_entries WHERE id = (SELECT id FROM workflow_tree_entries "
        "WHERE workspace_id <> $1 ORDER BY id LIMIT 1)",
        job["workspace_id"],
    )
    report = await verify_entity(legacy_db, pg, spec, ctx, repair=True)
    assert [d.kind for d in report.differences] == ["fields differ", "fields differ"]
    assert any("job_name" in detail for d in report.differences for detail in d.details)
    assert report.repaired is not None and report.repaired.written == 2
    assert (await verify_entity(legacy_db, pg, spec, ctx)).clean
