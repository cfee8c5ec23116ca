"""The batch writer against real PostgreSQL: version guard, tombstones, positions,
quarantine, duplicate names resolved the same whatever the order."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from migrators.registry import default_registry
from migrators.spec import MappingContext
from migrators.writer import (
    BatchRejected,
    FeedPosition,
    SourceItem,
    quarantined_document,
    write_batch,
)

REGISTRY = default_registry()
ACCOUNTS, USERS, CONNECTORS = (REGISTRY.get(n) for n in ("subscriptions", "users", "connectors"))
SUB = "sub_0000000000a1"


def account(**fields: Any) -> dict[str, Any]:
    return {"subscription_id": SUB, "company_name": "Acme", "plan_type": "team", **fields}


def connector(cid: str, name: str, created: str, **fields: Any) -> dict[str, Any]:
    return {
        "connector_id": cid, "subscription_id": SUB, "connector_name": name,
        "connection_detail": {"host": "h", "password": f"pw-{cid}"}, "created_at": created,
        "d_flag": False, **fields,
    }  # fmt: skip


async def test_stale_and_repeated_applies_never_move_a_row_backwards(
    clean_pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    first = await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 10)], ctx=ctx)
    assert first.written == 1
    newer = await write_batch(
        clean_pg, ACCOUNTS, [SourceItem(SUB, account(company_name="New"), 20)], ctx=ctx
    )
    assert newer.written == 1
    stale = await write_batch(
        clean_pg, ACCOUNTS, [SourceItem(SUB, account(company_name="Old"), 15)], ctx=ctx
    )
    repeated = await write_batch(
        clean_pg, ACCOUNTS, [SourceItem(SUB, account(company_name="New"), 20)], ctx=ctx
    )
    assert (stale.written, repeated.written) == (0, 0)
    row = await clean_pg.fetchrow("SELECT company_name, source_version FROM subscriptions")
    assert (row["company_name"], row["source_version"]) == ("New", 20)


async def test_identical_content_at_a_higher_version_is_not_rewritten(
    clean_pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 10)], ctx=ctx)
    again = await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 99)], ctx=ctx)
    assert (again.written, again.unchanged) == (0, 1)
    assert await clean_pg.fetchval("SELECT source_version FROM subscriptions") == 10


async def test_deletion_leaves_a_tombstone_that_stale_events_cannot_cross(
    clean_pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 10)], ctx=ctx)
    deleted = await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, None, 30)], ctx=ctx)
    assert deleted.deleted == 1
    await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 20)], ctx=ctx)
    assert await clean_pg.fetchval("SELECT count(*) FROM subscriptions") == 0
    await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 40)], ctx=ctx)  # re-created
    assert await clean_pg.fetchval("SELECT count(*) FROM subscriptions") == 1


async def test_feed_position_commits_with_the_rows_or_not_at_all(
    clean_pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    position = FeedPosition("subscriptions", "test", {"token": 1})
    await write_batch(
        clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 10)], ctx=ctx, position=position
    )
    stored = await clean_pg.fetchval("SELECT position FROM migration_feed_positions")
    assert json.loads(stored) == {"token": 1}
    # a batch PostgreSQL refuses (deleting a tenant that still has users) rolls back its
    # rows AND its position together
    user = {"UserId": "usr_0000000000a1", "subscription_id": SUB, "email": "a@x"}
    await write_batch(clean_pg, USERS, [SourceItem("usr_0000000000a1", user, 10)], ctx=ctx)
    with pytest.raises(BatchRejected):
        await write_batch(
            clean_pg, ACCOUNTS, [SourceItem(SUB, None, 50)], ctx=ctx,
            position=FeedPosition("subscriptions", "test", {"token": 2}),
        )  # fmt: skip
    assert json.loads(await clean_pg.fetchval("SELECT position FROM migration_feed_positions")) == {
        "token": 1
    }
    assert await clean_pg.fetchval("SELECT count(*) FROM subscriptions") == 1


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
async def test_duplicate_names_resolve_the_same_in_any_order(
    clean_pg: asyncpg.Connection, ctx: MappingContext, order: tuple[int, ...]
) -> None:
    await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 1)], ctx=ctx)
    documents = [
        connector("cn_00000000000b", "Lake", "2023-01-02 00:00:00"),
        connector("cn_00000000000a", "Lake", "2023-01-01 00:00:00"),  # oldest keeps "Lake"
        connector("cn_00000000000c", "Lake", "2023-01-03 00:00:00"),
    ]
    notes = []
    for index in order:  # one batch each: the clash is with stored rows too
        doc = documents[index]
        result = await write_batch(
            clean_pg, CONNECTORS, [SourceItem(doc["connector_id"], doc, 5)], ctx=ctx
        )
        notes += [n.kind for _, n in result.notes]
    rows = await clean_pg.fetch("SELECT connector_id, connector_name FROM connectors ORDER BY 1")
    assert [r["connector_name"] for r in rows] == [
        "Lake", "Lake [cn_00000000000b]", "Lake [cn_00000000000c]",
    ]  # fmt: skip
    assert notes.count("renamed_duplicate") == 2
    for row in await clean_pg.fetch("SELECT * FROM connectors"):
        assert CONNECTORS.to_document
        legacy = CONNECTORS.to_document({"connectors": [dict(row)]}, ctx)
        assert legacy["connector_name"] == "Lake"  # the name as legacy has it


async def test_unknown_tenant_is_quarantined_then_resolved_when_it_arrives(
    clean_pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    doc = connector("cn_00000000000d", "Orphan", "2023-01-01 00:00:00")
    early = await write_batch(
        clean_pg, CONNECTORS, [SourceItem("cn_00000000000d", doc, 5)], ctx=ctx
    )
    assert early.quarantined == {"unknown_subscription": 1}
    stored = await clean_pg.fetchval("SELECT document::text FROM migration_quarantine")
    assert "pw-cn_00000000000d" not in stored and "$sealed" in stored
    await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 1)], ctx=ctx)
    late = await write_batch(clean_pg, CONNECTORS, [SourceItem("cn_00000000000d", doc, 6)], ctx=ctx)
    assert late.written == 1
    assert (
        await clean_pg.fetchval(
            "SELECT resolution FROM migration_quarantine WHERE legacy_id = 'cn_00000000000d'"
        )
        == "applied"
    )


async def test_duplicate_emails_differing_in_case_keep_the_oldest_user(
    clean_pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 1)], ctx=ctx)
    older = {"UserId": "usr_0000000000b1", "subscription_id": SUB, "email": "Ann@X.io",
             "created_at": "2022-01-01 00:00:00"}  # fmt: skip
    newer = {"UserId": "usr_0000000000b2", "subscription_id": SUB, "email": "ann@x.io",
             "created_at": "2023-01-01 00:00:00"}  # fmt: skip
    items = [SourceItem(d["UserId"], d, 3) for d in (newer, older)]
    result = await write_batch(clean_pg, USERS, items, ctx=ctx)
    assert [(i, n.kind) for i, n in result.notes] == [("usr_0000000000b2", "renamed_duplicate")]
    emails = dict(await clean_pg.fetch("SELECT user_id, email FROM users"))
    assert emails == {
        "usr_0000000000b1": "Ann@X.io",
        "usr_0000000000b2": "ann@x.io [usr_0000000000b2]",
    }


async def test_a_document_holding_a_nul_is_quarantined_whole_not_a_failed_batch(
    clean_pg: asyncpg.Connection, ctx: MappingContext
) -> None:
    """PostgreSQL's text and jsonb cannot hold NUL; the quarantine keeps the original exactly."""
    await write_batch(clean_pg, ACCOUNTS, [SourceItem(SUB, account(), 10)], ctx=ctx)
    workflows = REGISTRY.get("workflows")
    document = {"workflow_id": "wf_0000000000b1", "subscription_id": SUB,
                "workflow_name": "nul\x00here", "notes": "a \\u0000 that is text"}  # fmt: skip
    result = await write_batch(
        clean_pg, workflows, [SourceItem("wf_0000000000b1", document, 10)], ctx=ctx
    )
    assert result.quarantined == {"nul_character": 1}
    stored = await clean_pg.fetchval(
        "SELECT document FROM migration_quarantine WHERE legacy_id = 'wf_0000000000b1'"
    )
    assert quarantined_document(stored) == document
