"""``getActivity``: the tenant's userActivity entries, newest first, filtered."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from legacy_emulator.http import Call, listed
from legacy_emulator.render import ACTIVITY, render, sort_key
from legacy_emulator.routes import Route
from legacy_emulator.routes.job_runs import created_within
from legacy_emulator.store import page_of

__all__ = ["ROUTES"]

_REVERSED_HEX = str.maketrans("0123456789abcdef", "fedcba9876543210")


def _newest_first(entry: dict[str, Any]) -> tuple[float, str]:
    """``created_at`` descending; entries have no id of their own, so within one
    millisecond the later insert (the greater ObjectId) comes first."""
    created, object_id = sort_key(entry, "_id")
    return (created, object_id.lower().translate(_REVERSED_HEX))


async def get_activity(call: Call) -> Response:
    query: dict[str, str] = {"subscription_id": call.caller.subscription_id}
    for name in ("UserId", "object_type", "object_id"):
        value = call.query_text(name)
        if value is not None:
            query[name] = value
    keep = created_within(call.query_moment("from"), call.query_moment("to"))
    entries, total = await page_of(
        call.emulator.activity,
        query,
        id_field="_id",
        page=call.page(),
        keep=keep,
        order=_newest_first,
    )
    items = [render(entry, ACTIVITY) for entry in entries]
    return listed("Activity fetched successfully", items, total)


ROUTES: list[Route] = [("GET", "/userActivity/getActivity", get_activity)]
