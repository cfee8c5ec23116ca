"""The workspace tree's new side: every workspace, folder, job and workflow endpoint.

Legacy keeps the tree as one document per workspace (folders, jobs, workflow summaries)
beside the ``workflow`` documents; here it is rows (docs/tree_new_side.md). The whole tree
is one entity of the flag table (``workspaces``), so all of its endpoints change their
source of truth together. The handlers live in :mod:`proxy.handlers.tree_nodes`
(workspaces, folders, jobs) and :mod:`proxy.handlers.tree_workflows` (workflows, check-out,
check-in, versions); rows render through :mod:`proxy.handlers.tree_render`.
"""

from __future__ import annotations

from proxy.handlers._pg import endpoint
from proxy.handlers.tree_nodes import TreeNodeHandlers
from proxy.handlers.tree_workflows import WorkflowHandlers
from proxy.registry import HandlerDeps, HandlerRegistry

__all__ = ["ENTITY", "REQUIRES", "register"]

REQUIRES = frozenset({"postgres"})
ENTITY = "workspaces"


def register(registry: HandlerRegistry, deps: HandlerDeps) -> None:
    """Register every workspace, folder, job and workflow endpoint of LEGACY.md section 3."""
    nodes = TreeNodeHandlers(deps.pg_pool)
    workflows = WorkflowHandlers(deps.pg_pool)
    secret, clock = deps.settings.jwt_secret, deps.clock
    for route, handler in (
        ("GET /workspace/getAllWorkspace", nodes.get_all_workspaces),
        ("GET /workspace/getWorkspace", nodes.get_workspace),
        ("POST /workspace/addWorkspace", nodes.add_workspace),
        ("POST /workspace/updateWorkspace", nodes.update_workspace),
        ("POST /workspace/deleteWorkspace", nodes.delete_workspace),
        ("POST /workspace/addFolder", nodes.add_folder),
        ("POST /workspace/updateFolder", nodes.update_folder),
        ("POST /workspace/deleteFolder", nodes.delete_folder),
        ("POST /workspace/addJob", nodes.add_job),
        ("POST /workspace/updateJob", nodes.update_job),
        ("POST /workspace/deleteJob", nodes.delete_job),
        ("GET /workflow/getWorkflow", workflows.get_workflow),
        ("GET /workflow/getWorkflows", workflows.get_workflows),
        ("POST /workflow/addWorkflow", workflows.add_workflow),
        ("POST /workflow/updateWorkflow", workflows.update_workflow),
        ("POST /workflow/deleteWorkflow", workflows.delete_workflow),
        ("POST /workflow/checkOut", workflows.check_out),
        ("POST /workflow/checkIn", workflows.check_in),
        ("GET /workflow/getVersions", workflows.get_versions),
    ):
        registry.add(ENTITY, route, endpoint(secret, clock, handler))
