"""Rehearsal of an export: one process, a report per collection, secrets never shown."""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys

import asyncpg

from legacy_emulator.export_load import dump_export
from legacy_emulator.generator import SeedSummary, seed_store
from migrators.rehearse import rehearse
from strangler.config import ConnectorKeys
from strangler.mongo import Database


async def test_rehearsal_of_a_dirty_export_reports_every_collection(
    legacy_db: Database,
    dirty_seed: SeedSummary,
    database_url: str,
    keys: ConnectorKeys,
    tmp_path: pathlib.Path,
) -> None:
    await legacy_db["connectors"].insert_one(
        {"connector_name": "no id", "connection_detail": {"password": "PLANTED-pw-9"}}
    )
    await dump_export(legacy_db, tmp_path, ["Accounts", "users", "connectors"])
    progress: list[str] = []
    report = await rehearse(tmp_path, database_url, keys, batch_size=10, progress=progress.append)
    text = "\n".join(report.lines() + progress)
    assert report.clean, text
    for header in ("Accounts -> subscriptions", "users -> users", "connectors -> connectors"):
        assert header in text
    connectors = next(s for s in report.backfills if s.entity == "connectors")
    total = await legacy_db["connectors"].count_documents({})
    assert connectors.result.read == total
    assert connectors.result.written == total - 1
    assert "missing_id: 1" in text and "e.g. _id:" in text and "********" in text
    assert "reported dangling_created_by" in text and "reported renamed_duplicate" in text
    passwords = [d["connection_detail"]["password"] async for d in legacy_db["connectors"].find({})]
    assert not any(p in text for p in passwords)


async def _older_backends_export(legacy_db: Database, directory: pathlib.Path) -> dict[str, str]:
    """The dirty seed as an older backend left it: version snapshots holding only what
    changed (no ``subscription_id``), ``tags`` stored as one string, and one version whose
    workflow is nowhere. Returns workflow id -> tenant of the string-tag workflows."""
    async for version in legacy_db["workflow_versions"].find({}):
        changed = {"workflow_name": version["workflow_snapshot"].get("workflow_name")}
        await legacy_db["workflow_versions"].update_one(
            {"_id": version["_id"]}, {"$set": {"workflow_snapshot": changed}}
        )
    tagged: dict[str, str] = {}
    async for workflow in legacy_db["workflow"].find({}).limit(25):
        await legacy_db["workflow"].update_one(
            {"_id": workflow["_id"]}, {"$set": {"tags": "finance, pii"}}
        )
        tagged[workflow["workflow_id"]] = workflow["subscription_id"]
    await legacy_db["workflow_versions"].insert_one(
        {"workflow_id": "wf_000000000000", "version_number": 2, "workflow_snapshot": {}}
    )
    await dump_export(legacy_db, directory)
    return tagged


async def test_an_older_backends_export_rehearses_clean_from_the_command_line(
    legacy_db: Database, empty_database_url: str, tmp_path: pathlib.Path
) -> None:
    await seed_store(legacy_db, scale="small", dirty=0.2, seed=11)
    export = tmp_path / "export"
    tagged = await _older_backends_export(legacy_db, export)
    versions = await legacy_db["workflow_versions"].count_documents({})
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "strangler.cli", "rehearse", str(export),
         "--database-url", empty_database_url],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = done.stdout.splitlines()
    heading = "every exported document (exported = migrated + quarantined):"
    accounts = report[report.index(heading) :]
    # versions: every one migrated but the one whose workflow is nowhere
    assert any(
        line.split() == ["workflow_versions", "exported", f"{versions:,}", "=", "migrated",
                         f"{versions - 1:,}", "+", "quarantined", "1"]
        for line in accounts
    ), accounts  # fmt: skip
    assert "    unknown_workflow: 1" in report
    for collection in ("groups", "roles", "jobRun", "userActivity"):
        line = next(line for line in accounts if line.split()[:1] == [collection])
        counted = await legacy_db[collection].count_documents({})
        assert line.split()[1:5] == ["exported", f"{counted:,}", "=", "migrated"], line
    assert accounts[-1].split()[0] == "total" and accounts[-1].endswith("not yet mapped 0")
    conn = await asyncpg.connect(empty_database_url)
    try:
        # each version took its workflow's tenant; string tags kept as the string
        mismatched = await conn.fetchval(
            """SELECT count(*) FROM workflow_versions v JOIN workflows w USING (workflow_id)
               WHERE v.subscription_id <> w.subscription_id"""
        )
        tags = dict(await conn.fetch("SELECT workflow_id, tags #>> '{}' FROM workflows"))
    finally:
        await conn.close()
    assert mismatched == 0
    assert all(tags[workflow_id] == "finance, pii" for workflow_id in tagged)


async def test_a_version_takes_its_tenant_from_its_quarantined_workflows_document(
    legacy_db: Database, database_url: str, keys: ConnectorKeys, tmp_path: pathlib.Path
) -> None:
    await legacy_db["Accounts"].insert_one({"subscription_id": "sub_00000000000a"})
    await legacy_db["workflow"].insert_one(  # a NUL PostgreSQL cannot store: quarantined
        {"workflow_id": "wf_00000000000a", "subscription_id": "sub_00000000000a",
         "workflow_name": "bad\x00name"}
    )  # fmt: skip
    await legacy_db["workflow_versions"].insert_one(
        {"workflow_id": "wf_00000000000a", "version_number": 1, "workflow_snapshot": {"a": 1}}
    )
    await dump_export(legacy_db, tmp_path, ["Accounts", "workflow", "workflow_versions"])
    report = await rehearse(tmp_path, database_url, keys, progress=lambda _line: None)
    by_collection = {a.collection: a for a in report.accounts()}
    assert by_collection["workflow"].quarantined == 1
    assert by_collection["workflow_versions"].migrated == 1, "\n".join(report.lines())
    conn = await asyncpg.connect(database_url)
    try:
        tenant = await conn.fetchval("SELECT subscription_id FROM workflow_versions")
    finally:
        await conn.close()
    assert tenant == "sub_00000000000a"
