"""The groups endpoints' new side (handlers in :mod:`proxy.handlers.access`)."""

from __future__ import annotations

from proxy.handlers._pg import endpoint
from proxy.handlers.access import MemberHandlers
from proxy.registry import HandlerDeps, HandlerRegistry

__all__ = ["ENTITY", "REQUIRES", "register"]

REQUIRES = frozenset({"postgres"})
ENTITY = "groups"


def register(registry: HandlerRegistry, deps: HandlerDeps) -> None:
    """Register every groups endpoint of LEGACY.md section 3."""
    groups = MemberHandlers(deps.pg_pool, ENTITY)
    secret, clock = deps.settings.jwt_secret, deps.clock
    for route, handler in (
        ("GET /groups/getGroups", groups.get_list),
        ("POST /groups/addGroup", groups.add),
        ("POST /groups/addUserToGroup", groups.add_member),
        ("POST /groups/removeUserFromGroup", groups.remove_member),
    ):
        registry.add(ENTITY, route, endpoint(secret, clock, handler))
