"""Which endpoints each entity owns: what the coverage table checks traffic against.

The flag table (``routing_rules.yaml``) is the authority when it lists endpoints per
entity; this catalogue (LEGACY.md section 3, kept in step with ``proxy/endpoints.py``)
is used when it does not. WebSocket endpoints are not compared and are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ENTITIES", "ENTITY_ENDPOINTS", "endpoint_entity", "is_read", "load_entity_endpoints"]

ENTITIES: tuple[str, ...] = (
    "connectors",
    "workspaces",
    "job_runs",
    "users",
    "groups",
    "roles",
    "activity",
)

ENTITY_ENDPOINTS: Mapping[str, tuple[str, ...]] = {
    "connectors": (
        "GET /connectors/getConnectors",
        "GET /connectors/getConnector",
        "POST /connectors/addConnector",
        "POST /connectors/updateConnector",
        "POST /connectors/deleteConnector",
        "POST /connectors/testConnector",
    ),
    # The whole workspace tree is one entity: one legacy document holds it all.
    "workspaces": (
        "GET /workspace/getAllWorkspace",
        "GET /workspace/getWorkspace",
        "POST /workspace/addWorkspace",
        "POST /workspace/updateWorkspace",
        "POST /workspace/deleteWorkspace",
        "POST /workspace/addFolder",
        "POST /workspace/updateFolder",
        "POST /workspace/deleteFolder",
        "POST /workspace/addJob",
        "POST /workspace/updateJob",
        "POST /workspace/deleteJob",
        "GET /workflow/getWorkflow",
        "GET /workflow/getWorkflows",
        "POST /workflow/addWorkflow",
        "POST /workflow/updateWorkflow",
        "POST /workflow/deleteWorkflow",
        "POST /workflow/checkOut",
        "POST /workflow/checkIn",
        "GET /workflow/getVersions",
    ),
    "job_runs": (
        "POST /workflow/runNow",
        "GET /jobRun/getRuns",
        "GET /jobRun/getRun",
    ),
    "users": (
        "GET /users/getUsers",
        "GET /users/getUser",
        "POST /users/addUser",
        "POST /users/updateUser",
    ),
    "groups": (
        "GET /groups/getGroups",
        "POST /groups/addGroup",
        "POST /groups/addUserToGroup",
        "POST /groups/removeUserFromGroup",
    ),
    "roles": (
        "GET /roles/getRoles",
        "POST /roles/addRole",
        "POST /roles/assignRole",
    ),
    "activity": ("GET /userActivity/getActivity",),
}


def is_read(endpoint: str) -> bool:
    """Reads may be repeated (re-read for noise and lag); writes never are."""
    return endpoint.startswith("GET ")


def endpoint_entity(
    endpoint: str, catalogue: Mapping[str, tuple[str, ...]] = ENTITY_ENDPOINTS
) -> str | None:
    for entity, endpoints in catalogue.items():
        if endpoint in endpoints:
            return entity
    return None


def _endpoints_from_flag_table(data: Any) -> dict[str, tuple[str, ...]]:
    """Endpoints per entity from the flag table, when it lists them.

    Reads ``entities: {name: {read: [...], write: [...]}}`` (the flag table's layout; an
    ``endpoints`` list or a list of entities carrying ``name`` is read too); anything else
    yields nothing, and the catalogue is used.
    """
    if not isinstance(data, dict):
        return {}
    entities = data.get("entities")
    items: list[tuple[str, Any]] = []
    if isinstance(entities, dict):
        items = [(str(name), spec) for name, spec in entities.items()]
    elif isinstance(entities, list):
        items = [(str(spec.get("name")), spec) for spec in entities if isinstance(spec, dict)]
    found: dict[str, tuple[str, ...]] = {}
    for name, spec in items:
        if not isinstance(spec, dict):
            continue
        listed: list[object] = []
        for key in ("endpoints", "read", "write"):
            value = spec.get(key)
            if isinstance(value, list):
                listed.extend(value)
        if listed and all(isinstance(e, str) for e in listed):
            found[name] = tuple(str(e) for e in listed if not str(e).startswith("WS "))
    return found


def load_entity_endpoints(flag_table: Path | None) -> dict[str, tuple[str, ...]]:
    """The catalogue, overridden per entity by what the flag table lists (if it exists)."""
    merged = dict(ENTITY_ENDPOINTS)
    if flag_table is not None and flag_table.is_file():
        try:
            data = yaml.safe_load(flag_table.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            # The proxy validates the flag table; coverage falls back to the catalogue.
            return merged
        merged.update(_endpoints_from_flag_table(data))
    return merged
