"""The demo's closing checks: every acknowledged write in BOTH stores with its last
acknowledged value, and verify clean for every entity the walk moved (and what they need).

Comparing the ledger is pure (:func:`ledger_differences`) over the states read from each
store (:func:`mongo_states`, :func:`postgres_states`), so the rule is testable on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from migrators.registry import default_registry
from migrators.spec import MappingContext
from migrators.verify import VerifyReport, verify_entity
from strangler.demo_traffic import Ledger
from strangler.mongo import Database

__all__ = ["ledger_differences", "mongo_states", "postgres_states", "verify_all"]

State = dict[str, dict[str, dict[str, Any]]]  # kind -> id -> fields


def _deleted(value: Any) -> bool:
    return value is True or value == "true"


def _ledger_state(ledger: Ledger) -> State:
    return {
        "connector": {
            k: {"description": v["description"], "deleted": v["deleted"],
                "test_status": v["test_status"]}
            for k, v in ledger.connectors.items()
        },
        "folder": {k: {"folder_name": v["folder_name"], "deleted": v["deleted"]}
                   for k, v in ledger.folders.items()},
        "job": {k: {"job_name": v["job_name"], "deleted": v["deleted"]}
                for k, v in ledger.jobs.items()},
        "workflow": {k: {"workflow_name": v["workflow_name"], "description": v["description"],
                         "version": v["version"], "deleted": v["deleted"]}
                     for k, v in ledger.workflows.items()},
        "user": {k: {"full_name": v["full_name"]} for k, v in ledger.users.items()},
        "members": {k: {"users": v["members"]} for k, v in ledger.memberships.items()},
        "run": {k: {"exists": True} for k in ledger.runs},
    }  # fmt: skip


def ledger_differences(ledger: Ledger, stores: Mapping[str, State]) -> list[str]:
    """One line per ledger entry whose last acknowledged state a store does not hold."""
    lost: list[str] = []
    for kind, entries in _ledger_state(ledger).items():
        for key, expected in entries.items():
            for store, state in stores.items():
                found = state.get(kind, {}).get(key)
                if found != expected:
                    lost.append(f"{kind} {key}: acknowledged {expected}, {store} has {found}")
    return lost


def _holders(ledger: Ledger, kind: str) -> list[str]:
    return [k for k, v in ledger.memberships.items() if v["kind"] == kind]


async def mongo_states(db: Database, ledger: Ledger) -> State:
    state: State = {"connector": {}, "folder": {}, "job": {}, "workflow": {}, "user": {},
                    "members": {}, "run": {}}  # fmt: skip
    async for doc in db["jobRun"].find({"job_run_id": {"$in": list(ledger.runs)}}):
        state["run"][doc["job_run_id"]] = {"exists": True}
    async for doc in db["users"].find({"UserId": {"$in": list(ledger.users)}}):
        state["user"][doc["UserId"]] = {"full_name": doc.get("full_name")}
    for kind, collection in (("group", "groups"), ("role", "roles")):
        query = {f"{kind}_id": {"$in": _holders(ledger, kind)}}
        async for doc in db[collection].find(query):
            state["members"][doc[f"{kind}_id"]] = {"users": doc.get("users")}
    async for doc in db["connectors"].find({"connector_id": {"$in": list(ledger.connectors)}}):
        state["connector"][doc["connector_id"]] = {
            "description": doc.get("description"), "deleted": _deleted(doc.get("d_flag")),
            "test_status": doc.get("test_status"),
        }  # fmt: skip
    workspaces = sorted({f["workspace_id"] for f in ledger.folders.values()})
    async for doc in db["workspace"].find({"workspace_id": {"$in": workspaces}}):
        for folder in doc.get("folders") or []:
            state["folder"][folder.get("folder_id")] = {
                "folder_name": folder.get("folder_name"),
                "deleted": _deleted(folder.get("d_flag")),
            }
            for job in folder.get("jobs") or []:
                state["job"][job.get("job_id")] = {
                    "job_name": job.get("job_name"),
                    "deleted": _deleted(job.get("d_flag")),
                }
    async for doc in db["workflow"].find({"workflow_id": {"$in": list(ledger.workflows)}}):
        state["workflow"][doc["workflow_id"]] = {
            "workflow_name": doc.get("workflow_name"), "description": doc.get("description"),
            "version": doc.get("version"), "deleted": _deleted(doc.get("d_flag")),
        }  # fmt: skip
    return state


async def postgres_states(conn: asyncpg.Connection, ledger: Ledger) -> State:
    state: State = {"connector": {}, "folder": {}, "job": {}, "workflow": {}, "user": {},
                    "members": {}, "run": {}}  # fmt: skip
    for r in await conn.fetch(
        "SELECT job_run_id FROM job_runs WHERE job_run_id = ANY($1::text[])", list(ledger.runs)
    ):
        state["run"][r["job_run_id"]] = {"exists": True}
    for r in await conn.fetch(
        "SELECT user_id, full_name FROM users WHERE user_id = ANY($1::text[])", list(ledger.users)
    ):
        state["user"][r["user_id"]] = {"full_name": r["full_name"]}
    for kind, table, links in (("group", "groups", "user_groups"), ("role", "roles", "user_roles")):
        for r in await conn.fetch(
            f"SELECT d.{kind}_id AS holder, ARRAY(SELECT l.user_id FROM {links} AS l "
            f"WHERE l.{kind}_id = d.{kind}_id ORDER BY l.position, l.user_id) AS users "
            f"FROM {table} AS d WHERE d.{kind}_id = ANY($1::text[])",
            _holders(ledger, kind),
        ):
            state["members"][r["holder"]] = {"users": list(r["users"])}
    rows = await conn.fetch(
        "SELECT connector_id, description, is_deleted, test_status FROM connectors "
        "WHERE connector_id = ANY($1::text[])",
        list(ledger.connectors),
    )
    for r in rows:
        state["connector"][r["connector_id"]] = {
            "description": r["description"], "deleted": r["is_deleted"],
            "test_status": r["test_status"],
        }  # fmt: skip
    for r in await conn.fetch(
        "SELECT folder_id, folder_name, is_deleted FROM folders WHERE folder_id = ANY($1::text[])",
        list(ledger.folders),
    ):
        state["folder"][r["folder_id"]] = {
            "folder_name": r["folder_name"],
            "deleted": r["is_deleted"],
        }
    for r in await conn.fetch(
        "SELECT job_id, job_name, is_deleted FROM jobs WHERE job_id = ANY($1::text[])",
        list(ledger.jobs),
    ):
        state["job"][r["job_id"]] = {"job_name": r["job_name"], "deleted": r["is_deleted"]}
    for r in await conn.fetch(
        "SELECT workflow_id, workflow_name, description, version, is_deleted FROM workflows "
        "WHERE workflow_id = ANY($1::text[])",
        list(ledger.workflows),
    ):
        state["workflow"][r["workflow_id"]] = {
            "workflow_name": r["workflow_name"], "description": r["description"],
            "version": r["version"], "deleted": r["is_deleted"],
        }  # fmt: skip
    return state


async def verify_all(
    db: Database, conn: asyncpg.Connection, context: MappingContext
) -> list[VerifyReport]:
    """Verify every registered entity (connectors, the tree, and the tenants and users they
    reference), nothing skipped as too young: the syncs have drained by now."""
    return [await verify_entity(db, conn, spec, context) for spec in default_registry()]
