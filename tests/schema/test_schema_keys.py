"""Row keys derived from legacy ids, and the legacy-id convention across the schema."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from schema.keys import ENTITIES, link_key, row_key


def test_row_key_is_stable_across_releases():
    # Every stored primary key depends on these values: changing the namespace or the
    # derivation would orphan every migrated row.
    assert row_key("workspace", "ws_0123456789ab") == uuid.UUID(
        "385054f8-6a13-5e51-8757-7982f581bfca"
    )
    assert link_key("user_group", "grp_0123456789ab", "usr_0123456789ab") == uuid.UUID(
        "de2de12e-3f91-50f1-97f6-3d02469706f5"
    )


def test_same_legacy_id_gives_the_same_key_and_entities_do_not_collide():
    assert row_key("job", "jb_00000000000a") == row_key("job", "jb_00000000000a")
    assert row_key("job", "jb_00000000000a") != row_key("job", "jb_00000000000b")
    # Dirty data may reuse an id string across collections: keys still differ per entity.
    assert row_key("job", "x_1") != row_key("workflow", "x_1")
    assert link_key("m", "a", "b") != link_key("m", "b", "a")
    assert link_key("m", "a\x1fb", "c") != link_key("m", "a", "b\x1fc")


@pytest.mark.parametrize(
    ("entity", "legacy_id"), [("workspaces", "ws_1"), ("workspace", ""), ("workspace", None)]
)
def test_row_key_rejects_unknown_entities_and_empty_ids(entity, legacy_id):
    with pytest.raises(ValueError, match=r"entity|legacy id"):
        row_key(entity, legacy_id)


async def test_every_entity_table_has_a_uuid_key_and_a_unique_legacy_id(
    shared_migrated_database_url,
):
    conn = await asyncpg.connect(shared_migrated_database_url)
    try:
        for entity, (table, column) in ENTITIES.items():
            key_columns = await conn.fetch(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type "
                "FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary",
                table,
            )
            assert ("id", "uuid") in [(r["attname"], r["type"]) for r in key_columns], entity
            unique = await conn.fetch(
                "SELECT array_agg(a.attname::text ORDER BY a.attname) AS columns "
                "FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass "
                "AND i.indisunique AND i.indpred IS NULL GROUP BY i.indexrelid",
                table,
            )
            # Partitioned tables can only be unique together with the partition key.
            assert any(
                row["columns"] in ([column], sorted([column, "created_at"])) for row in unique
            ), f"{table}.{column} is not unique"
            nullable = await conn.fetchval(
                "SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = $1::regclass "
                "AND attname = $2",
                table,
                column,
            )
            assert nullable is False, f"{table}.{column} must be NOT NULL"
    finally:
        await conn.close()
