"""New-side handler modules, one per entity, each exposing ``register(registry, deps)``.

Add an entity by writing ``proxy/handlers/<entity>.py`` and naming it here; see
docs/proxy.md ("Adding new-side handlers").
"""

from __future__ import annotations

__all__ = ["HANDLER_MODULES"]

HANDLER_MODULES: tuple[str, ...] = (
    "proxy.handlers.connectors",
    "proxy.handlers.workspaces",
    "proxy.handlers.users",
    "proxy.handlers.groups",
    "proxy.handlers.roles",
    "proxy.handlers.job_runs",
    "proxy.handlers.activity",
)
