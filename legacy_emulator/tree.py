"""Finding things inside a workspace document's nested tree (pure functions).

The functions return the live nested dicts so that a handler can change them
in place and then save the whole workspace document back, as legacy does.
Dirty trees (a missing or ``null`` ``folders``/``jobs``/``workflows``, a
non-object entry) are read as if the bad parts were absent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from strangler.contract import is_deleted

__all__ = [
    "Placement",
    "children",
    "ensure_children",
    "find_child",
    "hidden_branches",
    "locate_workflow",
    "visible_names",
]

Node = dict[str, Any]


def children(node: Node, key: str) -> Iterator[Node]:
    items = node.get(key)
    if isinstance(items, list):
        yield from (item for item in items if isinstance(item, dict))


def ensure_children(node: Node, key: str) -> list[Any]:
    """The node's child list, created (replacing a dirty non-list) when missing."""
    items = node.get(key)
    if not isinstance(items, list):
        items = node[key] = []
    return items


def find_child(node: Node, key: str, id_field: str, wanted: str) -> Node | None:
    """The visible child with that id (a soft-deleted one counts as absent)."""
    for child in children(node, key):
        if child.get(id_field) == wanted and not is_deleted(child.get("d_flag")):
            return child
    return None


def visible_names(node: Node, key: str, name_field: str) -> set[str]:
    return {
        str(child.get(name_field))
        for child in children(node, key)
        if not is_deleted(child.get("d_flag"))
    }


@dataclass(frozen=True)
class Placement:
    """Where a workflow sits in a tree, and whether something above it is deleted."""

    folder: Node
    job: Node
    summary: Node

    @property
    def hidden(self) -> bool:
        return is_deleted(self.folder.get("d_flag")) or is_deleted(self.job.get("d_flag"))


def locate_workflow(workspace: Node, workflow_id: str) -> Placement | None:
    """The tree entry summarising ``workflow_id`` (deleted entries included)."""
    for folder in children(workspace, "folders"):
        for job in children(folder, "jobs"):
            for summary in children(job, "workflows"):
                if summary.get("workflow_id") == workflow_id:
                    return Placement(folder, job, summary)
    return None


def hidden_branches(workspace: Node) -> tuple[set[str], set[str]]:
    """Ids of the deleted folders, and of the jobs that are deleted or under a deleted folder.

    A workflow document naming one of them is hidden; one naming a folder or
    job the tree does not hold at all is not (the workflow document is
    authoritative, and the tree is known to drift from it).
    """
    folders: set[str] = set()
    jobs: set[str] = set()
    for folder in children(workspace, "folders"):
        folder_gone = is_deleted(folder.get("d_flag"))
        if folder_gone:
            folders.add(str(folder.get("folder_id")))
        for job in children(folder, "jobs"):
            if folder_gone or is_deleted(job.get("d_flag")):
                jobs.add(str(job.get("job_id")))
    return folders, jobs
