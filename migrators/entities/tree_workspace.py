"""A ``workspace`` document -> its tree's rows, and the rows -> the document.

One document becomes, table by table (parents first):

* ``workspaces``: the workspace's own fields, plus ``tree_digest`` (a digest of every
  row below, so that a change deep in the tree shows on the workspace row);
* ``folders`` and ``jobs``: one row per node, ``tree_position`` = index in its array;
* ``workflow_dependencies``: a job's ``workflow_dependency`` list, one row per id, in
  order. The ids are kept as data (no foreign key to workflows): a dangling one is kept
  and reported when the tree is applied;
* ``workflow_tree_entries``: a job's ``workflows`` summaries, as found (docs/tree.md).

Shapes legacy data may have and how they come back exactly:

* a ``folders``/``jobs``/``workflows``/``workflow_dependency`` that is missing, null or
  not a list: kept as found under the parent's ``extra["$unreadable"]``;
* a ``workflow_dependency`` list with repeated or non-text ids: rows for its distinct
  text ids, and the list as found kept the same way (reported);
* duplicate live folder names in a workspace, job names in a folder: the first created
  keeps the name, the others are stored renamed and reported (as the writer does for
  names unique across documents), the rebuilt document gives the names as found.

Quarantined (never dropped, the writer keeps the original): no workspace or
subscription id (``missing_id``, ``missing_subscription``); a node with no text id
(``missing_tree_id``); an id twice in one tree (``duplicate_tree_id``); an array entry
that is not an object (``malformed_tree``); a NUL character (``nul_character``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from migrators.entities.common import (
    UNREADABLE,
    from_json,
    json_value,
    normalize_fields,
    read_fields,
    to_json,
    write_fields,
)
from migrators.entities.tree_fields import (
    FOLDER_FIELDS,
    JOB_FIELDS,
    SUMMARY_FIELDS,
    WORKSPACE_FIELDS,
    contains_nul,
    rename_duplicates,
    unreadable,
)
from migrators.spec import Document, Mapped, MappingContext, Note, Quarantined, Row
from schema.keys import link_key, row_key
from strangler.jsonfast import digest_json

__all__ = [
    "TREE_TABLES",
    "entry_key",
    "map_workspace",
    "normalize_workspace",
    "tree_digest",
    "workspace_document",
]

TREE_TABLES = ("workspaces", "folders", "jobs", "workflow_dependencies", "workflow_tree_entries")
DEPENDENCY = "workflow_dependency"


class _Refused(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def entry_key(job_id: str, position: int) -> Any:
    return link_key("workflow_tree_entry", job_id, str(position))


def _children(node: Mapping[str, Any], key: str, extra: dict[str, Any]) -> list[Document]:
    """The node's child objects; a child array that is no list is kept as found instead."""
    items = node.get(key)
    if not isinstance(items, list):
        unreadable(extra, key, items)
        return []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise _Refused("malformed_tree", f"{key}[{index}] is {type(item).__name__}")
    return items


def _node_id(node: Mapping[str, Any], field: str, seen: set[str]) -> str:
    value = node.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _Refused("missing_tree_id", f"a node has {field} {value!r}")
    if value in seen:
        raise _Refused("duplicate_tree_id", f"{field} {value!r} is in the tree twice")
    seen.add(value)
    return value


def _dependencies(
    job: Mapping[str, Any], job_id: str, subscription_id: str, extra: dict[str, Any]
) -> tuple[list[Row], list[Note]]:
    listed = job.get(DEPENDENCY)
    if not isinstance(listed, list):
        unreadable(extra, DEPENDENCY, listed)
        note = Note("unreadable_value", f"{DEPENDENCY} kept as found: {listed!r:.60}")
        return [], [] if listed is None else [note]
    rows: list[Row] = []
    distinct: set[str] = set()
    for position, workflow_id in enumerate(listed):
        if isinstance(workflow_id, str) and workflow_id and workflow_id not in distinct:
            distinct.add(workflow_id)
            rows.append({"job_id": job_id, "workflow_id": workflow_id,
                         "subscription_id": subscription_id, "position": position})  # fmt: skip
    if len(rows) == len(listed):
        return rows, []
    unreadable(extra, DEPENDENCY, listed)
    detail = f"{DEPENDENCY} of {job_id} repeats ids or holds non-text ones; kept as found"
    return rows, [Note("unreadable_value", detail)]


def tree_digest(rows: Mapping[str, Sequence[Row]]) -> str:
    """Digest of the rows below the workspace row, in mapping order."""
    below = {table: rows.get(table, ()) for table in TREE_TABLES[1:]}
    return hashlib.blake2b(digest_json(below), digest_size=16).hexdigest()


def _map_tree(document: Document, workspace_id: str, subscription_id: str) -> Mapped:
    columns, extra, notes = read_fields(document, WORKSPACE_FIELDS, handled=("folders",))
    tables: dict[str, list[Row]] = {table: [] for table in TREE_TABLES}
    seen: set[str] = set()
    place = {"subscription_id": subscription_id, "workspace_id": workspace_id}
    for folder_position, folder in enumerate(_children(document, "folders", extra)):
        folder_id = _node_id(folder, "folder_id", seen)
        folder_columns, folder_extra, found = read_fields(folder, FOLDER_FIELDS, handled=("jobs",))
        notes += found
        for job_position, job in enumerate(_children(folder, "jobs", folder_extra)):
            job_id = _node_id(job, "job_id", seen)
            job_columns, job_extra, found = read_fields(
                job, JOB_FIELDS, handled=(DEPENDENCY, "workflows")
            )
            notes += found
            dependencies, found = _dependencies(job, job_id, subscription_id, job_extra)
            notes += found
            tables["workflow_dependencies"] += dependencies
            for position, summary in enumerate(_children(job, "workflows", job_extra)):
                entry_columns, entry_extra, found = read_fields(summary, SUMMARY_FIELDS)
                notes += found
                tables["workflow_tree_entries"].append(
                    {"id": entry_key(job_id, position), **entry_columns, **place,
                     "job_id": job_id, "tree_position": position, "extra": entry_extra}
                )  # fmt: skip
            tables["jobs"].append(
                {"id": row_key("job", job_id), **job_columns, **place, "folder_id": folder_id,
                 "tree_position": job_position, "extra": job_extra}
            )  # fmt: skip
        tables["folders"].append(
            {"id": row_key("folder", folder_id), **folder_columns, **place,
             "tree_position": folder_position, "extra": folder_extra}
        )  # fmt: skip
    notes += rename_duplicates(tables["folders"], "folder_name", "folder_id", "workspace_id")
    notes += rename_duplicates(tables["jobs"], "job_name", "job_id", "folder_id")
    workspace = {"id": row_key("workspace", workspace_id), **columns, "extra": extra}
    workspace["tree_digest"] = tree_digest(tables)
    tables["workspaces"].append(workspace)
    return Mapped(tables, tuple(notes))


def map_workspace(document: Document, ctx: MappingContext) -> Mapped | Quarantined:
    workspace_id = document.get("workspace_id")
    if not isinstance(workspace_id, str) or not workspace_id.strip():
        return Quarantined("missing_id", f"workspace_id is {workspace_id!r}")
    subscription_id = document.get("subscription_id")
    if not isinstance(subscription_id, str) or not subscription_id.strip():
        return Quarantined("missing_subscription", f"subscription_id is {subscription_id!r}")
    try:
        mapped = _map_tree(document, workspace_id, subscription_id)
    except _Refused as refused:
        return Quarantined(refused.reason, refused.detail)
    for table, rows in mapped.rows.items():
        bad = contains_nul(rows)
        if bad is not None:
            return Quarantined("nul_character", f"{table}.{bad} holds a NUL character")
    return mapped


# --- rows -> document -------------------------------------------------------------------


def _order(row: Mapping[str, Any], column: str, id_column: str) -> tuple[bool, int, str]:
    position = row.get(column)
    return (position is None, position or 0, str(row.get(id_column)))


def _grouped(rows: Sequence[Row], by: str, position: str, id_column: str) -> dict[Any, list[Row]]:
    groups: dict[Any, list[Row]] = {}
    for row in sorted(rows, key=lambda r: _order(r, position, id_column)):
        groups.setdefault(row.get(by), []).append(row)
    return groups


def _node(row: Row, fields: Any, below: dict[str, Callable[[dict[str, Any]], Any]]) -> Document:
    extra = json_value(row.get("extra")) or {}
    node = write_fields(row, fields, extra)
    kept = extra.get(UNREADABLE, {})
    for key, build in below.items():
        node[key] = from_json(kept[key]) if key in kept else build(extra)
    return node


def workspace_document(rows: Mapping[str, Sequence[Row]], ctx: MappingContext) -> Document:
    workspace = rows["workspaces"][0]
    folders = _grouped(rows.get("folders", ()), "workspace_id", "tree_position", "folder_id")
    jobs = _grouped(rows.get("jobs", ()), "folder_id", "tree_position", "job_id")
    entries = _grouped(
        rows.get("workflow_tree_entries", ()), "job_id", "tree_position", "workflow_id"
    )
    dependencies = _grouped(
        rows.get("workflow_dependencies", ()), "job_id", "position", "workflow_id"
    )

    def job_node(row: Row) -> Document:
        job_id = row["job_id"]
        return _node(row, JOB_FIELDS, {
            DEPENDENCY: lambda _e: [d["workflow_id"] for d in dependencies.get(job_id, [])],
            "workflows": lambda _e: [_node(e, SUMMARY_FIELDS, {}) for e in entries.get(job_id, [])],
        })  # fmt: skip

    def folder_node(row: Row) -> Document:
        return _node(row, FOLDER_FIELDS, {
            "jobs": lambda _e: [job_node(j) for j in jobs.get(row["folder_id"], [])],
        })  # fmt: skip

    workspace_id = workspace["workspace_id"]
    document = _node(workspace, WORKSPACE_FIELDS, {
        "folders": lambda _e: [folder_node(f) for f in folders.get(workspace_id, [])],
    })  # fmt: skip
    return document


# --- the normalized form ----------------------------------------------------------------


def _normalized_list(value: Any, normalize: Callable[[Document], Document]) -> Any:
    if not isinstance(value, list):
        return from_json(to_json(value))
    return [normalize(item) if isinstance(item, dict) else from_json(to_json(item))
            for item in value]  # fmt: skip


def _normalize_summary(summary: Document) -> Document:
    return normalize_fields(summary, SUMMARY_FIELDS)


def _normalize_job(job: Document) -> Document:
    normalized = normalize_fields(job, JOB_FIELDS, handled=(DEPENDENCY, "workflows"))
    normalized[DEPENDENCY] = from_json(to_json(job.get(DEPENDENCY)))
    normalized["workflows"] = _normalized_list(job.get("workflows"), _normalize_summary)
    return normalized


def _normalize_folder(folder: Document) -> Document:
    normalized = normalize_fields(folder, FOLDER_FIELDS, handled=("jobs",))
    normalized["jobs"] = _normalized_list(folder.get("jobs"), _normalize_job)
    return normalized


def normalize_workspace(document: Document) -> Document:
    normalized = normalize_fields(document, WORKSPACE_FIELDS, handled=("folders",))
    normalized["folders"] = _normalized_list(document.get("folders"), _normalize_folder)
    return normalized
