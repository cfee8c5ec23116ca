"""The legacy emulator: a Starlette app serving LEGACY.md section 3 over a Mongo store.

    app = create_app(open_database("memory://legacy"), jwt_secret=settings.jwt_secret)

The store is used exactly as legacy uses MongoDB (no indexes are created);
the app's state is ``app.state.emulator`` (:class:`legacy_emulator.env.Emulator`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from legacy_emulator.env import Emulator, utc_now
from legacy_emulator.http import endpoint, error_response
from legacy_emulator.realtime import Hub
from legacy_emulator.routes import (
    RouteTable,
    activity,
    connectors,
    groups_roles,
    job_runs,
    tree_nodes,
    users,
    versions,
    workflows,
    workspaces,
)
from legacy_emulator.routes.realtime import activity_updates, run_updates
from legacy_emulator.runner import RunSimulator
from strangler.config import DEFAULT_PASSWORD_ROUNDS
from strangler.mongo import Database

__all__ = ["DEFAULT_PASSWORD_ROUNDS", "DEFAULT_RUN_STEP_SECONDS", "create_app"]

# Pause between a run's status changes: long enough to watch, short enough for a demo.
DEFAULT_RUN_STEP_SECONDS = 1.0

ENTITY_ROUTES: tuple[RouteTable, ...] = (
    workspaces.ROUTES,
    tree_nodes.ROUTES,
    workflows.ROUTES,
    versions.ROUTES,
    job_runs.ROUTES,
    connectors.ROUTES,
    users.ROUTES,
    groups_roles.ROUTES,
    activity.ROUTES,
)


def build_routes(tables: Iterable[RouteTable]) -> list[BaseRoute]:
    """Starlette routes of the tables; a path listed twice is a programming error."""
    seen: set[str] = set()
    routes: list[BaseRoute] = []
    for table in tables:
        for method, path, handler in table:
            if path in seen:
                raise ValueError(f"{path} is routed twice")
            seen.add(path)
            routes.append(Route(path, endpoint(handler), methods=[method]))
    routes.append(WebSocketRoute("/ws/runNow/{workflow_id}", run_updates))
    routes.append(WebSocketRoute("/ws/activity", activity_updates))
    return routes


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer in the legacy envelope too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = {404: "Not found", 405: "Method not allowed"}.get(status, "Request failed")
    return error_response(status, message)


def create_app(
    db: Database,
    *,
    jwt_secret: str,
    run_step_seconds: float = DEFAULT_RUN_STEP_SECONDS,
    password_rounds: int = DEFAULT_PASSWORD_ROUNDS,
    clock: Callable[[], datetime] = utc_now,
) -> Starlette:
    """The emulator over ``db``.

    ``clock`` gives every time the emulator writes (UTC, millisecond precision);
    replacing ``app.state.emulator.clock`` later changes it for runs too.
    """

    def now() -> datetime:
        return emulator.clock()

    hub = Hub()
    emulator = Emulator(
        db=db,
        jwt_secret=jwt_secret,
        hub=hub,
        runner=RunSimulator(db, hub, run_step_seconds, now),
        password_rounds=password_rounds,
        clock=clock,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await emulator.runner.aclose()

    app = Starlette(
        routes=build_routes(ENTITY_ROUTES),
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.emulator = emulator
    return app
