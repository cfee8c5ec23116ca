"""Where the tree and the workflow documents disagree: the report made after a tree apply.

The one part of the tree's spec that reads the database (the mappings stay pure): run
by the batch writer, inside the batch's transaction, for the workspace documents it
has just applied (``spec.extra[AFTER_APPLY]``, :mod:`migrators.tree_apply`). Workflow
documents are migrated before workspaces (registry order), so a first backfill sees
both sides. Every case is a note on the workspace document (docs/tree.md):

* ``dangling_dependency``: a job's ``workflow_dependency`` names no workflow document;
* ``tree_entry_without_workflow``: a summary entry whose workflow document does not exist;
* ``stale_summary``: an entry whose name, ``d_flag`` or diagram differs from its
  workflow document (the document wins for the definition);
* ``placement_differs``: the workflow document names another job, folder or
  workspace than the tree lists it under (the tree wins for the placement);
* ``workflow_not_in_tree``: a workflow document of this workspace that no tree lists;
* ``dangling_created_by``: a folder or job created by a user that does not exist (kept).
"""

from __future__ import annotations

import asyncpg

from migrators.spec import Note

__all__ = ["tree_disagreements"]

_DANGLING = """
SELECT j.workspace_id, d.job_id, d.workflow_id FROM workflow_dependencies AS d
JOIN jobs AS j ON j.job_id = d.job_id
WHERE j.workspace_id = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM workflows AS w WHERE w.workflow_id = d.workflow_id)
ORDER BY 1, 2, d.position"""

_ENTRIES = """
SELECT e.workspace_id, e.job_id, e.workflow_id, w.workflow_id IS NULL AS missing,
       e.workflow_name IS DISTINCT FROM
           coalesce(w.extra -> '$renamed' ->> 'workflow_name', w.workflow_name) AS name_differs,
       e.is_deleted IS DISTINCT FROM w.is_deleted AS flag_differs,
       e.summary_diagram IS DISTINCT FROM w.workflow_diagram_text AS diagram_differs,
       (w.job_id IS DISTINCT FROM e.job_id OR w.workspace_id IS DISTINCT FROM e.workspace_id
        OR w.folder_id IS DISTINCT FROM j.folder_id) AS placement_differs
FROM workflow_tree_entries AS e
JOIN jobs AS j ON j.job_id = e.job_id
LEFT JOIN workflows AS w ON w.workflow_id = e.workflow_id
WHERE e.workspace_id = ANY($1::text[])
ORDER BY 1, 2, e.tree_position"""

_CREATORS = """
SELECT workspace_id, 'folder ' || folder_id AS node, created_by FROM folders AS t
WHERE workspace_id = ANY($1::text[]) AND created_by IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM users AS u WHERE u.user_id = t.created_by)
UNION ALL
SELECT workspace_id, 'job ' || job_id, created_by FROM jobs AS t
WHERE workspace_id = ANY($1::text[]) AND created_by IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM users AS u WHERE u.user_id = t.created_by)
ORDER BY 1, 2"""

_UNLISTED = """
SELECT w.workspace_id, w.workflow_id FROM workflows AS w
WHERE w.workspace_id = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM workflow_tree_entries AS e WHERE e.workflow_id = w.workflow_id)
ORDER BY 1, 2"""


async def tree_disagreements(
    conn: asyncpg.Connection, workspace_ids: list[str]
) -> list[tuple[str, Note]]:
    notes: list[tuple[str, Note]] = []
    for r in await conn.fetch(_DANGLING, workspace_ids):
        detail = f"job {r['job_id']} depends on {r['workflow_id']}, which no document has; kept"
        notes.append((r["workspace_id"], Note("dangling_dependency", detail)))
    for r in await conn.fetch(_ENTRIES, workspace_ids):
        where = f"job {r['job_id']} lists {r['workflow_id']}"
        if r["missing"]:
            detail = f"{where}, which no workflow document has; the entry is kept"
            notes.append((r["workspace_id"], Note("tree_entry_without_workflow", detail)))
            continue
        differing = [
            label
            for label, column in (
                ("workflow_name", "name_differs"),
                ("d_flag", "flag_differs"),
                ("workFlowDiagram", "diagram_differs"),
            )
            if r[column]
        ]
        if differing:
            detail = f"{where} with {', '.join(differing)} unlike its document (document wins)"
            notes.append((r["workspace_id"], Note("stale_summary", detail)))
        if r["placement_differs"]:
            detail = f"{where}; its document names another place (the tree wins)"
            notes.append((r["workspace_id"], Note("placement_differs", detail)))
    for r in await conn.fetch(_CREATORS, workspace_ids):
        detail = f"{r['node']} created_by {r['created_by']!r} matches no users row; kept"
        notes.append((r["workspace_id"], Note("dangling_created_by", detail)))
    for r in await conn.fetch(_UNLISTED, workspace_ids):
        detail = f"workflow {r['workflow_id']} is in no tree; kept with its own placement"
        notes.append((r["workspace_id"], Note("workflow_not_in_tree", detail)))
    return notes
