"""Connectors: connection details with the password stored in plain text (a legacy flaw).

Responses and activity entries carry the password masked. An update whose
``connection_detail`` omits the password, or sends back the mask, keeps the
stored one, so that a client can round-trip what it was given.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from legacy_emulator.http import ApiError, Call, created, listed, ok
from legacy_emulator.render import MASKED_PASSWORD, render_connector
from legacy_emulator.routes import Route
from legacy_emulator.store import find_visible, name_taken, page_of, record_activity
from strangler.contract import new_id, render_datetime

__all__ = ["ROUTES", "connection_outcome"]

DUPLICATE = "Connector name already exists"
Document = dict[str, Any]


def connection_outcome(connector_type: Any, detail: Any) -> str:
    """What ``testConnector`` reports: it "connects" when the detail names where to go."""
    if not isinstance(detail, dict):
        return "failed"
    where = detail.get("bucket") if connector_type == "s3" else detail.get("host")
    return "success" if isinstance(where, str) and where.strip() else "failed"


async def _load(call: Call, connector_id: str) -> Document:
    return await find_visible(
        call.emulator.connectors,
        "connector_id",
        connector_id,
        call.caller.subscription_id,
        "Connector",
    )


async def _check_name(call: Call, name: str, except_id: str | None = None) -> None:
    query = {"subscription_id": call.caller.subscription_id, "connector_name": name}
    if await name_taken(
        call.emulator.connectors, query, id_field="connector_id", except_id=except_id
    ):
        raise ApiError(409, DUPLICATE)


def _detail(call: Call, required: bool) -> dict[str, Any] | None:
    detail = call.optional_object("connection_detail")
    if detail is None and required:
        raise ApiError(400, "connection_detail is required")
    return detail


async def get_connectors(call: Call) -> Response:
    query: Document = {"subscription_id": call.caller.subscription_id}
    connector_type = call.query_text("connector_type")
    if connector_type is not None:
        query["connector_type"] = connector_type
    connectors, total = await page_of(
        call.emulator.connectors, query, id_field="connector_id", page=call.page()
    )
    items = [render_connector(connector) for connector in connectors]
    return listed("Connectors fetched successfully", items, total)


async def get_connector(call: Call) -> Response:
    connector = await _load(call, call.query_id("connector_id"))
    return ok("Connector fetched successfully", render_connector(connector))


async def add_connector(call: Call) -> Response:
    name = call.text("connector_name")
    connector_type = call.text("connector_type")
    detail = _detail(call, required=True)
    description = call.optional_text("description")
    await _check_name(call, name)
    now = call.emulator.clock()
    connector: Document = {
        "connector_id": new_id("connector"),
        "subscription_id": call.caller.subscription_id,
        "connector_name": name,
        "connector_type": connector_type,
        "description": description,
        "connection_detail": detail,
        "is_active": True,
        "test_status": "untested",
        "last_tested_at": None,
        "created_by": call.caller.user_id,
        "created_at": now,
        "updated_at": now,
        "d_flag": False,
    }
    await call.emulator.connectors.insert_one(connector)
    rendered = render_connector(connector)
    await record_activity(
        call, "created", "connector", connector["connector_id"], name, current=rendered
    )
    return created("Connector added successfully", rendered)


async def update_connector(call: Call) -> Response:
    connector = await _load(call, call.text("connector_id"))
    previous = render_connector(connector)
    changes: Document = {}
    if call.given("connector_name"):
        name = call.text("connector_name")
        await _check_name(call, name, except_id=connector["connector_id"])
        changes["connector_name"] = name
    if call.given("connector_type"):
        changes["connector_type"] = call.text("connector_type")
    if call.given("description"):
        changes["description"] = call.optional_text("description")
    if call.given("is_active"):
        changes["is_active"] = call.optional_flag("is_active")
    detail = _detail(call, required=False)
    if detail is not None:
        detail = dict(detail)
        stored = connector.get("connection_detail")
        if detail.get("password") in (None, MASKED_PASSWORD) and isinstance(stored, dict):
            if "password" in stored:
                detail["password"] = stored["password"]
            else:
                detail.pop("password", None)
        changes["connection_detail"] = detail
    changes["updated_at"] = call.emulator.clock()
    await call.emulator.connectors.update_one({"_id": connector["_id"]}, {"$set": changes})
    connector.update(changes)
    rendered = render_connector(connector)
    await record_activity(
        call,
        "updated",
        "connector",
        connector["connector_id"],
        connector.get("connector_name"),
        previous=previous,
        current=rendered,
    )
    return ok("Connector updated successfully", rendered)


async def delete_connector(call: Call) -> Response:
    connector = await _load(call, call.text("connector_id"))
    previous = render_connector(connector)
    await call.emulator.connectors.update_one(
        {"_id": connector["_id"]}, {"$set": {"d_flag": True, "updated_at": call.emulator.clock()}}
    )
    await record_activity(
        call,
        "deleted",
        "connector",
        connector["connector_id"],
        connector.get("connector_name"),
        previous=previous,
    )
    return ok("Connector deleted successfully", {"connector_id": connector["connector_id"]})


async def check_connector(call: Call) -> Response:
    connector = await _load(call, call.text("connector_id"))
    status = connection_outcome(connector.get("connector_type"), connector.get("connection_detail"))
    now = call.emulator.clock()
    await call.emulator.connectors.update_one(
        {"_id": connector["_id"]}, {"$set": {"test_status": status, "last_tested_at": now}}
    )
    result = {"test_status": status, "last_tested_at": render_datetime(now)}
    await record_activity(
        call,
        "executed",
        "connector",
        connector["connector_id"],
        connector.get("connector_name"),
        current=result,
    )
    return ok("Connector tested", result)


ROUTES: list[Route] = [
    ("GET", "/connectors/getConnectors", get_connectors),
    ("GET", "/connectors/getConnector", get_connector),
    ("POST", "/connectors/addConnector", add_connector),
    ("POST", "/connectors/updateConnector", update_connector),
    ("POST", "/connectors/deleteConnector", delete_connector),
    ("POST", "/connectors/testConnector", check_connector),
]
