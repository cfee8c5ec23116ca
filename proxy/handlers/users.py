"""The users endpoints' new side (handlers in :mod:`proxy.handlers.access`)."""

from __future__ import annotations

from proxy.handlers._pg import endpoint
from proxy.handlers.access import UserHandlers
from proxy.registry import HandlerDeps, HandlerRegistry

__all__ = ["ENTITY", "REQUIRES", "register"]

REQUIRES = frozenset({"postgres"})
ENTITY = "users"


def register(registry: HandlerRegistry, deps: HandlerDeps) -> None:
    """Register every users endpoint of LEGACY.md section 3."""
    users = UserHandlers(deps.pg_pool, deps.settings.password_rounds)
    secret, clock = deps.settings.jwt_secret, deps.clock
    for route, handler in (
        ("GET /users/getUsers", users.get_users),
        ("GET /users/getUser", users.get_user),
        ("POST /users/addUser", users.add_user),
        ("POST /users/updateUser", users.update_user),
    ):
        registry.add(ENTITY, route, endpoint(secret, clock, handler))
