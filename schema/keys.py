"""Primary keys of the target model, derived from legacy ids.

A row's key is a UUIDv5 of its entity name and its legacy id under one fixed
project namespace. Backfill, the forward sync and the new side's handlers all
compute the same key for the same legacy id without asking the database, so
they may write in any order, repeat themselves, and still converge on one row.
Rows the new side creates get their key the same way, from the legacy-format
id they mint (``strangler.contract.new_id``).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
import uuid
from typing import NamedTuple

__all__ = ["ENTITIES", "ROW_KEY_NAMESPACE", "LegacyKey", "link_key", "row_key"]

# Never change this value: every stored primary key is derived from it.
ROW_KEY_NAMESPACE = uuid.UUID("5f0c1e6a-8a0b-5d52-9f3e-2c7d1b7a4e10")


class LegacyKey(NamedTuple):
    table: str
    column: str  # holds the legacy id, named after the legacy field


# Entity name -> where its legacy id lives. The entity name is what row_key() hashes, so it
# must never change either.
ENTITIES: dict[str, LegacyKey] = {
    "subscription": LegacyKey("subscriptions", "subscription_id"),
    "user": LegacyKey("users", "user_id"),
    "group": LegacyKey("groups", "group_id"),
    "role": LegacyKey("roles", "role_id"),
    "connector": LegacyKey("connectors", "connector_id"),
    "workspace": LegacyKey("workspaces", "workspace_id"),
    "folder": LegacyKey("folders", "folder_id"),
    "job": LegacyKey("jobs", "job_id"),
    "workflow": LegacyKey("workflows", "workflow_id"),
    "workflow_version": LegacyKey("workflow_versions", "version_id"),
    "job_run": LegacyKey("job_runs", "job_run_id"),
    "user_activity": LegacyKey("user_activity", "activity_id"),
}


def row_key(entity: str, legacy_id: str) -> uuid.UUID:
    """The primary key of ``entity``'s row whose legacy id is ``legacy_id``."""
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {sorted(ENTITIES)}")
    if not isinstance(legacy_id, str) or not legacy_id:
        raise ValueError(f"a {entity} legacy id must be a non-empty string, got {legacy_id!r}")
    return uuid.uuid5(ROW_KEY_NAMESPACE, f"{entity}:{legacy_id}")


def link_key(entity: str, *legacy_ids: str) -> uuid.UUID:
    """A key for a row identified by several legacy ids (e.g. a membership).

    Link tables use their pair of legacy ids as primary key; this exists for
    code that needs one UUID per such row (outbox payloads, dead letters).
    """
    if len(legacy_ids) < 2 or not all(isinstance(i, str) and i for i in legacy_ids):
        raise ValueError(f"a {entity} link key needs two or more non-empty legacy ids")
    # JSON keeps the parts apart whatever characters dirty ids contain.
    return uuid.uuid5(
        ROW_KEY_NAMESPACE, f"{entity}:" + json.dumps(legacy_ids, separators=(",", ":"))
    )
