"""Rehearsal of an export: one process, a report per collection, secrets never shown."""

from __future__ import annotations

import pathlib

from legacy_emulator.export_load import dump_export
from legacy_emulator.generator import SeedSummary
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
