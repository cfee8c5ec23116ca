"""The activity endpoints' new side (handlers in :mod:`proxy.handlers.history`).

Activity has no write endpoint: entries are written by the writes of every entity.
"""

from __future__ import annotations

from proxy.handlers._pg import endpoint
from proxy.handlers.history import ActivityHandlers
from proxy.registry import HandlerDeps, HandlerRegistry

__all__ = ["ENTITY", "REQUIRES", "register"]

REQUIRES = frozenset({"postgres"})
ENTITY = "activity"


def register(registry: HandlerRegistry, deps: HandlerDeps) -> None:
    """Register the activity read endpoints of LEGACY.md section 3."""
    activity = ActivityHandlers(deps.pg_pool)
    secret, clock = deps.settings.jwt_secret, deps.clock
    for route, handler in (("GET /userActivity/getActivity", activity.get_activity),):
        registry.add(ENTITY, route, endpoint(secret, clock, handler))
