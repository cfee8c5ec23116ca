"""Two deliberately different backends on loopback for replay tests.

``legacy`` answers like the legacy API; ``new`` answers the same data with planted
differences: regressions, expected divergences (LEGACY.md section 4), a lagging read
and a legacy field that changes on every read (noise). Both check the bearer token.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from strangler.tokens import InvalidToken, caller_from_authorization

JWT_SECRET = "replay-test-secret-long-enough-for-hs256"
TENANT = "sub_00000000000a"
SANDBOX = "sub_00000000000b"
STORED_VERSION = 3  # the version of the sandbox workflow both sides store


def _connectors() -> dict[str, dict[str, Any]]:
    items = {}
    for n in range(1, 9):
        ident = f"cn_{n:012x}"
        items[ident] = {
            "connector_id": ident,
            "subscription_id": TENANT,
            "connector_name": f"warehouse-{n}",
            "connector_type": "s3" if n % 2 else "postgres",
            "description": f"connector {n}",
            "connection_detail": {"host": f"db{n}.internal", "port": 5432, "password": "********"},
            "is_active": True,
            "test_status": "success",
            "last_tested_at": None,
            "created_at": f"2024-01-0{n} 10:00:00",
        }
    return items


def cid(n: int) -> str:
    return f"cn_{n:012x}"


@dataclass
class Backend:
    name: str
    planted: bool  # True: the "new" side with its planted differences
    reads: int = 0
    lag_reads: int = 0

    def connector(self, ident: str) -> dict[str, Any] | None:
        item = _connectors().get(ident)
        if item is None:
            return None
        if self.name == "legacy" and ident == cid(1):
            # noise: legacy stamps each read, so the same read answers differently later
            self.reads += 1
            item["last_tested_at"] = f"2024-02-01 00:00:{self.reads % 60:02d}"
        if not self.planted:
            return item
        if ident == cid(2):
            del item["description"]  # regression: missing field
        elif ident == cid(3):
            item["connection_detail"]["port"] = "5432"  # regression: type
        elif ident == cid(4):
            item["created_at"] = "2024-01-04T10:00:00Z"  # regression: datetime format
        elif ident == cid(6):
            self.lag_reads += 1
            if self.lag_reads == 1:  # lag: the first read predates the sync of a rename
                item["connector_name"] = "warehouse-6-before-rename"
        return item

    async def get_connector(self, request: Request) -> JSONResponse:
        if (denied := self.check(request)) is not None:
            return denied
        ident = request.query_params.get("connector_id", "")
        if self.planted and ident == cid(5):
            return JSONResponse({"status": False, "message": "Internal error"}, 500)  # regression
        item = self.connector(ident)
        if item is None:
            return JSONResponse({"status": False, "message": "Connector not found"}, 404)
        return JSONResponse({"status": True, "message": "Connector fetched", "data": item})

    async def get_connectors(self, request: Request) -> JSONResponse:
        if (denied := self.check(request)) is not None:
            return denied
        kind = request.query_params.get("connector_type")
        items = [c for c in _connectors().values() if kind is None or c["connector_type"] == kind]
        items.sort(key=lambda c: c["created_at"], reverse=True)
        total = len(items)
        if not self.planted and kind is None:
            # expected: legacy's dirty created_at puts two items out of place, while the new
            # side keeps the contract's order (created_at descending, then id)
            items[0], items[1] = items[1], items[0]
        if self.planted and kind == "s3":
            total += 1  # regression: a wrong total
        return JSONResponse(
            {"status": True, "message": "Connectors fetched", "data": items, "total": total}
        )

    async def update_workflow(self, request: Request) -> JSONResponse:
        if (denied := self.check(request)) is not None:
            return denied
        body = await request.json()
        if self.planted and body.get("version", STORED_VERSION) < STORED_VERSION:
            return JSONResponse({"status": False, "message": "Workflow version is stale"}, 409)
        return JSONResponse(
            {
                "status": True,
                "message": "Workflow updated",
                "data": {
                    "workflow_id": body["workflow_id"],
                    "workflow_name": body["workflow_name"],
                    # legacy leaves the stored version as it was, whatever the request says
                    "version": STORED_VERSION,
                },
            }
        )

    def check(self, request: Request) -> JSONResponse | None:
        try:
            caller_from_authorization(JWT_SECRET, request.headers.get("authorization"))
        except InvalidToken:
            return JSONResponse({"status": False, "message": "Invalid token"}, 401)
        return None

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/connectors/getConnector", self.get_connector),
                Route("/connectors/getConnectors", self.get_connectors),
                Route("/workflow/updateWorkflow", self.update_workflow, methods=["POST"]),
            ]
        )


@dataclass(frozen=True)
class Backends:
    legacy_url: str
    new_url: str


@pytest.fixture
def two_backends() -> Iterator[Backends]:
    """Legacy and a deliberately different new side, each under uvicorn on a free port."""
    sockets, servers = [], []
    for backend in (Backend("legacy", planted=False), Backend("new", planted=True)):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        config = uvicorn.Config(
            backend.app(), lifespan="off", log_level="warning", ws="none", http="h11"
        )
        servers.append(uvicorn.Server(config))

    async def serve() -> None:
        await asyncio.gather(*(s.serve(sockets=[k]) for s, k in zip(servers, sockets, strict=True)))

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    while not all(s.started for s in servers):
        if not thread.is_alive():
            raise RuntimeError("the test backends did not start")
        threading.Event().wait(0.02)
    ports = [k.getsockname()[1] for k in sockets]
    try:
        yield Backends(f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}")
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(timeout=10)
        for sock in sockets:
            sock.close()
