"""The roles endpoints' new side (handlers in :mod:`proxy.handlers.access`)."""

from __future__ import annotations

from proxy.handlers._pg import endpoint
from proxy.handlers.access import MemberHandlers
from proxy.registry import HandlerDeps, HandlerRegistry

__all__ = ["ENTITY", "REQUIRES", "register"]

REQUIRES = frozenset({"postgres"})
ENTITY = "roles"


def register(registry: HandlerRegistry, deps: HandlerDeps) -> None:
    """Register every roles endpoint of LEGACY.md section 3."""
    roles = MemberHandlers(deps.pg_pool, ENTITY)
    secret, clock = deps.settings.jwt_secret, deps.clock
    for route, handler in (
        ("GET /roles/getRoles", roles.get_list),
        ("POST /roles/addRole", roles.add),
        ("POST /roles/assignRole", roles.add_member),
    ):
        registry.add(ENTITY, route, endpoint(secret, clock, handler))
