"""The legacy API's endpoints (LEGACY.md section 3), as the rules validator knows them.

This catalogue is what ``routing_rules.yaml`` is checked against: every endpoint must be
assigned to exactly one entity, with its class (read or write) as listed here. It is the
contract, not configuration, so it lives in code.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ENTITIES", "LEGACY_ENDPOINTS", "Kind", "is_websocket", "path_template_prefix"]

Kind = Literal["read", "write"]

# The entities that can be switched independently. The whole workspace tree (workspaces,
# folders, jobs, workflows with their versions and check-in/out) is ONE entity: its legacy
# storage is one document per workspace, so no part of it can change its source of truth
# without the others (see docs/proxy.md).
ENTITIES: tuple[str, ...] = (
    "connectors",
    "workspaces",
    "job_runs",
    "users",
    "groups",
    "roles",
    "activity",
)

# "METHOD /path" -> kind. WebSocket endpoints use the method "WS"; a "{name}" segment matches
# one path segment.
LEGACY_ENDPOINTS: dict[str, Kind] = {
    "GET /workspace/getAllWorkspace": "read",
    "GET /workspace/getWorkspace": "read",
    "POST /workspace/addWorkspace": "write",
    "POST /workspace/updateWorkspace": "write",
    "POST /workspace/deleteWorkspace": "write",
    "POST /workspace/addFolder": "write",
    "POST /workspace/updateFolder": "write",
    "POST /workspace/deleteFolder": "write",
    "POST /workspace/addJob": "write",
    "POST /workspace/updateJob": "write",
    "POST /workspace/deleteJob": "write",
    "GET /workflow/getWorkflow": "read",
    "GET /workflow/getWorkflows": "read",
    "POST /workflow/addWorkflow": "write",
    "POST /workflow/updateWorkflow": "write",
    "POST /workflow/deleteWorkflow": "write",
    "POST /workflow/checkOut": "write",
    "POST /workflow/checkIn": "write",
    "GET /workflow/getVersions": "read",
    "POST /workflow/runNow": "write",
    "GET /jobRun/getRuns": "read",
    "GET /jobRun/getRun": "read",
    "GET /connectors/getConnectors": "read",
    "GET /connectors/getConnector": "read",
    "POST /connectors/addConnector": "write",
    "POST /connectors/updateConnector": "write",
    "POST /connectors/deleteConnector": "write",
    "POST /connectors/testConnector": "write",
    "GET /users/getUsers": "read",
    "GET /users/getUser": "read",
    "POST /users/addUser": "write",
    "POST /users/updateUser": "write",
    "GET /groups/getGroups": "read",
    "POST /groups/addGroup": "write",
    "POST /groups/addUserToGroup": "write",
    "POST /groups/removeUserFromGroup": "write",
    "GET /roles/getRoles": "read",
    "POST /roles/addRole": "write",
    "POST /roles/assignRole": "write",
    "GET /userActivity/getActivity": "read",
    "WS /ws/runNow/{workflow_id}": "read",
    "WS /ws/activity": "read",
}


def is_websocket(endpoint: str) -> bool:
    return endpoint.startswith("WS ")


def path_template_prefix(path: str) -> str | None:
    """For ``/ws/runNow/{workflow_id}`` the fixed prefix ``/ws/runNow/``; None if no parameter."""
    brace = path.find("{")
    if brace < 0:
        return None
    if not path.endswith("}") or path.rfind("/") != brace - 1:
        raise ValueError(f"only a final '{{name}}' segment is supported, not {path!r}")
    return path[:brace]
