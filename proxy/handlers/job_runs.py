"""The job_runs endpoints' new side (handlers in :mod:`proxy.handlers.history`).

``POST /workflow/runNow`` has no new side yet: job_runs can be shadowed and
canaried (reads), not put in ``new``.
"""

from __future__ import annotations

from proxy.handlers._pg import endpoint
from proxy.handlers.history import RunHandlers
from proxy.registry import HandlerDeps, HandlerRegistry

__all__ = ["ENTITY", "REQUIRES", "register"]

REQUIRES = frozenset({"postgres"})
ENTITY = "job_runs"


def register(registry: HandlerRegistry, deps: HandlerDeps) -> None:
    """Register the job_runs read endpoints of LEGACY.md section 3."""
    runs = RunHandlers(deps.pg_pool)
    secret, clock = deps.settings.jwt_secret, deps.clock
    for route, handler in (
        ("GET /jobRun/getRuns", runs.get_runs),
        ("GET /jobRun/getRun", runs.get_run),
    ):
        registry.add(ENTITY, route, endpoint(secret, clock, handler))
