"""The admin and metrics application, served on its own port.

It is a different server from the proxy's, so a client of the proxy port can never reach
it: any path on the proxy port, ``/metrics`` and ``/admin/...`` included, goes to legacy.

    GET    /metrics                 Prometheus text format
    GET    /healthz                 200 while the process runs
    GET    /readyz                  200 once a routing table is in force, else 503
    GET    /admin/status            table in force, its hash, when it was loaded, last refusal
    POST   /admin/reload            reload the rules file now
    GET    /admin/fence/{entity}    seconds left on its fence, writes of it still in flight
    POST   /admin/fence/{entity}    fence the entity's writes; ?seconds=N (0 < N <= 600)
    DELETE /admin/fence/{entity}    lift this instance's fence
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.endpoints import ENTITIES
from proxy.fence import MAX_FENCE_SECONDS, FenceBoard
from proxy.metrics import ProxyMetrics
from proxy.reload import TableHolder

__all__ = ["build_admin_app"]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def status_document(tables: TableHolder, fences: FenceBoard, instance: str) -> dict[str, Any]:
    table = tables.current
    refusal = tables.last_refusal
    return {
        "instance": instance,
        "table_hash": table.table_hash,
        "file_sha256": table.file_sha256,
        "rules_path": table.path,
        "loaded_at": _iso(tables.loaded_at),
        "reloads_applied": tables.applied,
        "reloads_refused": tables.refused,
        # True while the file on disk is one that was refused after the table in force.
        "file_refused": refusal is not None and refusal.at >= tables.loaded_at,
        "last_refusal": None
        if refusal is None
        else {"at": _iso(refusal.at), "trigger": refusal.trigger, "error": refusal.error},
        "fence_retry_after": table.fence_retry_after,
        "entities": table.describe(),
        "admin_fences": fences.snapshot(),
    }


def build_admin_app(
    tables: TableHolder, fences: FenceBoard, metrics: ProxyMetrics, instance: str
) -> Starlette:
    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not tables.ready:
            return JSONResponse({"status": "no routing table yet"}, status_code=503)
        return JSONResponse({"status": "ready", "table_hash": tables.current.table_hash})

    async def status(request: Request) -> Response:
        return JSONResponse(status_document(tables, fences, instance))

    async def reload(request: Request) -> Response:
        applied = await tables.reload("admin")
        body = status_document(tables, fences, instance)
        body["applied"] = applied
        return JSONResponse(body, status_code=200 if not body["file_refused"] else 422)

    async def fence(request: Request) -> Response:
        entity = request.path_params["entity"]
        if entity not in ENTITIES:
            return JSONResponse(
                {"error": f"unknown entity {entity!r}; one of {', '.join(ENTITIES)}"},
                status_code=404,
            )
        if request.method == "GET":  # what a switch asks before it drains (proxy.fence)
            return JSONResponse({"entity": entity, "fenced_for": fences.remaining(entity),
                                 "writes_in_flight": fences.in_flight(entity)})  # fmt: skip
        if request.method == "DELETE":
            lifted = fences.lift(entity)
            return JSONResponse({"entity": entity, "lifted": lifted})
        raw = request.query_params.get("seconds", "")
        try:
            seconds = float(raw)
            fences.set(entity, seconds)
        except ValueError:
            return JSONResponse(
                {"error": f"seconds must be a number above 0 and at most {MAX_FENCE_SECONDS:g}"},
                status_code=400,
            )
        return JSONResponse(
            {"entity": entity, "fenced_for": seconds, "writes_in_flight": fences.in_flight(entity)}
        )

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/admin/status", status),
            Route("/admin/reload", reload, methods=["POST"]),
            Route("/admin/fence/{entity}", fence, methods=["GET", "POST", "DELETE"]),
        ]
    )
