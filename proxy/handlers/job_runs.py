"""The job_runs endpoints' new side (handlers in :mod:`proxy.handlers.history`).

``runNow`` queues the run for the run worker (``strangler runs work``).
"""

from __future__ import annotations

from proxy.handlers._pg import endpoint
from proxy.handlers.history import RunHandlers
from proxy.registry import HandlerDeps, HandlerRegistry

__all__ = ["ENTITY", "REQUIRES", "register"]

REQUIRES = frozenset({"postgres"})
ENTITY = "job_runs"


def register(registry: HandlerRegistry, deps: HandlerDeps) -> None:
    """Register every job_runs endpoint of LEGACY.md section 3."""
    runs = RunHandlers(deps.pg_pool)
    secret, clock = deps.settings.jwt_secret, deps.clock
    for route, handler in (
        ("GET /jobRun/getRuns", runs.get_runs),
        ("GET /jobRun/getRun", runs.get_run),
        ("POST /workflow/runNow", runs.run_now),
    ):
        registry.add(ENTITY, route, endpoint(secret, clock, handler))
